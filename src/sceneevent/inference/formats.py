"""Predictions of many files as a text table, CSV, JSON or PNG plots: what `scripts/predict.py` writes."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from ..markup import csv_cell
from .pipeline import RecordingPrediction


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
            writer.writerow({key: csv_cell(value) for key, value in {
                "source": prediction.source, "window": name, "start": f"{start:.3f}", "end": f"{end:.3f}",
                "scene": scene["label"], "scene_score": f"{scene['score']:.6f}",
                "events": ";".join(f"{e['label']}:{e['score']:.6f}" for e in prediction.top_events(top_k, window)),
                "error": "",
            }.items()})
    for failure in failures:
        writer.writerow({"source": csv_cell(failure["source"]), "error": csv_cell(failure["error"])})
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
    top.set_title(_plot_text(f"{Path(prediction.source).name}: {prediction.scene} "
                             f"(p = {prediction.scene_probabilities.max():.2f})"))
    top.set_ylabel("mel bin")
    # Scores as steps over each window's hop span: what the model said about that stretch of audio.
    edges = [start for start, _ in prediction.window_times] + [prediction.window_times[-1][1]]
    for event in prediction.top_events(top_k):
        column = prediction.event_labels.index(event["label"])
        scores = prediction.event_scores[:, column]
        bottom.step(edges, np.append(scores, scores[-1]), where="post", label=_plot_text(f"{event['label']} ({event['score']:.2f})"))
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


def _plot_text(text: str) -> str:
    """A file name or label for matplotlib, drawn as it is: a `$` would start mathtext (`$\\frac$` stops the plot)."""
    return text.replace("$", r"\$")
