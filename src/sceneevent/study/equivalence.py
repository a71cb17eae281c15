"""The instrument check's rule and its operating characteristics.

A row that must show an effect passes when its 95 % CI lies above zero; a row that must show none passes only
when its 95 % CI lies inside +-margin (equivalence: "no significant difference" is not evidence of no
difference). The check passes when every row does. How often it does is a property of the design (pairs, sd of
the pair differences, margin), estimated here by simulating the check from normal pair differences: the chance
that an instrument with no bias passes, and the chance that one biased by the margin in a null row fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from .seed_statistics import CONFIDENCE

Kind = Literal["effect", "null"]


def row_passes(kind: Kind, ci_low: float | None, ci_high: float | None, margin: float) -> bool:
    """Whether one row of the check holds: an effect row's CI above 0, a null row's CI inside (-margin, margin).
    An unknown CI (fewer than 2 pairs) never passes."""
    if ci_low is None or ci_high is None:
        return False
    if kind == "effect":
        return ci_low > 0
    return -margin < ci_low and ci_high < margin


def expectation_text(kind: Kind, margin: float) -> str:
    return "95 % CI above 0" if kind == "effect" else f"95 % CI inside ±{margin:g}"


@dataclass(frozen=True)
class Row:
    """One row of the check as the simulation sees it: the true mean and sd of its pair differences."""

    name: str
    kind: Kind
    mean: float
    sd: float


@dataclass
class OperatingCharacteristics:
    n_pairs: int
    margin: float
    trials: int
    pass_if_unbiased: float  # every null row's true difference 0, effect rows at their `mean`
    fail_if_biased: dict[str, float]  # null row -> P(the check fails) when that row's true difference is the margin
    rows: list[Row]


def without_bias(rows: list[Row]) -> list[Row]:
    """The rows of an instrument with no bias: every null row's true difference 0, effect rows as they are."""
    return [Row(row.name, row.kind, row.mean if row.kind == "effect" else 0.0, row.sd) for row in rows]


def simulate_pass_rate(rows: list[Row], n_pairs: int, margin: float, trials: int = 20_000, seed: int = 0) -> float:
    """P(every row passes) over `trials` simulated studies of `n_pairs` independent normal pair differences per
    row (rows independent of each other)."""
    if n_pairs < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    critical = stats.t.ppf(0.5 + CONFIDENCE / 2, n_pairs - 1)
    passed = np.ones(trials, dtype=bool)
    for row in rows:
        values = rng.normal(row.mean, row.sd, size=(trials, n_pairs))
        mean, half = values.mean(axis=1), critical * values.std(axis=1, ddof=1) / math.sqrt(n_pairs)
        low, high = mean - half, mean + half
        passed &= (low > 0) if row.kind == "effect" else ((low > -margin) & (high < margin))
    return float(passed.mean())


def operating_characteristics(rows: list[Row], n_pairs: int, margin: float, trials: int = 20_000,
                              seed: int = 0) -> OperatingCharacteristics:
    """The check's pass rate without bias, and its failure rate with a bias of `margin` in each null row in turn."""
    unbiased = without_bias(rows)
    fail_if_biased = {}
    for index, row in enumerate(unbiased):
        if row.kind == "null":
            biased = [*unbiased[:index], Row(row.name, row.kind, margin, row.sd), *unbiased[index + 1:]]
            fail_if_biased[row.name] = 1 - simulate_pass_rate(biased, n_pairs, margin, trials, seed)
    return OperatingCharacteristics(n_pairs=n_pairs, margin=margin, trials=trials, rows=unbiased,
                                    pass_if_unbiased=simulate_pass_rate(unbiased, n_pairs, margin, trials, seed),
                                    fail_if_biased=fail_if_biased)


def pairs_needed(rows: list[Row], margin: float, target: float = 0.9, most: int = 200, trials: int = 4_000) -> int | None:
    """The fewest pairs with which an unbiased instrument passes with probability `target` (None: more than `most`)."""
    unbiased = without_bias(rows)

    def enough(n_pairs: int) -> bool:
        return simulate_pass_rate(unbiased, n_pairs, margin, trials) >= target

    if not enough(most):
        return None
    low, high = 1, most  # the pass rate grows with the pairs: bisect for the first n that reaches the target
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high
