"""Prediction on many files: the audio files that inputs name, and `predict` on each of them.

What `scripts/predict.py` runs; files that cannot be read are collected, never raised, so that one
broken file does not stop the others.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from ..data.audio import AudioDecodeError
from .pipeline import RecordingPrediction, as_pipeline, check_settings, predict

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
# Audio formats that folders and patterns skip (listed, not read): name such a file itself to try it.
OTHER_AUDIO_SUFFIXES = (".mp3", ".m4a", ".aac", ".wma", ".opus", ".aif", ".aiff", ".caf", ".w64", ".mp4", ".webm")


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[dict]]:
    """Files, folders (recursive) and glob patterns → (audio files, `{"source", "error"}` for what was not used).

    A file named explicitly is kept whatever its suffix; folders and globs yield WAV, FLAC and OGG files
    and list what they skip: other audio formats and dangling symbolic links. Neither follows a
    symbolic link to a folder while recursing (no loops), and a file reached twice (through links or
    two inputs) is kept once, by its real path.
    """
    files: list[Path] = []
    problems: list[dict] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            found = [path]
        else:
            candidates = sorted(path.rglob("*")) if path.is_dir() else _glob(item)  # rglob skips folder symlinks too
            found = _audio_files(candidates, problems)
        if not found:
            problems.append({"source": item, "error": "no such file, or no WAV/FLAC/OGG file in that folder or pattern"})
        files.extend(found)
    return _unique_files(files), problems


def _glob(pattern: str) -> list[Path]:
    """Paths matching a glob pattern; `**` does not descend into folder symlinks (pathlib's rule), so
    a link loop neither repeats files nor hangs, unlike `glob.glob(recursive=True)`."""
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    anchor, rest = Path(*parts[:fixed]) if fixed else Path("."), parts[fixed:]
    if not rest or not anchor.is_dir():
        return []
    matches = anchor.glob(str(Path(*rest)))
    if not any(part.startswith(".") for part in rest):  # like glob.glob: `*` does not match hidden names
        matches = (match for match in matches if not any(part.startswith(".") for part in match.relative_to(anchor).parts))
    return sorted(matches)


def _audio_files(candidates: list[Path], problems: list[dict]) -> list[Path]:
    """The WAV/FLAC/OGG files among `candidates`; other audio files and dangling links go to `problems`."""
    found = []
    for path in candidates:
        suffix = path.suffix.lower()
        if path.is_symlink() and not path.exists():
            problems.append({"source": str(path), "error": f"skipped: dangling symbolic link (to {os.readlink(path)})"})
        elif path.is_file() and suffix in AUDIO_SUFFIXES:
            found.append(path)
        elif path.is_file() and suffix in OTHER_AUDIO_SUFFIXES:
            problems.append({"source": str(path), "error": f"skipped: {suffix} is not read from folders or patterns "
                             "(WAV, FLAC, OGG only); name the file itself to try it"})
    return found


def _unique_files(files: list[Path]) -> list[Path]:
    """`files` in order, each real file once (symlinks and repeated inputs resolve to one)."""
    seen: set[str] = set()
    unique = []
    for path in files:
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            unique.append(path)
    return unique


def predict_files(
    model,
    files: list[Path],
    *,
    hop_seconds: float | None = None,
    event_pooling: str = "max",
    batch_size: int = 8,
    keep_log_mel: bool = False,
    progress: bool = True,
    on_prediction=None,
) -> tuple[list[RecordingPrediction], list[dict]]:
    """`predict` on every file; unreadable files are collected as `{"source", "error"}`, not raised.

    `on_prediction(prediction)`, if given, is called after each file (e.g. to write a plot and then
    drop the spectrogram instead of holding every one in memory).
    """
    from tqdm.auto import tqdm

    check_settings(hop_seconds=hop_seconds, event_pooling=event_pooling, batch_size=batch_size)  # not a per-file failure
    classifier = as_pipeline(model)
    predictions, failures = [], []
    for path in tqdm(files, desc="predict", unit="file", disable=not progress):
        try:
            prediction = predict(classifier, path, hop_seconds=hop_seconds, event_pooling=event_pooling,
                                 batch_size=batch_size, keep_log_mel=keep_log_mel)
        except (AudioDecodeError, ValueError, OSError) as error:
            failures.append({"source": str(path), "error": str(error)})
            continue
        if on_prediction is not None:
            on_prediction(prediction)
        predictions.append(prediction)
    return predictions, failures
