"""The two task losses and their alpha-weighted sum.

Label conventions (shared by `loader.join_task_batches` and the model):
- scene labels are class indices `(B,)` or soft targets `(B, num_scenes)` (MixUp);
- event labels are multi-hot or mixed targets `(B, num_events)`;
- a row that carries no label for a task is filled with `IGNORE_INDEX` and does not count in that
  task's loss (the scene rows of a batch have no event labels and vice versa).

This file travels to the Hub with the model code: it may import only torch and the standard library.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def labelled_rows(labels: torch.Tensor) -> torch.Tensor:
    """Boolean mask `(B,)` of the rows that carry a label."""
    if labels.ndim == 1:
        return labels != IGNORE_INDEX
    return (labels != IGNORE_INDEX).all(dim=-1)


def scene_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the labelled rows; hard `(B,)` or soft `(B, S)` targets. 0 if none is labelled."""
    mask = labelled_rows(labels)
    # Multiply by the mask instead of indexing with it: no host sync, shapes stay static for compile.
    if labels.ndim == 1:
        per_row = F.cross_entropy(logits.float(), labels.clamp_min(0), reduction="none")
    else:
        targets = labels.float().clamp_min(0)
        per_row = -(targets * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1)
    weights = mask.to(per_row.dtype)
    return (per_row * weights).sum() / weights.sum().clamp_min(1.0)


def event_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy averaged over classes and labelled rows. 0 if none is labelled."""
    mask = labelled_rows(labels)
    targets = labels.float().clamp_min(0)
    per_row = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none").mean(dim=-1)
    weights = mask.to(per_row.dtype)
    return (per_row * weights).sum() / weights.sum().clamp_min(1.0)


def joint_loss(loss_asc: torch.Tensor | None, loss_aet: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """`alpha * L_AET + (1 - alpha) * L_ASC`; a task without labels in the batch contributes nothing."""
    if loss_asc is None and loss_aet is None:
        raise ValueError("joint_loss needs at least one task loss")
    if loss_aet is None:
        return (1.0 - alpha) * loss_asc
    if loss_asc is None:
        return alpha * loss_aet
    return alpha * loss_aet + (1.0 - alpha) * loss_asc
