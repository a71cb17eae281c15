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

Reading and windowing a recording is `windows.py`; many files and their table, CSV, JSON and plots
(`scripts/predict.py`) are `files.py` and `formats.py`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.audio import AudioDecodeError, StreamingResampler
from ..models.modeling_sceneevent import WeightsMismatchError
from .windows import AudioStream, SpectrogramTrack, open_stream, resampled, stream_windows

EVENT_POOLING = ("max", "mean")


# ---------------------------------------------------------------------------------------------- loading


class RemoteCodeRefusedError(ValueError):
    """The model folder or Hub repository holds code that would have to run to load it, and it was not trusted."""

    def __init__(self, model: str, switch: str = "trust_remote_code=True"):
        self.model = model
        super().__init__(f"{model}: its model type is not one the installed sceneevent and transformers know, so loading "
                         f"it runs the Python code that comes with it; pass {switch} only if you trust that code")


def load_pipeline(model: str | os.PathLike, *, device: str | int | None = None, trust_remote_code: bool = False,
                  revision: str | None = None, token: str | None = None):
    """`pipeline("audio-classification")` of a run folder or Hub id, checked to be a sceneevent model.

    With `sceneevent` imported the model classes are registered locally, so `trust_remote_code` is
    only needed for models whose code differs from the installed package (another `model_type`);
    `trust_remote_code=True` runs that code, the Python files of the model folder or repository.

    Raises:
        RemoteCodeRefusedError: the model needs its own code and `trust_remote_code` is not True (never a prompt).
        WeightsMismatchError: the weights do not fit the model's config.
    """
    from transformers import pipeline

    try:
        classifier = pipeline(
            "audio-classification",
            model=os.fspath(model),
            device=device,
            trust_remote_code=bool(trust_remote_code),  # False, not None: transformers would prompt on a terminal
            revision=revision,
            token=token,
        )
    except ValueError as error:
        raise _plain_load_error(error, str(model)) from None
    return _check_sceneevent(classifier, str(model))


def _plain_load_error(error: ValueError, model: str) -> ValueError:
    """One line for what `pipeline` buries in a page of text or tracebacks: the model's own WeightsMismatchError,
    or the refusal to run a model's code; else `error`."""
    lines = [line for line in str(error).splitlines() if "WeightsMismatchError: " in line]
    if lines:
        return WeightsMismatchError(lines[-1].split("WeightsMismatchError: ", 1)[1])
    if "custom code" in str(error) and "trust_remote_code=True" in str(error):  # transformers' refusal, any wording
        return RemoteCodeRefusedError(model)
    return error


def as_pipeline(model):
    """A pipeline from a pipeline, a run folder or a Hub id (loaded)."""
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
            over groups of frames for long recordings, see `windows.MAX_PLOT_FRAMES`).

    Raises:
        AudioDecodeError: the file cannot be read (see `sceneevent.data.audio.load_audio`), or its samples
            (a file's or an array's) hold NaN or Inf.
        NonFiniteFeaturesError (an AudioDecodeError): finite samples so loud that their log-mel features are
            not finite (bad audio, named with its peak sample).
        NonFiniteScoresError: finite features, but the model gave NaN or Inf scores (a broken model folder).
        ValueError: bad settings, or a sampling rate outside 1..384 kHz.
    """
    check_settings(hop_seconds=hop_seconds, event_pooling=event_pooling, batch_size=batch_size)
    classifier = as_pipeline(model)
    extractor, network = classifier.feature_extractor, classifier.model
    rate, window = extractor.sampling_rate, extractor.clip_samples
    hop = window if hop_seconds is None else int(round(hop_seconds * rate))
    if hop <= 0:
        raise ValueError(f"`hop_seconds` is shorter than one sample at {rate} Hz: {hop_seconds}")
    with open_stream(audio, sampling_rate, rate) as stream:
        resampler = StreamingResampler(stream.sampling_rate, rate)
        mono = resampled(stream.blocks, resampler)
        spectrogram = SpectrogramTrack(extractor, stream.frames * rate / stream.sampling_rate) if keep_log_mel else None
        if spectrogram is not None:
            mono = spectrogram.tap(mono)
        scene_probs, event_scores = _score_windows(network, extractor, stream_windows(mono, window, hop), batch_size, stream)
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
    """The model gave NaN or Inf scores for finite features: they are never reported as a result."""


class NonFiniteFeaturesError(AudioDecodeError):
    """A recording whose samples are finite but whose log-mel features are not (samples far beyond ±1 overflow the
    power spectrum): bad audio, named like the feature store names it, never blamed on the model."""


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
def _score_windows(network, extractor, windows: Iterable[torch.Tensor], batch_size: int,
                   stream: AudioStream) -> tuple[np.ndarray, np.ndarray]:
    """Clip-long (samples,) windows of `stream` → (W, num_scenes) softmax and (W, num_events) sigmoid, in batches."""
    device = next(network.parameters()).device
    scenes, events = [], []
    for batch in _batched(windows, batch_size):
        features = extractor.log_mel(torch.stack(batch))  # already mono, at its rate, clip-long
        if not torch.isfinite(features).all():  # the audio's fault: checked before the model could be blamed
            raise NonFiniteFeaturesError(f"{stream.source}: gives non-finite log-mel features (peak sample {stream.peak:.3g}; "
                                         "audio is expected within about ±1)")
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
