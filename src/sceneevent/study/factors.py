"""The paper's factors (alpha, event-class strategy, hours T, k, training mode, scene clips per batch): which runs
form each factor's slice, their groups, and the paired comparisons of each group against its baselines.

For each factor the report draws one slice: the runs that agree on the other factors (unknown matches
anything), choosing the agreement with the most distinct values of the factor. So one report over the
folder that holds every sweep draws each figure from its own sweep. The alpha = 0 (ASC only) and
alpha = 1 (AET only) baselines are drawn from all runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from .run_readings import METRICS, RunReading, arithmetic_differences
from .seed_statistics import GroupStats, PairedComparison, compare_paired, describe

FACTORS = ("alpha", "strategy", "hours", "k", "mode", "asc_batch_size")
# The other factors a slice must agree on.
CONTEXT = {
    "alpha": ("k", "hours", "strategy", "mode", "asc_batch_size"),
    "strategy": ("alpha", "k", "hours", "mode", "asc_batch_size"),
    "hours": ("alpha", "k", "strategy", "mode", "asc_batch_size"),
    "k": ("alpha", "hours", "strategy", "mode", "asc_batch_size"),
    "mode": ("alpha", "k", "hours", "strategy", "asc_batch_size"),
    "asc_batch_size": ("alpha", "k", "hours", "strategy", "mode"),
}
LABELS = {"alpha": "alpha (event-loss weight)", "strategy": "event-class strategy", "hours": "T (hours of event audio)",
          "k": "k (event classes)", "mode": "training", "asc_batch_size": "scene clips per batch"}
STRATEGY_ORDER = ("random", "correlated", "uncorrelated", "speech_music")
PAPER_ALPHA = 0.95  # joint training in the paper's comparisons (Figures 3-5)
PAPER_ASC_BATCH = 64  # the paper's best scene batch (with 128 event clips)
MODE_ORDER = ("pretrain_finetune", "joint")
# Within-factor references: the other values of these factors are also compared with this one.
REFERENCE_VALUE = {"strategy": "random", "mode": "joint", "asc_batch_size": PAPER_ASC_BATCH}
ASC_ONLY, AET_ONLY = "ASC only (alpha = 0)", "AET only (alpha = 1)"


# --- slicing and grouping -----------------------------------------------------------------------------


def factor_slice(runs: list[RunReading], factor: str) -> tuple[list[RunReading], dict[str, Any]]:
    """The runs that vary `factor` with the other factors held fixed (unknown values match anything).

    Returns the runs and the fixed values. Among the candidate settings of the other factors, the one
    with the most distinct `factor` values wins (then the fewest unknowns, then the most runs).
    """
    keys = CONTEXT[factor]
    known = [run for run in runs if run.factor(factor) is not None]
    candidates = dict.fromkeys(tuple(run.factor(key) for key in keys) for run in known)  # distinct, in first-seen order
    best, best_score = None, (0, 0, False, 0)
    for context in candidates:
        members = [run for run in known if _compatible(run, keys, context)]
        # A context with unknowns matches more runs; prefer the fully known one when it covers as many values.
        # Ties go to joint training at the paper's alpha, the setting the paper compares against.
        paper_alpha = "alpha" in keys and context[keys.index("alpha")] == PAPER_ALPHA
        score = (len({run.factor(factor) for run in members}), -sum(value is None for value in context), paper_alpha, len(members))
        if score > best_score:
            best, best_score = members, score
    if best is None or best_score[0] == 0:
        return [], {}
    fixed = {key: _common([run.factor(key) for run in best]) for key in keys}
    return best, fixed


def _compatible(run: RunReading, keys: tuple[str, ...], context: tuple) -> bool:
    for key, value in zip(keys, context):
        mine = run.factor(key)
        if value is not None and mine is not None and mine != value:
            return False
    return True


def _common(values: list) -> Any:
    known = {value for value in values if value is not None}
    return known.pop() if len(known) == 1 else None


def sort_values(factor: str, values: Iterable) -> list:
    order = {"strategy": STRATEGY_ORDER, "mode": MODE_ORDER}.get(factor)
    if order:
        return sorted(values, key=lambda value: (order.index(value) if value in order else len(order), str(value)))
    return sorted(values)


@dataclass
class GroupRow:
    """One value of a factor: its runs and the statistics of both metrics over them."""

    factor: str
    value: Any
    runs: int
    seeds: list[int]
    asc_macro_accuracy: GroupStats
    aet_lwlrap: GroupStats


def group_table(runs: list[RunReading], factor: str) -> list[GroupRow]:
    """One row per value of `factor`, in the factor's order."""
    rows = []
    for value in sort_values(factor, {run.factor(factor) for run in runs}):
        members = [run for run in runs if run.factor(factor) == value]
        rows.append(GroupRow(factor=factor, value=value, runs=len(members),
                             seeds=sorted({run.seed for run in members if run.seed is not None}),
                             asc_macro_accuracy=describe(run.asc_macro_accuracy for run in members),
                             aet_lwlrap=describe(run.aet_lwlrap for run in members)))
    return rows


def format_value(value: Any) -> str:
    """90.0 -> "90", 0.95 -> "0.95": values as they are written in the sweeps."""
    return f"{value:g}" if isinstance(value, float) else str(value)


# --- comparisons against the baselines ----------------------------------------------------------------


def single_task_runs(runs: list[RunReading], alpha: float) -> list[RunReading]:
    """The joint-mode runs at `alpha` (0: ASC only, 1: AET only)."""
    return [run for run in runs if run.alpha == alpha and run.mode == "joint"]


def baseline(runs: list[RunReading], alpha: float, metric: str) -> GroupStats:
    """GroupStats of `metric` over the single-task runs at `alpha`."""
    return describe(getattr(run, metric) for run in single_task_runs(runs, alpha))


def factor_comparisons(members: list[RunReading], factor: str, everything: list[RunReading]) -> list[PairedComparison]:
    """The paired comparisons of a factor's slice, each value against its baseline:

    - scene accuracy of every value against ASC only (alpha = 0), in every slice;
    - in the alpha slice also the lwlrap of every 0 < alpha < 1 against AET only (alpha = 1);
    - strategy and mode: every value also against the reference value (random, joint).
    Groups without values of the metric are not compared.
    """
    comparisons = []
    baselines = {"asc_macro_accuracy": (single_task_runs(everything, 0.0), ASC_ONLY),
                 "aet_lwlrap": (single_task_runs(everything, 1.0), AET_ONLY)}
    groups = {value: [run for run in members if run.factor(factor) == value]
              for value in sort_values(factor, {run.factor(factor) for run in members})}
    for value, group in groups.items():
        if factor == "alpha" and value in (0.0, 1.0):
            continue  # the baselines themselves
        setting = f"{factor}={format_value(value)}"
        metrics = ("asc_macro_accuracy", "aet_lwlrap") if factor == "alpha" else ("asc_macro_accuracy",)
        for metric in metrics:
            base_runs, base_name = baselines[metric]
            comparisons += _comparison_if_measured(group, base_runs, metric, setting, base_name)
        reference = REFERENCE_VALUE.get(factor)
        if reference is not None and value != reference and reference in groups:
            for metric in METRICS:
                comparisons += _comparison_if_measured(group, groups[reference], metric, setting, f"{factor}={reference}")
    return comparisons


def _comparison_if_measured(group: list[RunReading], base: list[RunReading], metric: str, setting: str, name: str) -> list[PairedComparison]:
    measured = all(any(getattr(run, metric) is not None for run in runs) for runs in (group, base))
    if not measured:
        return []
    comparison = compare_paired(group, base, metric, setting, name)
    differing = arithmetic_differences([run for run in group + base if run.seed in comparison.seeds])  # the pairs
    if differing:
        comparison.notes.append(f"the runs did not compute alike ({differing}): part of the difference may come from "
                                "that, not from the setting; run both sides with the same settings")
    for side, runs in ((setting, group), (name, base)):
        if shares_one_draw(runs):
            comparison.notes.append(f"every seed of {side} trained on one draw of its event subset: the test holds that "
                                    "draw fixed, so it speaks of this draw, not of any draw (draw a subset per seed)")
    return [comparison]


def shares_one_draw(runs: list[RunReading]) -> bool:
    """Whether several seeds of a group trained on the same drawn event subset (its seed-paired test then cannot
    tell the setting from the particular draw; reports/mini/README.md shows a 0.04 'effect' made that way)."""
    drawn = [run for run in runs if run.event_draw is not None]
    return len({run.event_draw for run in drawn}) == 1 and len({run.seed for run in drawn}) > 1
