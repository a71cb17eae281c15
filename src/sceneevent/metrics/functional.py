"""The two scores of the paper as plain functions on arrays, computed as the DCASE references do."""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np


def macro_accuracy(y_true, y_pred, labels: Sequence[int] | None = None, *, label_names: Sequence[str] | None = None,
                   split: str | None = None) -> float:
    """Mean of the per-class accuracies (recalls): sed_eval's class-wise average accuracy.

    Args:
        y_true: `(N,)` true class indices.
        y_pred: `(N,)` predicted class indices.
        labels: every class of the task. Each counts equally; a class absent from `y_true` scores 0 (as in
            sed_eval) and a warning names it. A prediction outside `labels` is simply wrong. Default: the
            classes present in `y_true`.
        label_names: the class names, indexed by class (`ClassLabel.names`), and `split` the evaluated split's
            name: the warning then names the classes and the split. They do not change the score.
    """
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.shape[0]} vs {y_pred.shape[0]}")
    if y_true.size == 0:
        raise ValueError("macro_accuracy needs at least one sample")
    classes = np.unique(y_true) if labels is None else np.asarray(list(labels))
    unknown = np.setdiff1d(y_true, classes)
    if unknown.size:
        raise ValueError(f"y_true holds classes outside labels: {unknown.tolist()}")
    absent = [c.item() for c in classes if not np.any(y_true == c)]
    if absent:
        where = f"macro_accuracy on the {split} split" if split else "macro_accuracy"
        named = f"{[label_names[c] for c in absent]} (indices {absent})" if label_names is not None else str(absent)
        warnings.warn(f"{where}: classes {named} have no reference sample; each scores 0 (sed_eval convention)", stacklevel=2)
    recalls = [np.mean(y_pred[y_true == c] == c) if np.any(y_true == c) else 0.0 for c in classes]
    return float(np.mean(recalls))


def lwlrap(y_true, y_score) -> float:
    """Label-weighted label-ranking average precision (DCASE 2019 Task 2).

    Every positive (clip, class) pair scores the fraction of positives among the classes ranked at or above
    it; lwlrap is the mean over all positive pairs. This equals sklearn's
    `label_ranking_average_precision_score` with `sample_weight` = positives per clip: tied scores get the
    worst rank (a positive tied with others counts all of them as above it), and clips without a positive
    do not count. Scores are compared in float64.

    Args:
        y_true: `(N, C)` multi-hot truth, 0/1 or bool.
        y_score: `(N, C)` scores (any monotone scale: logits or probabilities).
    """
    y_true = _binary_truth(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.ndim != 2 or y_true.shape != y_score.shape:
        raise ValueError(f"y_true and y_score must both be (N, C), got {y_true.shape} and {y_score.shape}")
    if np.isnan(y_score).any():
        raise ValueError("y_score holds NaN: such a score has no rank")
    if not y_true.any():
        raise ValueError("lwlrap needs at least one positive label")
    order = np.argsort(-y_score, axis=1, kind="stable")  # classes by descending score
    sorted_scores = np.take_along_axis(y_score, order, axis=1)
    hits = np.take_along_axis(y_true, order, axis=1)
    worst_position = _last_position_of_tie(sorted_scores)  # a tied class ranks after its whole tie group
    positives_above = np.take_along_axis(np.cumsum(hits, axis=1), worst_position, axis=1)
    precision = positives_above / (worst_position + 1)
    return float(precision[hits].sum() / hits.sum())


def _binary_truth(y_true) -> np.ndarray:
    """`y_true` as bool, refusing anything but 0/1: soft (mixed) targets have no ranking precision."""
    y_true = np.asarray(y_true)
    if y_true.dtype != bool:
        outside = y_true[(y_true != 0) & (y_true != 1)]
        if outside.size:
            raise ValueError(f"y_true must be binary (0/1 or bool); found {np.unique(outside)[:5].tolist()}")
    return y_true.astype(bool)


def _last_position_of_tie(sorted_scores: np.ndarray) -> np.ndarray:
    """For each position of rows sorted descending, the last position holding the same score."""
    width = sorted_scores.shape[1]
    ends_tie = np.ones(sorted_scores.shape, dtype=bool)
    ends_tie[:, :-1] = sorted_scores[:, :-1] != sorted_scores[:, 1:]
    end_positions = np.where(ends_tie, np.arange(width), width)
    # The nearest tie end at or after each position: a running minimum taken from the right.
    return np.minimum.accumulate(end_positions[:, ::-1], axis=1)[:, ::-1]
