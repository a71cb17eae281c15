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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .audio import AudioDecodeError, DecodedAudio, load_audio
from .feature_extraction_sceneevent import downmix

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
EVENT_POOLING = ("max", "mean")


# ---------------------------------------------------------------------------------------------- loading


def load_pipeline(model: str | os.PathLike, *, device: str | int | None = None, trust_remote_code: bool | None = None,
                  revision: str | None = None, token: str | None = None):
    """`pipeline("audio-classification")` of a run folder or Hub id, checked to be a sceneevent model.

    With `sceneevent` imported the model classes are registered locally, so `trust_remote_code` is
    only needed for models whose code differs from the installed package.
    """
    from transformers import pipeline

    classifier = pipeline(
        "audio-classification",
        model=os.fspath(model),
        device=device,
        trust_remote_code=trust_remote_code,
        revision=revision,
        token=token,
    )
    return _check_sceneevent(classifier, str(model))


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
    """A (samples,) or (channels, samples) array → mono float32 (samples,) at `target_rate`."""
    import torchaudio

    signal = downmix(waveform)
    if sampling_rate != target_rate:
        signal = torchaudio.functional.resample(signal, int(sampling_rate), int(target_rate))
    return signal.contiguous()


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

    Args:
        model: a pipeline from `load_pipeline`, a run folder or a Hub id (loaded on every call: load once
            with `load_pipeline` for many recordings).
        audio: a file path, a `DecodedAudio`, a `{"array" | "raw", "sampling_rate"}` dict, or a
            (samples,) / (channels, samples) array at `sampling_rate`.
        sampling_rate: rate of an array input; default: the model's.
        hop_seconds: window hop; default: one clip (no overlap).
        event_pooling: `max` or `mean` over windows for the aggregated event scores.
        batch_size: windows per forward pass.
        keep_log_mel: also keep the log-mel spectrogram of the whole recording (for plots).
    """
    if event_pooling not in EVENT_POOLING:
        raise ValueError(f"`event_pooling` must be one of {EVENT_POOLING}, got {event_pooling!r}")
    classifier = _resolve(model)
    extractor, network = classifier.feature_extractor, classifier.model
    decoded = _decode(audio, sampling_rate, extractor.sampling_rate)
    mono = to_mono(decoded.waveform, decoded.sampling_rate, extractor.sampling_rate)
    window = extractor.clip_samples
    hop = window if hop_seconds is None else int(round(hop_seconds * extractor.sampling_rate))
    if hop <= 0:
        raise ValueError(f"`hop_seconds` must be positive, got {hop_seconds}")
    windows = cut_windows(mono, window, hop)  # (W, clip_samples)
    scene_probs, event_scores = _score_windows(network, extractor, windows, batch_size)
    log_mel = extractor.log_mel(mono[None])[0].numpy() if keep_log_mel else None
    return RecordingPrediction(
        source=decoded.source,
        sampling_rate=decoded.sampling_rate,
        channels=1 if decoded.waveform.ndim == 1 else int(min(decoded.waveform.shape)),
        duration_seconds=mono.numel() / extractor.sampling_rate,
        window_seconds=window / extractor.sampling_rate,
        hop_seconds=hop / extractor.sampling_rate,
        scene_labels=network.config.scene_labels,
        event_labels=list(network.config.event_labels),
        scene_probs=scene_probs,
        event_scores=event_scores,
        event_pooling=event_pooling,
        log_mel=log_mel,
        frames_per_second=extractor.sampling_rate / extractor.hop_length,
    )


def tag_events(model, audio, sampling_rate: int | None = None, top_k: int = 5, event_pooling: str = "max") -> list[dict]:
    """The `top_k` events of a recording as `[{"label", "score"}]`, scores sigmoid (pooled over windows)."""
    return predict(model, audio, sampling_rate=sampling_rate, event_pooling=event_pooling).top_events(top_k)


def classify_scene(model, audio, sampling_rate: int | None = None, top_k: int = 5) -> list[dict]:
    """The `top_k` scenes of a recording as `[{"label", "score"}]`, softmax probabilities averaged over windows."""
    return predict(model, audio, sampling_rate=sampling_rate).top_scenes(top_k)


def _decode(audio, sampling_rate: int | None, default_rate: int) -> DecodedAudio:
    if isinstance(audio, DecodedAudio):
        return audio
    if isinstance(audio, (str, os.PathLike)):
        return load_audio(audio)
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


@torch.inference_mode()
def _score_windows(network, extractor, windows: torch.Tensor, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(W, samples) windows → (W, num_scenes) softmax and (W, num_events) sigmoid, in batches."""
    device = next(network.parameters()).device
    scenes, events = [], []
    for start in range(0, windows.shape[0], batch_size):
        features = extractor.log_mel(windows[start : start + batch_size])  # already mono, at its rate, clip-long
        outputs = network(input_features=features.to(device))
        scenes.append(outputs.scene_logits.float().softmax(-1).cpu())
        events.append(outputs.event_logits.float().sigmoid().cpu())
    return torch.cat(scenes).numpy(), torch.cat(events).numpy()


# ---------------------------------------------------------------------------------------------- files


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[dict]]:
    """Files, folders (recursive) and glob patterns → (audio files, `{"source", "error"}` for those not found).

    A file named explicitly is kept whatever its suffix; folders and globs yield WAV, FLAC and OGG files.
    """
    files: list[Path] = []
    missing: list[dict] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            found = [path]
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        else:
            found = sorted(Path(p) for p in glob.glob(item, recursive=True)
                           if os.path.isfile(p) and Path(p).suffix.lower() in AUDIO_SUFFIXES)
        if not found:
            missing.append({"source": item, "error": "no such file, or no WAV/FLAC/OGG file in that folder or pattern"})
        files.extend(found)
    unique = list(dict.fromkeys(files))  # keep order, drop repeats
    return unique, missing


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
