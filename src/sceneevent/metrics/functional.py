"""The two scores of the paper as plain functions on arrays."""

from __future__ import annotations

import numpy as np


def macro_accuracy(y_true, y_pred, num_classes: int | None = None) -> float:
    """Mean of the per-class accuracies (recalls) over the classes present in `y_true`.

    Args:
        y_true: `(N,)` true class indices.
        y_pred: `(N,)` predicted class indices.
        num_classes: unused classes beyond those in `y_true` are ignored either way; given for checks.
    """
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.shape[0]} vs {y_pred.shape[0]}")
    if y_true.size == 0:
        raise ValueError("macro_accuracy needs at least one sample")
    if num_classes is not None and (y_true.max() >= num_classes or y_true.min() < 0):
        raise ValueError(f"y_true holds classes outside 0..{num_classes - 1}")
    classes = np.unique(y_true)
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes]))


def lwlrap(y_true, y_score) -> float:
    """Label-weighted label-ranking average precision (DCASE 2019 Task 2).

    Every positive (clip, class) pair scores the precision of the clip's ranking at that class's rank;
    lwlrap is the mean over all positive pairs, so each class weighs by its number of positives.
    Clips without a positive label do not count.

    Args:
        y_true: `(N, C)` multi-hot truth.
        y_score: `(N, C)` scores (any monotone scale: logits or probabilities).
    """
    y_true = np.asarray(y_true) > 0.5
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.ndim != 2 or y_true.shape != y_score.shape:
        raise ValueError(f"y_true and y_score must both be (N, C), got {y_true.shape} and {y_score.shape}")
    if not y_true.any():
        raise ValueError("lwlrap needs at least one positive label")
    order = np.argsort(-y_score, axis=1, kind="stable")  # (N, C) classes by descending score
    hits = np.take_along_axis(y_true, order, axis=1)  # (N, C) truth in rank order
    ranks = np.arange(1, y_true.shape[1] + 1)
    precision_at_hit = np.cumsum(hits, axis=1) / ranks  # (N, C)
    return float(precision_at_hit[hits].mean())
