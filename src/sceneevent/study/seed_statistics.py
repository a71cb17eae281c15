"""Statistics over seeds: per group mean, sample sd, 95 % Student-t CI and n; paired differences between two
groups of runs over the seeds both share (t-test, Wilcoxon, smallest detectable difference); Pearson r over
individual runs. The report and the mini reproduction's verdicts both read their numbers from here."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from scipy import optimize, stats

from .run_readings import RunReading

CONFIDENCE = 0.95
SIGNIFICANCE = 0.05  # two-sided, paired t-test
POWER = 0.8  # for the smallest detectable difference


@dataclass
class GroupStats:
    """Mean, sample sd (ddof=1), 95 % Student-t CI of the mean, and n of a set of values (None where n is too small)."""

    n: int
    mean: float | None = None
    sd: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    @property
    def ci_half_width(self) -> float:
        """For error bars: NaN (no bar) when the CI is unknown."""
        return math.nan if self.ci_high is None else (self.ci_high - self.ci_low) / 2


def describe(values: Iterable[float | None]) -> GroupStats:
    """GroupStats of the known values."""
    known = np.array([value for value in values if value is not None], dtype=float)
    if known.size == 0:
        return GroupStats(n=0)
    if known.size == 1:
        return GroupStats(n=1, mean=float(known[0]))
    mean, sd = float(known.mean()), float(known.std(ddof=1))
    half = t_half_width(sd, known.size)
    return GroupStats(n=int(known.size), mean=mean, sd=sd, ci_low=mean - half, ci_high=mean + half)


def t_half_width(sd: float, n: int) -> float:
    """Half-width of the Student-t CI of a mean of n values with sample sd `sd`."""
    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * sd / math.sqrt(n))


def detectable_difference(sd: float, n: int) -> float | None:
    """Smallest true mean difference a two-sided paired t-test at SIGNIFICANCE detects with POWER, for n pairs
    whose differences have sd `sd` (exact power from the noncentral t distribution)."""
    if n < 2:
        return None
    df = n - 1
    critical = stats.t.ppf(1 - SIGNIFICANCE / 2, df)

    def power(noncentrality: float) -> float:
        # The lower tail P(T < -c) taken as P(T' > c) with the noncentrality negated: nct.cdf far in the tail
        # returns NaN for some (df, nc), nct.sf stays finite.
        return stats.nct.sf(critical, df, noncentrality) + stats.nct.sf(critical, df, -noncentrality)

    upper = 1.0
    while power(upper) < POWER:
        upper *= 2
    noncentrality = optimize.brentq(lambda nc: power(nc) - POWER, 0.0, upper, xtol=1e-10)
    return float(noncentrality * sd / math.sqrt(n))


@dataclass
class PairedComparison:
    """A setting against its baseline on one metric, over the seeds both have: differences setting - baseline."""

    metric: str
    setting: str
    baseline: str
    seeds: list[int]
    n_pairs: int
    difference: GroupStats
    t_test_p: float | None
    wilcoxon_p: float | None
    detectable_difference: float | None  # with power POWER at this n and sd of the differences
    significant: bool  # paired t-test p < SIGNIFICANCE
    notes: list[str]


def per_seed(runs: list[RunReading], metric: str) -> dict[int, float]:
    """The metric per seed; several runs of one seed in a group are averaged, so a seed counts once."""
    values: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        value = getattr(run, metric)
        if run.seed is not None and value is not None:
            values[run.seed].append(value)
    return {seed: float(np.mean(found)) for seed, found in values.items()}


def compare_paired(setting_runs: list[RunReading], baseline_runs: list[RunReading], metric: str, setting: str, baseline: str) -> PairedComparison:
    """Paired difference, t-test, Wilcoxon test and smallest detectable difference over the common seeds."""
    setting_values, baseline_values = per_seed(setting_runs, metric), per_seed(baseline_runs, metric)
    seeds = sorted(setting_values.keys() & baseline_values.keys())
    ours = np.array([setting_values[seed] for seed in seeds])
    theirs = np.array([baseline_values[seed] for seed in seeds])
    differences = ours - theirs
    notes = [] if seeds else ["no seed in common with the baseline"]
    t_p = paired_t_p(ours, theirs, notes)
    spread = describe(differences.tolist())
    return PairedComparison(
        metric=metric, setting=setting, baseline=baseline, seeds=seeds, n_pairs=len(seeds), difference=spread,
        t_test_p=t_p, wilcoxon_p=wilcoxon_p(differences, notes),
        detectable_difference=detectable_difference(spread.sd, spread.n) if spread.sd is not None else None,
        significant=t_p is not None and t_p < SIGNIFICANCE, notes=notes,
    )


def paired_t_p(ours: np.ndarray, theirs: np.ndarray, notes: list[str]) -> float | None:
    """Two-sided paired t-test p (scipy.stats.ttest_rel), or None with the reason added to `notes`."""
    if ours.size < 2:
        notes.append("t-test: needs 2+ pairs")
        return None
    differences = ours - theirs
    if np.ptp(differences) <= 1e-12 * np.abs(differences).max():  # equal up to rounding: t is undefined
        notes.append("t-test: the differences do not vary (sd = 0)")
        return None
    return float(stats.ttest_rel(ours, theirs).pvalue)


def wilcoxon_p(differences: np.ndarray, notes: list[str]) -> float | None:
    """Two-sided Wilcoxon signed-rank p (zero differences dropped), or None with the reason added to `notes`."""
    nonzero = differences[differences != 0]
    if nonzero.size == 0:
        notes.append("Wilcoxon: no nonzero difference" if differences.size else "Wilcoxon: no pairs")
        return None
    if nonzero.size < 6:
        notes.append(f"Wilcoxon: {nonzero.size} nonzero pair(s) cannot reach p < 0.05")
    return float(stats.wilcoxon(nonzero).pvalue)


def pearson(runs: list[RunReading], factor: str, metric: str = "asc_macro_accuracy") -> dict:
    """Pearson r of `metric` (default: scene accuracy) with `factor` over the individual runs (scipy.stats.pearsonr)."""
    pairs = [(float(run.factor(factor)), getattr(run, metric)) for run in runs
             if run.factor(factor) is not None and getattr(run, metric) is not None]
    x, y = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    if len(pairs) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"r": None, "p": None, "n": len(pairs), "note": "needs 3+ runs with varying values"}
    result = stats.pearsonr(x, y)
    return {"r": float(result.statistic), "p": float(result.pvalue), "n": len(pairs)}
