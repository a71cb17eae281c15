"""Multi-task batching: a scene sub-batch and an event sub-batch become one model input.

Each sub-batch is a dict with named tensors: `{"input_features": (B, n_mels, frames),
"scene_labels": (B,) or (B, S)}` for scenes and `{"input_features", "event_labels": (B, E)}` for
events. Rows of the other task are filled with `IGNORE_INDEX`, so the model counts each row only in
its own task's loss.
"""

from __future__ import annotations

import torch

from .losses import IGNORE_INDEX


def join_task_batches(
    asc: dict[str, torch.Tensor] | None,
    aet: dict[str, torch.Tensor] | None,
    num_scenes: int,
    num_events: int,
) -> dict[str, torch.Tensor]:
    """Concatenate the scene rows then the event rows into `input_features`, `scene_labels`, `event_labels`."""
    if asc is None and aet is None:
        raise ValueError("join_task_batches needs a scene or an event sub-batch")
    features, scene_labels, event_labels = [], [], []
    if asc is not None:
        rows = asc["input_features"].shape[0]
        features.append(asc["input_features"])
        scene_labels.append(asc["scene_labels"])
        event_labels.append(_ignored(rows, (num_events,), asc["input_features"].device))
    if aet is not None:
        rows = aet["input_features"].shape[0]
        features.append(aet["input_features"])
        scene_shape = () if asc is None or asc["scene_labels"].ndim == 1 else (num_scenes,)
        scene_labels.append(_ignored(rows, scene_shape, aet["input_features"].device, torch.long if not scene_shape else torch.float))
        event_labels.append(aet["event_labels"])
    scene = torch.cat([labels.to(scene_labels[0].dtype) for labels in scene_labels])
    event = torch.cat([labels.float() for labels in event_labels])
    batch = {"input_features": torch.cat(features), "scene_labels": scene, "event_labels": event}
    if asc is None:
        del batch["scene_labels"]
    if aet is None:
        del batch["event_labels"]
    return batch


def _ignored(rows: int, shape: tuple, device, dtype=torch.float) -> torch.Tensor:
    return torch.full((rows, *shape), IGNORE_INDEX, dtype=dtype, device=device)
