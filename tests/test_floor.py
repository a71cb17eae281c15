"""The floor of a scene reading (training/floor.py) against scikit-learn's LogisticRegression on the same features."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import StandardScaler

from sceneevent.training.floor import FIXED_C, FLOOR_C_GRID, clip_statistics, fit_floor, fit_logistic

CLASSES, MELS, FRAMES = 5, 8, 40


def log_mels(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(count, MELS, FRAMES) log-mels whose per-mel level and spread depend weakly on the class, and the classes."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, count)
    level = np.random.default_rng(100).normal(size=(CLASSES, MELS, 1)) * 0.4
    spread = 1.0 + 0.3 * np.random.default_rng(101).random((CLASSES, MELS, 1))
    features = level[labels] + spread[labels] * rng.normal(size=(count, MELS, FRAMES))
    return features.astype(np.float16), labels


def test_clip_statistics_are_each_mel_bins_mean_then_standard_deviation_over_time():
    features = np.array([[[1.0, 3.0], [2.0, 2.0]], [[0.0, 4.0], [-1.0, 1.0]]], dtype=np.float16)  # (2, 2 mels, 2 frames)
    np.testing.assert_allclose(clip_statistics(features), [[2.0, 2.0, 1.0, 0.0], [2.0, 0.0, 2.0, 1.0]])


@pytest.mark.parametrize("c", [0.01, 1.0, 100.0])
def test_fit_equals_sklearn_logistic_regression_on_the_same_features(c):
    features, labels = log_mels(300, seed=0)
    x = StandardScaler().fit_transform(clip_statistics(features))
    coef, intercept = fit_logistic(x, labels, CLASSES, c)
    reference = LogisticRegression(C=c, tol=1e-10, max_iter=10_000).fit(x, labels)
    np.testing.assert_allclose(coef, reference.coef_, atol=1e-5 * max(1.0, np.abs(reference.coef_).max()))
    np.testing.assert_allclose(intercept, reference.intercept_, atol=1e-5 * max(1.0, np.abs(reference.intercept_).max()))
    ours = np.argmax(x @ coef.T + intercept, axis=1)
    np.testing.assert_array_equal(ours, reference.predict(x))
    assert balanced_accuracy_score(labels, ours) == balanced_accuracy_score(labels, reference.predict(x))


def test_floor_chooses_c_on_validation_and_reads_test_as_sklearn_does():
    splits = [log_mels(count, seed) for count, seed in ((400, 1), (150, 2), (200, 3))]
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = [(clip_statistics(f), y) for f, y in splits]
    floor = fit_floor((x_train, y_train), (x_val, y_val), (x_test, y_test), CLASSES)

    scaler = StandardScaler().fit(x_train)
    fits = {c: LogisticRegression(C=c, tol=1e-10, max_iter=10_000).fit(scaler.transform(x_train), y_train) for c in FLOOR_C_GRID}
    validation = {c: balanced_accuracy_score(y_val, fit.predict(scaler.transform(x_val))) for c, fit in fits.items()}
    chosen = next(c for c in FLOOR_C_GRID if validation[c] == max(validation.values()))  # the stronger L2 on a tie
    assert floor.c == chosen and floor.validation_asc_macro_accuracy == pytest.approx(validation[chosen])
    assert floor.asc_macro_accuracy == pytest.approx(balanced_accuracy_score(y_test, fits[chosen].predict(scaler.transform(x_test))))
    assert 1 / CLASSES < floor.asc_macro_accuracy < 1.0  # the classes are learnable, not trivially

    without_validation = fit_floor((x_train, y_train), None, (x_test, y_test), CLASSES)
    assert without_validation.c == FIXED_C and without_validation.validation_asc_macro_accuracy is None

