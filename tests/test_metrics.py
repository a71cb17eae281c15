"""The metrics against independent references: sklearn's LRAP (weighted by positives per clip) and a
hand-written sed_eval-style class-wise average accuracy."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, label_ranking_average_precision_score

from sceneevent.metrics import load_metric, lwlrap, macro_accuracy


def lwlrap_by_sklearn(truth, scores) -> float:
    """The DCASE 2019 reference: LRAP weighted by positives per clip (clips without a positive drop out)."""
    truth = np.asarray(truth)
    keep = truth.sum(axis=1) > 0
    return label_ranking_average_precision_score(truth[keep], np.asarray(scores)[keep], sample_weight=truth[keep].sum(axis=1))


def class_wise_accuracy(y_true, y_pred, labels) -> float:
    """sed_eval's class-wise average: the mean over the label list of correct / references (0 without references)."""
    per_class = []
    for label in labels:
        references = [pred for true, pred in zip(y_true, y_pred) if true == label]
        per_class.append(sum(pred == label for pred in references) / len(references) if references else 0.0)
    return sum(per_class) / len(per_class)


def random_truth(rng, rows: int, classes: int) -> np.ndarray:
    truth = (rng.random((rows, classes)) < rng.uniform(0.05, 0.5)).astype(int)
    truth[rng.random(rows) < 0.1] = 0  # some clips without a positive: they must not count
    truth[0, rng.integers(classes)] = 1  # at least one positive overall
    return truth


def scores_with_ties(rng, rows: int, classes: int, case: int) -> np.ndarray:
    """Scores with many exact ties, near-ties, or the rounding of half-precision logits."""
    kind = case % 4
    if kind == 0:
        return rng.integers(0, 3, (rows, classes)) / 2.0  # three levels: ties everywhere
    if kind == 1:
        return np.round(rng.random((rows, classes)), 1)
    if kind == 2:
        base = rng.integers(0, 4, (rows, classes)).astype(float)
        return base + rng.choice([0.0, 1e-12, -1e-12], (rows, classes))  # near-ties float64 can tell apart
    dtype = torch.bfloat16 if case % 8 == 3 else torch.float16
    return torch.tensor(rng.normal(0, 3, (rows, classes))).to(dtype).double().numpy()


# --- lwlrap -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", range(120))
def test_lwlrap_equals_weighted_sklearn_lrap_with_ties(case):
    rng = np.random.default_rng(case)
    rows, classes = int(rng.integers(1, 40)), int(rng.integers(2, 30))
    truth = random_truth(rng, rows, classes)
    scores = scores_with_ties(rng, rows, classes, case)
    assert abs(lwlrap(truth, scores) - lwlrap_by_sklearn(truth, scores)) < 1e-12


def test_lwlrap_matches_sklearn_on_continuous_scores():
    rng = np.random.default_rng(7)
    truth = random_truth(rng, 500, 40)
    scores = rng.random((500, 40))
    assert abs(lwlrap(truth, scores) - lwlrap_by_sklearn(truth, scores)) < 1e-12


def test_a_tie_gives_the_positive_the_worst_rank():
    assert lwlrap([[1, 0]], [[0.5, 0.5]]) == 0.5
    assert lwlrap([[1, 0, 1]], [[0.5, 0.5, 0.5]]) == pytest.approx(2 / 3)


def test_lwlrap_perfect_and_worst_rankings():
    truth = np.array([[1, 0, 0], [0, 1, 1]])
    assert lwlrap(truth, truth.astype(float)) == 1.0
    # single positive ranked last of 3 → 1/3; the pair ties at the bottom, so both rank 3rd → 2/3 each
    worst = lwlrap(truth, 1.0 - truth)
    assert worst == pytest.approx((1 / 3 + 2 / 3 + 2 / 3) / 3)
    assert worst == pytest.approx(lwlrap_by_sklearn(truth, 1.0 - truth), abs=1e-12)


def test_lwlrap_accepts_bool_truth():
    truth = np.array([[True, False, True], [False, True, False]])
    scores = np.array([[0.2, 0.3, 0.1], [0.5, 0.5, 0.4]])
    assert lwlrap(truth, scores) == lwlrap(truth.astype(int), scores)


@pytest.mark.parametrize("truth", [[[0.3, 0.7]], [[1, 2]], [[-1, 1]]])
def test_lwlrap_refuses_non_binary_truth(truth):
    with pytest.raises(ValueError, match="binary"):
        lwlrap(truth, [[0.1, 0.2]])


def test_bad_metric_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="length"):
        macro_accuracy([0, 1], [0])
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        lwlrap(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="positive"):
        lwlrap(np.zeros((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        lwlrap([[1, 0]], [[np.nan, 0.0]])
    with pytest.raises(ValueError, match="outside labels"):
        macro_accuracy([0, 5], [0, 0], labels=[0, 1])


# --- macro accuracy -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_macro_accuracy_matches_sklearn_balanced_accuracy(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 10, 300)
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, 10, 300))
    assert macro_accuracy(y_true, y_pred) == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert macro_accuracy(y_true, y_pred, labels=range(10)) == pytest.approx(class_wise_accuracy(y_true, y_pred, range(10)))


def test_macro_accuracy_weighs_classes_not_samples():
    # class 0: 9/9 right, class 1: 0/1 right → macro 0.5, plain accuracy 0.9
    assert macro_accuracy([0] * 9 + [1], [0] * 10) == pytest.approx(0.5)


def test_a_class_without_references_scores_zero_and_is_named():
    y_true, y_pred = [0, 0, 1, 1], [0, 2, 1, 2]
    with pytest.warns(UserWarning, match=r"\[2\]"):
        found = macro_accuracy(y_true, y_pred, labels=[0, 1, 2])
    assert found == pytest.approx(1 / 3)
    assert found == pytest.approx(class_wise_accuracy(y_true, y_pred, [0, 1, 2]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # without labels, only present classes count: no warning
        assert macro_accuracy(y_true, y_pred) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(10))
def test_macro_accuracy_with_labels_matches_class_wise_reference(seed):
    rng = np.random.default_rng(seed)
    labels = list(range(8))
    y_true = rng.choice(labels[:5], 60)  # classes 5..7 absent
    y_pred = rng.integers(0, 10, 60)  # predictions 8, 9 lie outside the labels: wrong
    with pytest.warns(UserWarning, match="no reference sample"):
        found = macro_accuracy(y_true, y_pred, labels=labels)
    assert found == pytest.approx(class_wise_accuracy(y_true, y_pred, labels), abs=1e-15)


# --- the evaluate modules -----------------------------------------------------------------------------


def test_lwlrap_module_equals_the_function_exactly():
    rng = np.random.default_rng(5)
    truth = random_truth(rng, 20, 6)
    scores = scores_with_ties(rng, 20, 6, 2)  # near-ties 1e-12 apart
    metric = load_metric("lwlrap")
    metric.add_batch(predictions=scores[:10], references=truth[:10])
    metric.add_batch(predictions=scores[10:], references=truth[10:])
    assert metric.compute()["lwlrap"] == lwlrap(truth, scores)


def test_lwlrap_module_keeps_float64_scores():
    # float32 would tie these two scores and rank the positive second (0.5).
    scores = [[0.1, 0.1 + 1e-12]]
    assert lwlrap([[0, 1]], scores) == 1.0
    assert load_metric("lwlrap").compute(predictions=scores, references=[[0, 1]])["lwlrap"] == 1.0


def test_macro_accuracy_module_equals_the_function_and_takes_labels():
    rng = np.random.default_rng(6)
    y_true, y_pred = rng.integers(0, 4, 40), rng.integers(0, 4, 40)
    metric = load_metric("macro_accuracy")
    assert metric.compute(predictions=y_pred, references=y_true)["macro_accuracy"] == macro_accuracy(y_true, y_pred)
    with pytest.warns(UserWarning, match=r"\[4, 5\]"):
        found = metric.compute(predictions=y_pred, references=y_true, labels=list(range(6)))["macro_accuracy"]
    assert found == pytest.approx(class_wise_accuracy(y_true, y_pred, range(6)))


def test_unknown_metric_is_a_clear_error():
    with pytest.raises(ValueError, match="available"):
        load_metric("accuracy")


def test_the_warning_names_the_classes_and_the_split_and_the_score_is_the_same():
    """Issue 28.5: "classes [2]" did not say which class, nor in which split."""
    y_true, y_pred = [0, 0, 1, 1], [0, 2, 1, 2]
    names = ["bus", "park", "tram"]
    with pytest.warns(UserWarning, match=r"^macro_accuracy on the validation split: classes \['tram'\] \(indices \[2\]\) have no reference"):
        named = macro_accuracy(y_true, y_pred, labels=[0, 1, 2], label_names=names, split="validation")
    with pytest.warns(UserWarning, match=r"^macro_accuracy on the test split: classes \['tram'\] \(indices \[2\]\)"):
        module = load_metric("macro_accuracy").compute(predictions=y_pred, references=y_true, labels=[0, 1, 2],
                                                       label_names=names, split="test")["macro_accuracy"]
    with pytest.warns(UserWarning):
        plain = macro_accuracy(y_true, y_pred, labels=[0, 1, 2])
    assert named == module == plain == class_wise_accuracy(y_true, y_pred, [0, 1, 2])
