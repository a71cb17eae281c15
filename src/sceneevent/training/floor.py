"""The floor of a scene reading: a multinomial logistic regression on each clip's per-mel mean and standard
deviation over time, of the same stored log-mels and the same splits as the network.

Fit on train, its L2 strength chosen on validation, read once on test. A network that does not clear it has
learnt less about the scenes than a linear model on a clip's average spectrum and its spread: with few
recordings, a sign that it learnt its training recordings instead.

The fit is ours (scipy's L-BFGS on the L2-regularised multinomial log-loss, the objective of scikit-learn's
`LogisticRegression(solver="lbfgs")`, which is only a dev dependency); a test compares the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.optimize
from scipy.special import log_softmax

from ..data.feature_store import StoredSplit
from ..data.loader import BatchReader
from ..metrics import macro_accuracy

# Inverse L2 strengths tried (scikit-learn's `C`), weakest regularisation last; on standardised features.
FLOOR_C_GRID = tuple(10.0**power for power in range(-3, 4))
FIXED_C = 1.0  # without a validation split nothing may choose: scikit-learn's default
_CHUNK_ROWS = 256  # clips read at once: (256, 128, 1001) fp16 is 66 MB


@dataclass
class Floor:
    """The floor's test reading and how it was reached."""

    asc_macro_accuracy: float  # test
    c: float  # the inverse L2 strength used
    validation_asc_macro_accuracy: float | None  # at `c`; None without a validation split


def clip_statistics(features: np.ndarray) -> np.ndarray:
    """`(B, n_mels, frames)` log-mels → `(B, 2 * n_mels)`: each mel bin's mean over time, then its standard deviation."""
    features = np.asarray(features, dtype=np.float32)
    return np.concatenate([features.mean(axis=2), features.std(axis=2)], axis=1).astype(np.float64)


def split_statistics(split: StoredSplit, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """`(statistics (N, 2 * n_mels), scene labels (N,))` of a stored scene split, read a chunk at a time."""
    reader = BatchReader(split, "scene", num_classes)
    stats, labels = [], []
    for start in range(0, len(reader), _CHUNK_ROWS):
        batch = reader[list(range(start, min(start + _CHUNK_ROWS, len(reader))))]
        stats.append(clip_statistics(batch["input_features"].numpy()))
        labels.append(batch["scene_labels"].numpy())
    return np.concatenate(stats), np.concatenate(labels)


def fit_logistic(x: np.ndarray, y: np.ndarray, num_classes: int, c: float, init: np.ndarray | None = None,
                 tol: float = 1e-10, max_iter: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression minimising `sum_i log-loss_i + ||W||^2 / (2 c)` (the intercept is not
    penalised), as scikit-learn's `LogisticRegression(C=c)`. Returns `(coef (num_classes, d), intercept (num_classes,))`.

    `init`: a flat starting point (a previous fit's `np.concatenate([coef.ravel(), intercept])`).
    """
    n, d = x.shape
    onehot = np.eye(num_classes)[y]

    def loss_and_gradient(flat: np.ndarray) -> tuple[float, np.ndarray]:
        coef, intercept = flat[: num_classes * d].reshape(num_classes, d), flat[num_classes * d :]
        log_p = log_softmax(x @ coef.T + intercept, axis=1)  # (n, classes)
        residual = np.exp(log_p) - onehot
        # divided by n, as scikit-learn does, so that the tolerance does not depend on the set's size
        loss = (-(log_p * onehot).sum() + 0.5 * (coef**2).sum() / c) / n
        gradient = np.concatenate([(residual.T @ x + coef / c).ravel(), residual.sum(axis=0)]) / n
        return loss, gradient

    start = np.zeros(num_classes * (d + 1)) if init is None else init
    fitted = scipy.optimize.minimize(loss_and_gradient, start, jac=True, method="L-BFGS-B",
                                     options={"maxiter": max_iter, "gtol": tol, "ftol": 64 * np.finfo(float).eps})
    return fitted.x[: num_classes * d].reshape(num_classes, d), fitted.x[num_classes * d :]


def fit_floor(train: tuple[np.ndarray, np.ndarray], validation: tuple[np.ndarray, np.ndarray] | None,
              test: tuple[np.ndarray, np.ndarray], num_classes: int) -> Floor:
    """The floor from `(statistics, labels)` of each split: features standardised on train, `c` from
    `FLOOR_C_GRID` by validation macro accuracy (the stronger regularisation on a tie), then read on test."""
    x_train, y_train = train
    mean, scale = x_train.mean(axis=0), x_train.std(axis=0)
    scale[scale == 0] = 1.0
    x_train = (x_train - mean) / scale

    def accuracy(fit: tuple[np.ndarray, np.ndarray], split: tuple[np.ndarray, np.ndarray]) -> float:
        (coef, intercept), (x, y) = fit, split
        return macro_accuracy(y, np.argmax((x - mean) / scale @ coef.T + intercept, axis=1), labels=range(num_classes))

    if validation is None:
        return Floor(accuracy(fit_logistic(x_train, y_train, num_classes, FIXED_C), test), FIXED_C, None)
    best, init = None, None
    for c in FLOOR_C_GRID:  # weakest regularisation last; each fit starts from the previous one
        fit = fit_logistic(x_train, y_train, num_classes, c, init=init)
        init = np.concatenate([fit[0].ravel(), fit[1]])
        score = accuracy(fit, validation)
        if best is None or score > best[0]:
            best = (score, c, fit)
    score, c, chosen = best
    return Floor(accuracy(chosen, test), c, score)


def scene_floor(scene_train: StoredSplit, scene_validation: StoredSplit | None, scene_test: StoredSplit,
                num_classes: int) -> Floor:
    """The floor of a run's stored scene splits (see the module's docstring)."""
    train, validation, test = (split_statistics(split, num_classes) if split is not None else None
                               for split in (scene_train, scene_validation, scene_test))
    return fit_floor(train, validation, test, num_classes)
