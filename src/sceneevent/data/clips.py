"""Long recordings cut into fixed clips, written as an audiofolder (`audiofolder.py`) whose `metadata.csv` names
each clip's source recording as its `identifier`, so that every split keeps a recording on one side.

Input: `<input_dir>/<scene>/<recording>` (any format soundfile reads: WAV, FLAC, OGG Vorbis, MP3). Output:
`<output_dir>/<scene>/<recording>_<start ms>.flac` (or .wav), at the recording's own rate and channels, and
`<output_dir>/metadata.csv` with `file_name, scene, identifier, start_seconds, duration_seconds`.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from ..io_utils import staged_folder
from .audio import AudioDecodeError, open_audio, read_blocks
from .audiofolder import AUDIO_EXTENSIONS, METADATA_FILE

FORMATS = {"flac": ("FLAC", "PCM_24"), "wav": ("WAV", "FLOAT")}  # lossless; WAV keeps float samples as they are


@dataclass
class CutSummary:
    clips: int = 0
    recordings: int = 0
    too_short: list[str] = field(default_factory=list)  # recordings shorter than the minimum clip, not cut


def clip_starts(frames: int, rate: int, clip_seconds: float, hop_seconds: float, min_seconds: float) -> list[tuple[int, int]]:
    """`(start, length)` in frames of every clip of a recording of `frames` frames: a clip every `hop_seconds`,
    `clip_seconds` long; the last one may be shorter, down to `min_seconds` (shorter tails are dropped)."""
    clip, hop, minimum = round(clip_seconds * rate), round(hop_seconds * rate), round(min_seconds * rate)
    starts = range(0, max(frames - minimum, -1) + 1, hop) if frames >= minimum else range(0)
    spans = [(start, min(clip, frames - start)) for start in starts]
    # a tail no longer than what the previous clip already holds adds nothing
    return [span for number, span in enumerate(spans) if number == 0 or span[0] + span[1] > spans[number - 1][0] + spans[number - 1][1]]


def cut_recordings(input_dir: str | os.PathLike, output_dir: str | os.PathLike, *, clip_seconds: float = 10.0,
                   hop_seconds: float | None = None, min_seconds: float | None = None, audio_format: str = "flac",
                   overwrite: bool = False) -> CutSummary:
    """Cut every recording under `input_dir/<scene>/` into clips in `output_dir` (see the module's docstring).

    `hop_seconds` defaults to `clip_seconds` (no overlap), `min_seconds` to `clip_seconds` (whole clips only).
    The folder is written aside and moved into place at the end: a failed cut leaves nothing half-written.
    """
    hop_seconds = clip_seconds if hop_seconds is None else hop_seconds
    min_seconds = clip_seconds if min_seconds is None else min_seconds
    if clip_seconds <= 0 or hop_seconds <= 0:
        raise ValueError(f"--clip_seconds and --hop_seconds must be positive, got {clip_seconds} and {hop_seconds}")
    if not 0 < min_seconds <= clip_seconds:
        raise ValueError(f"--min_seconds must be in (0, --clip_seconds={clip_seconds}], got {min_seconds}")
    if audio_format not in FORMATS:
        raise ValueError(f"--format must be one of {sorted(FORMATS)}, got {audio_format!r}")
    source, target = Path(input_dir), Path(output_dir)
    recordings = sorted(path for path in source.glob("*/*") if path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS)
    if not recordings:
        raise ValueError(f"{source}: expected recordings as <scene>/<file> ({', '.join(AUDIO_EXTENSIONS)}); found none")
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise ValueError(f"{target} exists and is not empty; pass --overwrite_output_dir to replace it")
    summary = CutSummary()
    container, subtype = FORMATS[audio_format]
    with staged_folder(target) as staging:
        rows = []
        for recording in tqdm(recordings, desc="cut", unit="recording"):
            scene, identifier = recording.parent.name, recording.relative_to(source).with_suffix("").as_posix()
            with open_audio(recording) as (handle, name):
                rate = handle.samplerate
                spans = clip_starts(handle.frames, rate, clip_seconds, hop_seconds, min_seconds)
                if not spans:
                    summary.too_short.append(f"{name} ({handle.frames / rate:.2f} s)")
                    continue
                summary.recordings += 1
                for start, length in spans:
                    handle.seek(start)
                    samples = _read_exactly(handle, name, length)
                    file_name = f"{scene}/{recording.stem}_{round(1000 * start / rate):08d}.{audio_format}"
                    (staging / scene).mkdir(exist_ok=True)
                    sf.write(staging / file_name, samples, rate, format=container, subtype=subtype)
                    rows.append({"file_name": file_name, "scene": scene, "identifier": identifier,
                                 "start_seconds": f"{start / rate:.3f}", "duration_seconds": f"{length / rate:.3f}"})
        if not rows:
            raise ValueError(f"{source}: every recording is shorter than --min_seconds {min_seconds}: no clip to write")
        with open(staging / METADATA_FILE, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        summary.clips = len(rows)
    return summary


def _read_exactly(handle: sf.SoundFile, name: str, frames: int) -> np.ndarray:
    """`(frames, channels)` float32 from the current position, checked like every decoded block."""
    samples = next(read_blocks(handle, name, frames)).T
    if len(samples) < frames:
        raise AudioDecodeError(f"{name}: ends {frames - len(samples)} frames before its header says (truncated?)")
    return samples
