import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from sceneevent.metrics import load_metric, lwlrap, macro_accuracy


def lwlrap_by_definition(truth, scores):
    """Independent computation: loop over every positive (clip, class) pair."""
    precisions = []
    for clip_truth, clip_scores in zip(truth, scores):
        for cls in np.flatnonzero(clip_truth):
            rank_set = clip_scores >= clip_scores[cls]  # classes ranked at or above cls
            precisions.append(clip_truth[rank_set].sum() / rank_set.sum())
    return float(np.mean(precisions))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_macro_accuracy_matches_sklearn_balanced_accuracy(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 10, 300)
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, 10, 300))
    assert macro_accuracy(y_true, y_pred) == pytest.approx(balanced_accuracy_score(y_true, y_pred))


def test_macro_accuracy_weighs_classes_not_samples():
    # class 0: 9/9 right, class 1: 0/1 right → macro 0.5, plain accuracy 0.9
    assert macro_accuracy([0] * 9 + [1], [0] * 10) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_lwlrap_matches_definition(seed):
    rng = np.random.default_rng(seed)
    truth = (rng.random((50, 12)) < 0.2).astype(int)
    truth[truth.sum(1) == 0, 0] = 1
    scores = rng.random((50, 12))  # continuous: no ties
    assert lwlrap(truth, scores) == pytest.approx(lwlrap_by_definition(truth, scores))


def test_lwlrap_perfect_and_worst_rankings():
    truth = np.array([[1, 0, 0], [0, 1, 1]])
    assert lwlrap(truth, truth.astype(float)) == pytest.approx(1.0)
    # single positive ranked last of 3 → 1/3; pair ranked 2nd,3rd → (1/2 + 2/3)/2
    worst = lwlrap(truth, 1.0 - truth)
    assert worst == pytest.approx((1 / 3 + 1 / 2 + 2 / 3) / 3)


def test_bad_metric_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="length"):
        macro_accuracy([0, 1], [0])
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        lwlrap(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="positive"):
        lwlrap(np.zeros((2, 3)), np.ones((2, 3)))


def test_evaluate_modules_load_offline_and_agree_with_functions():
    rng = np.random.default_rng(5)
    truth = (rng.random((20, 6)) < 0.3).astype(int)
    truth[truth.sum(1) == 0, 1] = 1
    scores = rng.random((20, 6))
    metric = load_metric("lwlrap")
    metric.add_batch(predictions=scores[:10], references=truth[:10])
    metric.add_batch(predictions=scores[10:], references=truth[10:])
    assert metric.compute()["lwlrap"] == pytest.approx(lwlrap(truth, scores), rel=1e-6)

    y_true, y_pred = rng.integers(0, 4, 40), rng.integers(0, 4, 40)
    assert load_metric("macro_accuracy").compute(predictions=y_pred, references=y_true)["macro_accuracy"] == pytest.approx(
        macro_accuracy(y_true, y_pred)
    )
    with pytest.raises(ValueError, match="available"):
        load_metric("accuracy")
