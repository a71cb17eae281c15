"""Scene classification and event tagging with a saved sceneevent model, for recordings of any length.

The model loads through `transformers.pipeline("audio-classification")`, the same path users take
with the pipeline itself, so a run folder, a Hub id or an existing pipeline all work:

    model = load_pipeline("outputs/joint")
    tag_events(model, "street.wav", top_k=5)        # [{"label": event, "score": sigmoid score}, ...]
    classify_scene(model, "street.wav", top_k=3)    # [{"label": scene, "score": softmax probability}, ...]
    prediction = predict(model, "one_hour.flac")    # per window and aggregated

A recording longer than one clip is cut into clip-length windows every `hop_seconds` (default: one
clip, no overlap); the last window is zero-padded, as the feature extractor pads short clips. Per
window: softmax scene probabilities and sigmoid event scores. Over the recording: the mean of the
scene probabilities picks the scene; event scores are pooled by `max` by default (an event heard in
one window is present in the recording) or by `mean` (how much of the recording it fills).
"""

from __future__ import annotations

import csv
import glob
import io
import math
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.audio import AudioDecodeError, DecodedAudio, StreamingResampler, open_audio, read_blocks
from ..models.feature_extraction_sceneevent import downmix, resample
from ..models.modeling_sceneevent import WeightsMismatchError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
EVENT_POOLING = ("max", "mean")
# Files read this many frames at a time: a long recording is never held whole (~1 MB per channel).
READ_BLOCK_FRAMES = 2**18
# The spectrogram kept for plots (--plot) has at most about this many columns (~10 MB at 128 mel
# bins): longer recordings are averaged over groups of frames, so that it too stays bounded.
MAX_PLOT_FRAMES = 20_000


# ---------------------------------------------------------------------------------------------- loading


def load_pipeline(model: str | os.PathLike, *, device: str | int | None = None, trust_remote_code: bool | None = None,
                  revision: str | None = None, token: str | None = None):
    """`pipeline("audio-classification")` of a run folder or Hub id, checked to be a sceneevent model.

    With `sceneevent` imported the model classes are registered locally, so `trust_remote_code` is
    only needed for models whose code differs from the installed package.
    """
    from transformers import pipeline

    try:
        classifier = pipeline(
            "audio-classification",
            model=os.fspath(model),
            device=device,
            trust_remote_code=trust_remote_code,
            revision=revision,
            token=token,
        )
    except ValueError as error:
        raise _plain_load_error(error) from None
    return _check_sceneevent(classifier, str(model))


def _plain_load_error(error: ValueError) -> ValueError:
    """The model's own WeightsMismatchError, which `pipeline` buries in a page of tracebacks; else `error`."""
    lines = [line for line in str(error).splitlines() if "WeightsMismatchError: " in line]
    if not lines:
        return error
    return WeightsMismatchError(lines[-1].split("WeightsMismatchError: ", 1)[1])


def _resolve(model):
    """A pipeline from a pipeline, a run folder or a Hub id."""
    from transformers import Pipeline

    if isinstance(model, Pipeline):
        return _check_sceneevent(model, type(model.model).__name__)
    if isinstance(model, (str, os.PathLike)):
        return load_pipeline(model)
    raise TypeError(f"expected a run folder, a Hub id or an audio-classification pipeline, got {type(model).__name__}")


def _check_sceneevent(classifier, name: str):
    config = classifier.model.config
    if not getattr(config, "event_labels", None):
        raise ValueError(f"{name}: not a sceneevent model (its config has no `event_labels`)")
    if getattr(classifier.feature_extractor, "clip_seconds", None) is None:
        raise ValueError(f"{name}: its feature extractor has no `clip_seconds`; expected a LogMelFeatureExtractor")
    classifier.model.eval()
    return classifier


# ---------------------------------------------------------------------------------------------- windows


def window_starts(num_samples: int, window: int, hop: int) -> np.ndarray:
    """Start samples of the windows that cover `num_samples`: one window for a short recording."""
    if window <= 0 or hop <= 0:
        raise ValueError(f"window and hop must be positive, got window={window}, hop={hop}")
    if num_samples <= window:
        return np.zeros(1, dtype=np.int64)
    count = 1 + math.ceil((num_samples - window) / hop)
    return np.arange(count, dtype=np.int64) * hop


def cut_windows(waveform: torch.Tensor, window: int, hop: int) -> torch.Tensor:
    """(samples,) → (windows, window) clips every `hop` samples, the last one zero-padded."""
    starts = window_starts(waveform.numel(), window, hop)
    needed = int(starts[-1]) + window
    padded = torch.nn.functional.pad(waveform, (0, max(0, needed - waveform.numel())))
    return padded.unfold(0, window, hop)[: len(starts)]


def to_mono(waveform: np.ndarray | torch.Tensor, sampling_rate: int, target_rate: int) -> torch.Tensor:
    """A (samples,) or (channels, samples) array → mono float32 (samples,) at `target_rate` (bounded-memory resampling)."""
    return resample(downmix(waveform), int(sampling_rate), int(target_rate)).contiguous()


def stream_windows(blocks: Iterable[torch.Tensor], window: int, hop: int) -> Iterator[torch.Tensor]:
    """Clip-long windows every `hop` samples of a signal that arrives in (samples,) blocks.

    The same windows as `cut_windows` on the whole signal (the last ones zero-padded), holding only
    the samples that later windows still need.
    """
    buffer, buffer_start, next_start, total = torch.zeros(0), 0, 0, 0
    for block in blocks:
        buffer = torch.cat([buffer, block])
        total += block.numel()
        while next_start + window <= total:
            offset = next_start - buffer_start
            yield buffer[offset : offset + window]
            next_start += hop
        consumed = min(next_start, total) - buffer_start
        buffer, buffer_start = buffer[consumed:], buffer_start + consumed
    for start in window_starts(total, window, hop).tolist():
        if start >= next_start:  # the tail: windows that reach past the end
            offset = start - buffer_start
            tail = buffer[offset : offset + window]
            yield torch.nn.functional.pad(tail, (0, window - tail.numel()))


# ---------------------------------------------------------------------------------------------- predictions


@dataclass
class RecordingPrediction:
    """Scenes and events of one recording, per window and aggregated."""

    source: str
    sampling_rate: int  # of the input, before resampling
    channels: int
    duration_seconds: float
    window_seconds: float
    hop_seconds: float
    scene_labels: list[str]
    event_labels: list[str]
    scene_probs: np.ndarray  # (windows, num_scenes), softmax
    event_scores: np.ndarray  # (windows, num_events), sigmoid
    event_pooling: str = "max"
    log_mel: np.ndarray | None = field(default=None, repr=False)  # (num_mel_bins, frames) of the whole recording
    frames_per_second: float | None = None

    @property
    def num_windows(self) -> int:
        return self.scene_probs.shape[0]

    @property
    def window_times(self) -> list[tuple[float, float]]:
        """(start, end) of each window in seconds; the last may end after the recording (padding)."""
        return [(i * self.hop_seconds, i * self.hop_seconds + self.window_seconds) for i in range(self.num_windows)]

    @property
    def scene_probabilities(self) -> np.ndarray:
        """(num_scenes,) mean of the window probabilities (still sums to 1)."""
        return self.scene_probs.mean(axis=0)

    @property
    def event_probabilities(self) -> np.ndarray:
        """(num_events,) window scores pooled by `event_pooling`."""
        return self.event_scores.max(axis=0) if self.event_pooling == "max" else self.event_scores.mean(axis=0)

    @property
    def scene(self) -> str:
        return self.scene_labels[int(self.scene_probabilities.argmax())]

    def top_scenes(self, top_k: int = 5, window: int | None = None) -> list[dict]:
        scores = self.scene_probabilities if window is None else self.scene_probs[window]
        return _top(scores, self.scene_labels, top_k)

    def top_events(self, top_k: int = 5, window: int | None = None) -> list[dict]:
        scores = self.event_probabilities if window is None else self.event_scores[window]
        return _top(scores, self.event_labels, top_k)

    def rows(self) -> list[tuple[str, float, float, int | None]]:
        """`(name, start s, end s, window index)` per window, then `("all", 0, duration, None)` for the aggregate."""
        windows = [(str(index), start, end, index) for index, (start, end) in enumerate(self.window_times)]
        return windows + [("all", 0.0, self.duration_seconds, None)]

    def to_dict(self, top_k: int = 5) -> dict:
        """Plain-JSON view: settings, the aggregate and every window."""
        return {
            "source": self.source,
            "sampling_rate": self.sampling_rate,
            "channels": self.channels,
            "duration_seconds": round(self.duration_seconds, 4),
            "window_seconds": self.window_seconds,
            "hop_seconds": self.hop_seconds,
            "event_pooling": self.event_pooling,
            "num_windows": self.num_windows,
            "aggregate": {"scene": self.scene, "scenes": self.top_scenes(top_k), "events": self.top_events(top_k)},
            "windows": [
                {
                    "index": index,
                    "start": round(start, 4),
                    "end": round(end, 4),
                    "scene": self.top_scenes(1, index)[0]["label"],
                    "scenes": self.top_scenes(top_k, index),
                    "events": self.top_events(top_k, index),
                }
                for index, (start, end) in enumerate(self.window_times)
            ],
        }


def _top(scores: np.ndarray, labels: list[str], top_k: int) -> list[dict]:
    order = np.argsort(-scores, kind="stable")[: max(0, min(top_k, len(labels)))]
    return [{"label": labels[i], "score": float(scores[i])} for i in order]


def predict(
    model,
    audio,
    *,
    sampling_rate: int | None = None,
    hop_seconds: float | None = None,
    event_pooling: str = "max",
    batch_size: int = 8,
    keep_log_mel: bool = False,
) -> RecordingPrediction:
    """Scene probabilities and event scores of one recording, per window and aggregated.

    A file is read, resampled and scored block by block, so memory does not grow with its length.

    Args:
        model: a pipeline from `load_pipeline`, a run folder or a Hub id (loaded on every call: load once
            with `load_pipeline` for many recordings).
        audio: a file path, a `DecodedAudio`, a `{"array" | "raw", "sampling_rate"}` dict, or a
            (samples,) / (channels, samples) array at `sampling_rate`.
        sampling_rate: rate of an array input; default: the model's.
        hop_seconds: window hop; default: one clip (no overlap).
        event_pooling: `max` or `mean` over windows for the aggregated event scores.
        batch_size: windows per forward pass.
        keep_log_mel: also keep the log-mel spectrogram of the whole recording (for plots; averaged
            over groups of frames for long recordings, see `MAX_PLOT_FRAMES`).

    Raises:
        AudioDecodeError: the file cannot be read (see `sceneevent.data.audio.load_audio`).
        NonFiniteScoresError: the model gave NaN or Inf scores (a broken model folder).
        ValueError: bad settings, or a sampling rate outside 1..384 kHz.
    """
    check_settings(hop_seconds=hop_seconds, event_pooling=event_pooling, batch_size=batch_size)
    classifier = _resolve(model)
    extractor, network = classifier.feature_extractor, classifier.model
    rate, window = extractor.sampling_rate, extractor.clip_samples
    hop = window if hop_seconds is None else int(round(hop_seconds * rate))
    if hop <= 0:
        raise ValueError(f"`hop_seconds` is shorter than one sample at {rate} Hz: {hop_seconds}")
    with _open_stream(audio, sampling_rate, rate) as stream:
        resampler = StreamingResampler(stream.sampling_rate, rate)
        mono = _resampled(stream.blocks, resampler)
        spectrogram = _SpectrogramTrack(extractor, stream.frames * rate / stream.sampling_rate) if keep_log_mel else None
        if spectrogram is not None:
            mono = spectrogram.tap(mono)
        scene_probs, event_scores = _score_windows(network, extractor, stream_windows(mono, window, hop), batch_size)
    _check_finite_scores(stream.source, scene_probs, event_scores)
    return RecordingPrediction(
        source=stream.source,
        sampling_rate=stream.sampling_rate,
        channels=stream.channels,
        duration_seconds=resampler.emitted / rate,
        window_seconds=window / rate,
        hop_seconds=hop / rate,
        scene_labels=network.config.scene_labels,
        event_labels=list(network.config.event_labels),
        scene_probs=scene_probs,
        event_scores=event_scores,
        event_pooling=event_pooling,
        log_mel=spectrogram.log_mel() if spectrogram is not None else None,
        frames_per_second=spectrogram.frames_per_second if spectrogram is not None else rate / extractor.hop_length,
    )


def tag_events(model, audio, sampling_rate: int | None = None, top_k: int = 5, event_pooling: str = "max") -> list[dict]:
    """The `top_k` events of a recording as `[{"label", "score"}]`, scores sigmoid (pooled over windows)."""
    return predict(model, audio, sampling_rate=sampling_rate, event_pooling=event_pooling).top_events(top_k)


def classify_scene(model, audio, sampling_rate: int | None = None, top_k: int = 5) -> list[dict]:
    """The `top_k` scenes of a recording as `[{"label", "score"}]`, softmax probabilities averaged over windows."""
    return predict(model, audio, sampling_rate=sampling_rate).top_scenes(top_k)


def check_settings(*, hop_seconds: float | None = None, event_pooling: str = "max", batch_size: int = 8) -> None:
    """ValueError naming the first bad setting; checked once, before any file is read."""
    if event_pooling not in EVENT_POOLING:
        raise ValueError(f"`event_pooling` must be one of {EVENT_POOLING}, got {event_pooling!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}")
    if hop_seconds is not None and not (isinstance(hop_seconds, (int, float)) and math.isfinite(hop_seconds) and hop_seconds > 0):
        raise ValueError(f"`hop_seconds` must be positive, got {hop_seconds}")


class NonFiniteScoresError(ValueError):
    """The model gave NaN or Inf scores: they are never reported as a result."""


# ---------------------------------------------------------------------------------------------- streaming


@dataclass
class _Stream:
    """One recording as mono (samples,) blocks at its own rate."""

    source: str
    sampling_rate: int
    channels: int
    frames: int  # expected length in samples (from the header for files), for sizing the plot
    blocks: Iterator[torch.Tensor]


@contextmanager
def _open_stream(audio, sampling_rate: int | None, default_rate: int) -> Iterator[_Stream]:
    """A file is read block by block; audio already in memory is cut into blocks of the same size."""
    if isinstance(audio, (str, os.PathLike)):
        with open_audio(audio) as (handle, name):
            blocks = (_downmix_block(block) for block in read_blocks(handle, name, READ_BLOCK_FRAMES))
            yield _Stream(name, int(handle.samplerate), int(handle.channels), int(handle.frames), blocks)
        return
    decoded = _decode(audio, sampling_rate, default_rate)
    channels = 1 if decoded.waveform.ndim == 1 else int(min(decoded.waveform.shape))
    mono = downmix(decoded.waveform)
    yield _Stream(decoded.source, decoded.sampling_rate, channels, mono.numel(), iter(mono.split(READ_BLOCK_FRAMES)))


def _downmix_block(block: np.ndarray) -> torch.Tensor:
    """(channels, frames) → mono (frames,): the channel mean, as `downmix` takes it over a whole file."""
    return torch.from_numpy(np.ascontiguousarray(block)).mean(dim=0)


def _resampled(blocks: Iterable[torch.Tensor], resampler: StreamingResampler) -> Iterator[torch.Tensor]:
    for block in blocks:
        yield resampler.push(block)
    yield resampler.finish()


class _SpectrogramTrack:
    """The log-mel of a whole recording for plots, computed chunk by chunk as the samples pass.

    Each chunk's spectrogram is averaged over groups of `pooling` frames, chosen from the expected
    length so that at most ~MAX_PLOT_FRAMES columns are kept (a plot cannot show more anyway).
    """

    def __init__(self, extractor, expected_samples: float):
        self.extractor = extractor
        expected_frames = expected_samples / extractor.hop_length
        self.pooling = 1
        while expected_frames / self.pooling > MAX_PLOT_FRAMES:
            self.pooling *= 2
        group = self.pooling * extractor.hop_length  # samples per kept column
        self.chunk = max(1, extractor.clip_samples // group) * group
        self.pending, self.columns = torch.zeros(0), []

    @property
    def frames_per_second(self) -> float:
        return self.extractor.sampling_rate / self.extractor.hop_length / self.pooling

    def tap(self, blocks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Pass the blocks on unchanged, adding each complete chunk to the spectrogram."""
        for block in blocks:
            self.pending = torch.cat([self.pending, block])
            while self.pending.numel() >= self.chunk:
                # chunk / hop_length frames: the frame at the next chunk's first sample comes from that chunk.
                self._add(self._log_mel(self.pending[: self.chunk])[:, :-1])
                self.pending = self.pending[self.chunk :]
            yield block
        if self.pending.numel():
            self._add(self._log_mel(self.pending))
            self.pending = torch.zeros(0)

    def log_mel(self) -> np.ndarray:
        return torch.cat(self.columns, dim=1).numpy() if self.columns else np.zeros((self.extractor.num_mel_bins, 0), np.float32)

    def _log_mel(self, samples: torch.Tensor) -> torch.Tensor:
        return self.extractor.log_mel(samples[None])[0]

    def _add(self, frames: torch.Tensor) -> None:
        if self.pooling > 1:
            frames = torch.nn.functional.avg_pool1d(frames[None], self.pooling, ceil_mode=True)[0]
        self.columns.append(frames)


def _decode(audio, sampling_rate: int | None, default_rate: int) -> DecodedAudio:
    """Audio already in memory (a `DecodedAudio`, an array dict, an array or a tensor)."""
    if isinstance(audio, DecodedAudio):
        return audio
    if isinstance(audio, dict):
        array = audio.get("array", audio.get("raw"))
        if array is None or "sampling_rate" not in audio:
            raise ValueError('an audio dict needs "array" (or "raw") and "sampling_rate"')
        return DecodedAudio(np.asarray(array, dtype=np.float32), int(audio["sampling_rate"]), audio.get("path") or "<array>")
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    if isinstance(audio, np.ndarray):
        return DecodedAudio(audio.astype(np.float32, copy=False), int(sampling_rate or default_rate), "<array>")
    raise TypeError(f"cannot read audio from {type(audio).__name__}: pass a path, an array or a dict")


def _batched(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.inference_mode()
def _score_windows(network, extractor, windows: Iterable[torch.Tensor], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Clip-long (samples,) windows → (W, num_scenes) softmax and (W, num_events) sigmoid, in batches."""
    device = next(network.parameters()).device
    scenes, events = [], []
    for batch in _batched(windows, batch_size):
        features = extractor.log_mel(torch.stack(batch))  # already mono, at its rate, clip-long
        outputs = network(input_features=features.to(device))
        scenes.append(outputs.scene_logits.float().softmax(-1).cpu())
        events.append(outputs.event_logits.float().sigmoid().cpu())
    return torch.cat(scenes).numpy(), torch.cat(events).numpy()


def _check_finite_scores(source: str, scene_probs: np.ndarray, event_scores: np.ndarray) -> None:
    bad = ~(np.isfinite(scene_probs).all(axis=1) & np.isfinite(event_scores).all(axis=1))
    if bad.any():
        raise NonFiniteScoresError(
            f"{source}: the model gave NaN/Inf scores for {int(bad.sum())} of {bad.size} window(s); "
            "its weights are probably broken (check the model folder)"
        )


# ---------------------------------------------------------------------------------------------- files


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


# Audio formats that folders and patterns skip (listed, not read): name such a file itself to try it.
OTHER_AUDIO_SUFFIXES = (".mp3", ".m4a", ".aac", ".wma", ".opus", ".aif", ".aiff", ".caf", ".w64", ".mp4", ".webm")


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
    classifier = _resolve(model)
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


# ---------------------------------------------------------------------------------------------- output


def format_table(predictions: list[RecordingPrediction], failures: list[dict], top_k: int = 3) -> str:
    """A plain-text table: per file, one row per window and an `all` row with the aggregate."""
    lines = []
    header = f"{'window':>8}  {'time (s)':>15}  {'scene':<24} {'p':>5}  top events"
    for prediction in predictions:
        lines += [f"{prediction.source}  ({prediction.duration_seconds:.1f} s, {prediction.num_windows} windows, "
                  f"events pooled by {prediction.event_pooling})", header]
        for name, start, end, window in prediction.rows():
            scene = prediction.top_scenes(1, window)[0]
            events = ", ".join(f"{e['label']} {e['score']:.2f}" for e in prediction.top_events(top_k, window))
            span = f"{start:.1f}-{end:.1f}"
            lines.append(f"{name:>8}  {span:>15}  {scene['label'][:24]:<24} {scene['score']:>5.2f}  {events}")
        lines.append("")
    if failures:
        lines.append(f"{len(failures)} file(s) could not be processed:")
        lines += [f"  {failure['source']}: {failure['error']}" for failure in failures]
    return "\n".join(lines).rstrip() + "\n"


def to_json_dict(predictions: list[RecordingPrediction], failures: list[dict], top_k: int = 5, model: str | None = None) -> dict:
    return {
        "model": model,
        "files": [prediction.to_dict(top_k) for prediction in predictions],
        "failures": failures,
    }


CSV_COLUMNS = ["source", "window", "start", "end", "scene", "scene_score", "events", "error"]


def to_csv(predictions: list[RecordingPrediction], failures: list[dict], top_k: int = 5) -> str:
    """One row per window plus an `all` row per file; events as `label:score` joined by `;`; failures with `error`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for prediction in predictions:
        for name, start, end, window in prediction.rows():
            scene = prediction.top_scenes(1, window)[0]
            writer.writerow({
                "source": prediction.source, "window": name, "start": f"{start:.3f}", "end": f"{end:.3f}",
                "scene": scene["label"], "scene_score": f"{scene['score']:.6f}",
                "events": ";".join(f"{e['label']}:{e['score']:.6f}" for e in prediction.top_events(top_k, window)),
                "error": "",
            })
    for failure in failures:
        writer.writerow({"source": failure["source"], "error": failure["error"]})
    return buffer.getvalue()


def plot_prediction(prediction: RecordingPrediction, path: str | os.PathLike, top_k: int = 5) -> Path:
    """PNG with the log-mel spectrogram and the `top_k` event scores over time (needs `keep_log_mel=True`)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window, work without a display
    import matplotlib.pyplot as plt

    if prediction.log_mel is None:
        raise ValueError(f"{prediction.source}: no spectrogram kept; call predict(..., keep_log_mel=True)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=[3, 2], layout="constrained")
    image = top.imshow(prediction.log_mel, origin="lower", aspect="auto", cmap="magma",
                       extent=[0, prediction.log_mel.shape[1] / prediction.frames_per_second, 0, prediction.log_mel.shape[0]])
    top.set_title(f"{Path(prediction.source).name}: {prediction.scene} "
                  f"(p = {prediction.scene_probabilities.max():.2f})")
    top.set_ylabel("mel bin")
    # Scores as steps over each window's hop span: what the model said about that stretch of audio.
    edges = [start for start, _ in prediction.window_times] + [prediction.window_times[-1][1]]
    for event in prediction.top_events(top_k):
        column = prediction.event_labels.index(event["label"])
        scores = prediction.event_scores[:, column]
        bottom.step(edges, np.append(scores, scores[-1]), where="post", label=f"{event['label']} ({event['score']:.2f})")
    bottom.set_ylim(0, 1.02)
    bottom.set_xlim(0, max(prediction.duration_seconds, 1e-3))
    bottom.set_xlabel("time (s)")
    bottom.set_ylabel("event score (sigmoid)")
    bottom.set_title(f"top {top_k} events per window (aggregate: {prediction.event_pooling})")
    bottom.legend(loc="best", fontsize="small")
    # One colour bar for both panels keeps their time axes aligned.
    figure.colorbar(image, ax=[top, bottom], label="log mel power", pad=0.01)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
