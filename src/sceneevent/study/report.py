"""Figures, tables, correlations and statistics over seeds of a set of runs, in the layout of Parikh et al.
(Interspeech 2022).

Each run is one `results.json` (schema_version >= 2) or one W&B run with `test/*` summary keys. Older
results chose their `final` epoch on test data; they are refused (or left out with `skip_old_results`).
Its factors:
- `alpha`: the top-level `alpha` (the value used, also for `--alpha auto`).
- `mode`: `config.mode` ("pretrain_finetune"), else "joint".
- `k`, `hours` (T), `strategy`: `data.aet_subset` when the run recorded it, else parsed from the name of the
  `config.aet_dataset` folder: `k=35`, `hours=90` (or `T=90`), `strategy_random` (or `strategy=random`).
  An alpha = 0 run uses no event data, so its event factors are unknown and match any slice; likewise
  the alpha of a pretrain_finetune run (its stages are single-task).
The alpha = 0 (ASC only) and alpha = 1 (AET only) baselines are drawn from all runs.

For each factor the report draws one slice: the runs that agree on the other factors (unknown matches
anything), choosing the agreement with the most distinct values of the factor. So one report over the
folder that holds every sweep draws each figure from its own sweep. A factor with fewer than two values
in its slice is skipped, and the summary says so.

Statistics: per group mean, sample sd, 95 % Student-t CI and n; per setting, paired differences against
its baseline over the seeds both share (see `factor_comparisons`). Runs with the same configuration and
seed (a copied run folder) count once.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from scipy import optimize, stats

from ..training.checkpointing import RESULTS_FILE, VALIDATION_SELECTION_SCHEMA
from ..io_utils import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

FACTORS = ("alpha", "strategy", "hours", "k", "mode")
# The other factors a slice must agree on.
CONTEXT = {
    "alpha": ("k", "hours", "strategy", "mode"),
    "strategy": ("alpha", "k", "hours", "mode"),
    "hours": ("alpha", "k", "strategy", "mode"),
    "k": ("alpha", "hours", "strategy", "mode"),
    "mode": ("alpha", "k", "hours", "strategy"),
}
FIGURES = {  # factor -> (file name, title)
    "alpha": ("fig2_alpha.png", "Figure 2: scene and event performance against alpha"),
    "strategy": ("fig3a_strategy.png", "Figure 3a: scene accuracy by event-class strategy"),
    "hours": ("fig3b_hours.png", "Figure 3b: scene accuracy against hours T of event audio"),
    "k": ("fig4_k.png", "Figure 4: scene accuracy against the number k of event classes"),
    "mode": ("fig5_pretrain_vs_joint.png", "Figure 5: pre-training on events + fine-tuning vs joint training"),
}
GRADIENT_FIGURE = "task_gradients_alpha.png"
LABELS = {"alpha": "alpha (event-loss weight)", "strategy": "event-class strategy", "hours": "T (hours of event audio)",
          "k": "k (event classes)", "mode": "training"}
METRICS = {"asc_macro_accuracy": "scene macro accuracy", "aet_lwlrap": "event lwlrap"}
STRATEGY_ORDER = ("random", "correlated", "uncorrelated", "speech_music")
FULL_EVENT_SET = "all classes"  # the strategy of a run on a whole event source (no subset)
PAPER_ALPHA = 0.95  # joint training in the paper's comparisons (Figures 3-5)
MODE_ORDER = ("pretrain_finetune", "joint")
# Within-factor references: the other values of these factors are also compared with this one.
REFERENCE_VALUE = {"strategy": "random", "mode": "joint"}
ASC_ONLY, AET_ONLY = "ASC only (alpha = 0)", "AET only (alpha = 1)"
_K = re.compile(r"(?:^|[^A-Za-z])k=(\d+)")
_HOURS = re.compile(r"(?:^|[^A-Za-z])(?:hours|T)=(\d+(?:\.\d+)?)")
_STRATEGY = re.compile(r"strategy[_=](random|correlated|uncorrelated|speech_music)")

CONFIDENCE = 0.95
SIGNIFICANCE = 0.05  # two-sided, paired t-test
POWER = 0.8  # for the smallest detectable difference
# Where and how a run was written or logged: two runs that differ only here are the same measurement.
OUTPUT_FIELDS = frozenset({
    "output_dir", "overwrite_output_dir", "run_name", "report_to", "wandb_project", "logging_steps",
    "resume_from_checkpoint", "checkpointing_steps", "save_total_limit",
    "push_to_hub", "hub_model_id", "hub_private", "hub_revision",
})
# How a run computed, not what it measured: compared runs should agree on these (compiled and eager, or bf16 and
# fp32, arithmetic differ, so part of a difference between such runs would be theirs, not the setting's).
ARITHMETIC_FIELDS = ("device", "torch_compile", "torch_compile_mode", "channels_last", "mixed_precision")
OLD_RESULTS_WHY = (
    "predate results schema_version 2: their `final` is the epoch with the best *test* score (chosen on test "
    "data, so optimistic). Re-run them"
)


class OldResultsError(ValueError):
    """Results whose `final` was selected on test data (schema_version < 2)."""


@dataclass
class Run:
    """The factors and final (test) metrics of one run."""

    source: str
    seed: int | None
    alpha: float | None
    mode: str
    k: int | None
    hours: float | None
    strategy: str | None
    asc_macro_accuracy: float | None
    aet_lwlrap: float | None
    task_gradients: list[dict] = field(default_factory=list)
    identity: str = ""  # the configuration (less OUTPUT_FIELDS) and seed: equal for copies of one run
    best_epoch: int | None = None  # the epoch selected on validation
    event_draw: str | None = None  # the event subset's folder: runs that share it trained on one draw of the data
    arithmetic: dict = field(default_factory=dict)  # ARITHMETIC_FIELDS as the run used them (None: not recorded)

    def factor(self, name: str) -> Any:
        value = getattr(self, name)
        if name == "alpha" and self.mode == "pretrain_finetune":
            return None  # its two stages do not weight the tasks by alpha: not in the alpha figure, any mode slice
        # Speech + Music is how the k = 2 set is drawn; in the k slice it stands with the random sets.
        return "random" if name == "strategy" and value == "speech_music" else value


# --- reading runs -------------------------------------------------------------------------------------


def find_results(root: str | Path) -> list[Path]:
    """Every results.json below `root` (hidden folders, e.g. staging, are left out)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"runs folder {root}: no such folder")
    return sorted(p for p in root.rglob(RESULTS_FILE) if not any(part.startswith(".") for part in p.relative_to(root).parts))


def run_from_results(results: dict, source: str) -> Run:
    """The factors and metrics of one results.json payload; OldResultsError if `final` was chosen on test data."""
    if not _is_number(results.get("schema_version")) or results["schema_version"] < VALIDATION_SELECTION_SCHEMA:
        raise OldResultsError(f"{source}: results {OLD_RESULTS_WHY}")
    config = results.get("config") or {}
    final = results.get("final") or {}
    alpha = results.get("alpha", config.get("alpha"))
    alpha = float(alpha) if _is_number(alpha) else None
    mode = config.get("mode") or "joint"
    seed = results.get("seed", config.get("seed"))
    # A pre-trained-then-fine-tuned run saw its event data in stage 1 (recorded under "pretrain").
    stage_one = (results.get("pretrain") or {}).get("data") if mode == "pretrain_finetune" else None
    event_source = {**results, "data": stage_one} if stage_one else results
    k, hours, strategy = _event_factors(event_source) if alpha != 0.0 or mode == "pretrain_finetune" else (None, None, None)
    gradients = [entry for epoch in results.get("history") or [] for entry in (epoch.get("task_gradients") or [])]
    return Run(
        source=source, seed=seed, alpha=alpha, mode=mode, k=k, hours=hours, strategy=strategy,
        asc_macro_accuracy=_number(final.get("asc_macro_accuracy")), aet_lwlrap=_number(final.get("aet_lwlrap")),
        task_gradients=gradients, identity=run_identity(config, seed, alpha),
        best_epoch=final.get("best_epoch") if _is_number(final.get("best_epoch")) else None,
        event_draw=_event_draw(event_source) if strategy not in (None, FULL_EVENT_SET) else None,
        arithmetic=_arithmetic(results),
    )


def _arithmetic(results: dict) -> dict:
    """ARITHMETIC_FIELDS of one results.json payload (None where it does not record one)."""
    config, environment = results.get("config") or {}, results.get("environment") or {}
    device = environment.get("device")
    return {
        "device": str(device).split(":")[0] if device else None,  # cpu, cuda
        "torch_compile": config.get("torch_compile"),
        "torch_compile_mode": config.get("torch_compile_mode") if config.get("torch_compile") else None,  # unused then
        "channels_last": config.get("channels_last"),
        # the precision Accelerate resolved (the flag may be None: then `accelerate config` decided)
        "mixed_precision": environment.get("mixed_precision", config.get("mixed_precision")),
    }


def arithmetic_differences(runs: list[Run]) -> str:
    """The ARITHMETIC_FIELDS on which `runs` disagree, e.g. "torch_compile: False vs True" ('' if none)."""
    differing = []
    for name in ARITHMETIC_FIELDS:
        values = sorted({str(run.arithmetic.get(name)) for run in runs if run.arithmetic.get(name) is not None})
        if len(values) > 1:
            differing.append(f"{name}: {' vs '.join(values)}")
    return "; ".join(differing)


def _event_draw(results: dict) -> str | None:
    """Which drawn event subset a run trained on: its folder (one folder holds one draw)."""
    folder = (results.get("config") or {}).get("aet_dataset")
    return None if folder is None else str(folder).rstrip("/")


def run_identity(config: dict, seed: Any, alpha: float | None) -> str:
    """What makes two runs the same measurement: the configuration less OUTPUT_FIELDS, the seed and alpha."""
    kept = {key: value for key, value in config.items() if key not in OUTPUT_FIELDS}
    return json.dumps({**kept, "seed": seed, "alpha": alpha}, sort_keys=True, default=str)


def _event_factors(results: dict) -> tuple[int | None, float | None, str | None]:
    subset = (results.get("data") or {}).get("aet_subset") or {}
    name = str((results.get("config") or {}).get("aet_dataset") or "").rstrip("/").rsplit("/", 1)[-1]
    k = subset.get("k") if subset.get("k") is not None else _match(_K, name, int)
    hours = subset.get("hours") if subset.get("hours") is not None else _match(_HOURS, name, float)
    strategy = subset.get("strategy") or _match(_STRATEGY, name, str)
    if k is None and hours is None and strategy is None:
        # Not a subset: the source's whole event set. It is its own setting, not a wildcard, so these runs
        # never stand in for a subset in another factor's slice.
        k = len((results.get("data") or {}).get("event_labels") or []) or None
        strategy = FULL_EVENT_SET
    return (int(k) if k is not None else None), (float(hours) if hours is not None else None), strategy


def _match(pattern: re.Pattern, text: str, kind: type) -> Any:
    found = pattern.search(text)
    return kind(found.group(1)) if found else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any) -> float | None:
    return float(value) if _is_number(value) else None


def load_runs(root: str | Path, skip_old_results: bool = False) -> list[Run]:
    """Every run below `root`; an unreadable results.json is reported and left out.

    Results older than schema_version 2 raise OldResultsError naming every such file, or with
    `skip_old_results` are left out with a warning that names them.
    """
    runs, old = [], []
    for path in find_results(root):
        try:
            results = json.loads(path.read_text())
            if (results.get("config") or {}).get("mode") == "pretrain":
                continue  # stage 1 of a pre-train-then-fine-tune run, reported through its parent
            runs.append(run_from_results(results, str(path.parent)))
        except OldResultsError:
            old.append(str(path))
        except (OSError, json.JSONDecodeError, TypeError, ValueError, AttributeError) as error:
            logger.warning("skipping %s: %s", path, error)
    refuse_old_results(old, skip_old_results)
    return runs


def refuse_old_results(sources: list[str], skip: bool) -> None:
    """Raise OldResultsError naming every old result, or with `skip` warn that they are left out."""
    if not sources:
        return
    listing = "\n  ".join(sources)
    if skip:
        logger.warning("left out %d run(s) that %s:\n  %s", len(sources), OLD_RESULTS_WHY, listing)
        return
    raise OldResultsError(f"{len(sources)} run(s) {OLD_RESULTS_WHY}, or pass --skip_old_results to leave them out:\n  {listing}")


def load_wandb_runs(project: str, timeout: int = 30, skip_old_results: bool = False) -> list[Run]:
    """Finished runs of a W&B project ("entity/project"), from their config and `test/*` summary values.

    A run without `test/*` keys was logged before validation-based selection and is refused like an old
    results.json (see `load_runs`).
    """
    try:
        import wandb

        api = wandb.Api(timeout=timeout)
        wandb_runs = list(api.runs(project, filters={"state": "finished"}))
    except Exception as error:  # offline, no login, unknown project: say so instead of a traceback
        raise RuntimeError(f"--wandb_project {project}: could not read runs from W&B ({type(error).__name__}: {error})") from error
    runs, old = [], []
    for wandb_run in wandb_runs:
        config = {key: value for key, value in dict(wandb_run.config).items() if not key.startswith("_")}
        summary = dict(wandb_run.summary)
        path = getattr(wandb_run, "path", None)
        source = "wandb:" + ("/".join(path) if isinstance(path, (list, tuple)) else str(path or wandb_run.id))
        if config.get("mode") == "pretrain":
            continue
        if not any(key.startswith("test/") for key in summary):
            old.append(source)
            continue
        results = {"schema_version": VALIDATION_SELECTION_SCHEMA, "config": config, "alpha": config.get("alpha"), "seed": config.get("seed"),
                   "final": {"asc_macro_accuracy": summary.get("test/asc_macro_accuracy"),
                             "aet_lwlrap": summary.get("test/aet_lwlrap")}}
        runs.append(run_from_results(results, source))
    refuse_old_results(old, skip_old_results)
    return runs


def drop_duplicates(runs: list[Run]) -> tuple[list[Run], dict[str, list[str]]]:
    """The runs with each identity once (the first seen), and per kept source the sources dropped as its copies."""
    kept: dict[str, Run] = {}
    copies: dict[str, list[str]] = defaultdict(list)
    for run in runs:
        first = kept.setdefault(run.identity, run)
        if first is not run:
            copies[first.source].append(run.source)
    return list(kept.values()), dict(copies)


# --- statistics over seeds ----------------------------------------------------------------------------


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


def per_seed(runs: list[Run], metric: str) -> dict[int, float]:
    """The metric per seed; several runs of one seed in a group are averaged, so a seed counts once."""
    values: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        value = getattr(run, metric)
        if run.seed is not None and value is not None:
            values[run.seed].append(value)
    return {seed: float(np.mean(found)) for seed, found in values.items()}


def compare_paired(setting_runs: list[Run], baseline_runs: list[Run], metric: str, setting: str, baseline: str) -> PairedComparison:
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


def single_task_runs(runs: list[Run], alpha: float) -> list[Run]:
    """The joint-mode runs at `alpha` (0: ASC only, 1: AET only)."""
    return [run for run in runs if run.alpha == alpha and run.mode == "joint"]


def baseline(runs: list[Run], alpha: float, metric: str) -> GroupStats:
    """GroupStats of `metric` over the single-task runs at `alpha`."""
    return describe(getattr(run, metric) for run in single_task_runs(runs, alpha))


def factor_comparisons(members: list[Run], factor: str, everything: list[Run]) -> list[PairedComparison]:
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


def _comparison_if_measured(group: list[Run], base: list[Run], metric: str, setting: str, name: str) -> list[PairedComparison]:
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


def shares_one_draw(runs: list[Run]) -> bool:
    """Whether several seeds of a group trained on the same drawn event subset (its seed-paired test then cannot
    tell the setting from the particular draw; reports/mini/README.md shows a 0.04 'effect' made that way)."""
    drawn = [run for run in runs if run.event_draw is not None]
    return len({run.event_draw for run in drawn}) == 1 and len({run.seed for run in drawn}) > 1


# --- slicing and grouping -----------------------------------------------------------------------------


def factor_slice(runs: list[Run], factor: str) -> tuple[list[Run], dict[str, Any]]:
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


def _compatible(run: Run, keys: tuple[str, ...], context: tuple) -> bool:
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


def group_table(runs: list[Run], factor: str) -> list[GroupRow]:
    """One row per value of `factor`, in the factor's order."""
    rows = []
    for value in sort_values(factor, {run.factor(factor) for run in runs}):
        members = [run for run in runs if run.factor(factor) == value]
        rows.append(GroupRow(factor=factor, value=value, runs=len(members),
                             seeds=sorted({run.seed for run in members if run.seed is not None}),
                             asc_macro_accuracy=describe(run.asc_macro_accuracy for run in members),
                             aet_lwlrap=describe(run.aet_lwlrap for run in members)))
    return rows


def pearson(runs: list[Run], factor: str, metric: str = "asc_macro_accuracy") -> dict:
    """Pearson r of `metric` (default: scene accuracy) with `factor` over the individual runs (scipy.stats.pearsonr)."""
    pairs = [(float(run.factor(factor)), getattr(run, metric)) for run in runs
             if run.factor(factor) is not None and getattr(run, metric) is not None]
    x, y = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    if len(pairs) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"r": None, "p": None, "n": len(pairs), "note": "needs 3+ runs with varying values"}
    result = stats.pearsonr(x, y)
    return {"r": float(result.statistic), "p": float(result.pvalue), "n": len(pairs)}


# --- figures ------------------------------------------------------------------------------------------

CI_LABEL = "mean, 95 % CI over seeds"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _series(rows: list[GroupRow], metric: str) -> tuple[list, np.ndarray, np.ndarray]:
    """Values, means and CI half-widths of the rows that have the metric."""
    kept = [row for row in rows if getattr(row, metric).mean is not None]
    return ([row.value for row in kept], np.array([getattr(row, metric).mean for row in kept]),
            np.array([getattr(row, metric).ci_half_width for row in kept]))


def _baseline_line(axis, reference: GroupStats, label: str, color: str) -> None:
    if reference.mean is None:
        return
    axis.axhline(reference.mean, color=color, linestyle="--", linewidth=1.2, label=f"{label}: {reference.mean:.3f}, n = {reference.n}")
    if reference.ci_low is not None:
        axis.axhspan(reference.ci_low, reference.ci_high, color=color, alpha=0.12)


def plot_alpha(runs: list[Run], path: Path, everything: list[Run]) -> None:
    """Figure 2: scene accuracy and lwlrap against alpha; the alpha=0 and alpha=1 baselines as lines.

    Right-hand panels zoom on alpha >= 0.9, where the paper's grid is dense (step 0.01).
    """
    plt = _pyplot()
    joint = [run for run in runs if run.alpha is not None and 0.0 < run.alpha < 1.0]
    rows = group_table(joint, "alpha")
    figure, axes = plt.subplots(2, 2, figsize=(10, 7), sharey="row", gridspec_kw={"width_ratios": [2, 1]})
    for row_axes, metric, base_alpha, base_label, color in (
        (axes[0], "asc_macro_accuracy", 0.0, ASC_ONLY, "tab:blue"),
        (axes[1], "aet_lwlrap", 1.0, AET_ONLY, "tab:orange"),
    ):
        x, mean, half = _series(rows, metric)
        reference = baseline(everything, base_alpha, metric)
        for axis in row_axes:
            axis.errorbar(x, mean, yerr=half, marker="o", markersize=4, capsize=3, color=color, label=f"joint ({CI_LABEL})")
            _baseline_line(axis, reference, base_label, "gray")
            axis.grid(alpha=0.3)
        row_axes[0].set_ylabel(METRICS[metric])
        row_axes[0].set_xlim(-0.02, 1.02)
        row_axes[1].set_xlim(0.895, 1.005)
        row_axes[0].legend(loc="lower left", fontsize=8)
    for axis, label in zip(axes[1], (LABELS["alpha"], "alpha (zoom on 0.9 to 1)")):
        axis.set_xlabel(label)
    figure.suptitle(FIGURES["alpha"][1])
    _save(figure, path)


def plot_bars(rows: list[GroupRow], factor: str, path: Path, title: str, everything: list[Run]) -> None:
    """Figures 3a and 5: scene accuracy per strategy / training mode, mean and 95 % CI over seeds."""
    plt = _pyplot()
    values, mean, half = _series(rows, "asc_macro_accuracy")
    counts = [row.asc_macro_accuracy.n for row in rows if row.asc_macro_accuracy.mean is not None]
    figure, axis = plt.subplots(figsize=(6, 4.5))
    positions = np.arange(len(values))
    axis.bar(positions, mean, yerr=half, capsize=5, color="tab:blue", alpha=0.8, label=CI_LABEL)
    reference = baseline(everything, 0.0, "asc_macro_accuracy")
    _baseline_line(axis, reference, ASC_ONLY, "gray")
    axis.set_xticks(positions, [f"{value}\n(n = {n})" for value, n in zip(values, counts)])
    lows = list(mean - np.nan_to_num(half)) + [reference.ci_low if reference.ci_low is not None else reference.mean]
    lows = [low for low in lows if low is not None]
    axis.set_ylim(max(0.0, min(lows, default=0.0) - 0.05), None)  # bars start near the data, as in the paper
    axis.set_xlabel(LABELS[factor])
    axis.set_ylabel(METRICS["asc_macro_accuracy"])
    axis.set_title(title, fontsize=10)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(loc="best", fontsize=8)
    _save(figure, path)


def plot_line(rows: list[GroupRow], factor: str, path: Path, title: str, correlation: dict, everything: list[Run]) -> None:
    """Figures 3b and 4: scene accuracy against T or k (log axis), mean and 95 % CI, with Pearson r in the legend."""
    plt = _pyplot()
    x, mean, half = _series(rows, "asc_macro_accuracy")
    figure, axis = plt.subplots(figsize=(6, 4.5))
    label = CI_LABEL
    if correlation.get("r") is not None:
        label += f"\nPearson r = {correlation['r']:.3f}, p = {correlation['p']:.2g} (n = {correlation['n']})"
    axis.errorbar(x, mean, yerr=half, marker="o", capsize=4, color="tab:blue", label=label)
    _baseline_line(axis, baseline(everything, 0.0, "asc_macro_accuracy"), ASC_ONLY, "gray")
    if len(x) and min(x) > 0:
        axis.set_xscale("log")  # the grids double (11, 22, 45, ... h)
    axis.set_xticks(x, [f"{value:g}" for value in x])
    axis.minorticks_off()
    axis.set_xlabel(LABELS[factor])
    axis.set_ylabel(METRICS["asc_macro_accuracy"])
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(loc="best", fontsize=8)
    _save(figure, path)


def gradient_table(runs: list[Run]) -> list[dict]:
    """Per alpha: the statistics over runs of each run's mean task-gradient cosine."""
    per_run = [(run.alpha, float(np.mean([entry["cosine"] for entry in run.task_gradients if entry.get("cosine") is not None])))
               for run in runs if run.alpha is not None and any(entry.get("cosine") is not None for entry in run.task_gradients)]
    rows = []
    for alpha in sorted({alpha for alpha, _ in per_run}):
        cosine = describe(value for a, value in per_run if a == alpha)
        rows.append({"alpha": alpha, "cosine_mean": cosine.mean, "cosine_sd": cosine.sd, "cosine_ci_low": cosine.ci_low,
                     "cosine_ci_high": cosine.ci_high, "runs": cosine.n})
    return rows


def plot_gradients(rows: list[dict], path: Path) -> None:
    """Cosine between the ASC and AET gradients of the shared encoder, against alpha."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4.5))
    half = [math.nan if row["cosine_ci_high"] is None else (row["cosine_ci_high"] - row["cosine_ci_low"]) / 2 for row in rows]
    axis.errorbar([row["alpha"] for row in rows], [row["cosine_mean"] for row in rows], yerr=half,
                  marker="o", capsize=3, color="tab:green", label="mean over steps; 95 % CI over seeds")
    axis.axhline(0.0, color="gray", linewidth=1, linestyle=":")
    axis.set_xlabel(LABELS["alpha"])
    axis.set_ylabel("cosine(grad ASC, grad AET)")
    axis.set_title("Task-gradient agreement against alpha")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    _save(figure, path)


def _save(figure, path: Path) -> None:
    figure.tight_layout()
    temporary = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(temporary, dpi=120)
    temporary.replace(path)
    import matplotlib.pyplot as plt

    plt.close(figure)


# --- the report ---------------------------------------------------------------------------------------


def write_report(runs: list[Run], output_dir: str | Path) -> dict:
    """Write the figures, summary.csv, summary.md and summary.json into `output_dir`; return the summary.

    In the returned summary, groups and comparisons are GroupRow / PairedComparison objects; summary.json
    holds them as plain dicts.
    """
    if not runs:
        raise ValueError("no runs to report (no results.json found)")
    unique, duplicates = drop_duplicates(runs)
    warn_duplicates(duplicates)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"runs": len(unique), "runs_read": len(runs), "duplicates": duplicates, "figures": {},
                               "skipped": {}, "slices": {}, "groups": {}, "comparisons": {}, "pearson": {}}
    for factor in FACTORS:
        members, fixed = factor_slice(unique, factor)
        values = {run.factor(factor) for run in members}
        if factor in ("hours", "k"):
            summary["pearson"][factor] = pearson(members, factor)
        if len(values) < 2:
            summary["skipped"][factor] = f"{len(values)} distinct value(s) of {factor} in the runs"
            continue
        summary["slices"][factor] = {"fixed": fixed, "runs": len(members)}
        summary["groups"][factor] = group_table(members, factor)
        summary["comparisons"][factor] = factor_comparisons(members, factor, unique)
        draw_factor(factor, members, summary, output_dir, unique)
        summary["figures"][factor] = FIGURES[factor][0]
    gradients = gradient_table(unique)
    if gradients:
        plot_gradients(gradients, output_dir / GRADIENT_FIGURE)
        summary["figures"]["task_gradients"] = GRADIENT_FIGURE
        summary["task_gradients"] = gradients
    else:
        summary["skipped"]["task_gradients"] = "no run's history has task_gradients"
    atomic_write_text(output_dir / "summary.csv", to_csv(summary["groups"]))
    atomic_write_text(output_dir / "summary.md", to_markdown(summary))
    atomic_write_json(output_dir / "summary.json", to_plain(summary))
    return summary


def warn_duplicates(duplicates: dict[str, list[str]]) -> None:
    for kept, copies in duplicates.items():
        logger.warning("same configuration and seed as %s, counted once (left out): %s", kept, ", ".join(copies))


def draw_factor(factor: str, members: list[Run], summary: dict, output_dir: Path, everything: list[Run]) -> None:
    name, title = FIGURES[factor]
    rows = summary["groups"][factor]
    if factor == "alpha":
        plot_alpha(members, output_dir / name, everything)
    elif factor in ("strategy", "mode"):
        plot_bars(rows, factor, output_dir / name, title, everything)
    else:
        plot_line(rows, factor, output_dir / name, title, summary["pearson"][factor], everything)


def to_plain(value: Any) -> Any:
    """Dataclasses (also inside dicts and lists) as dicts, for JSON."""
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_plain(item) for item in value]
    return value


STAT_FIELDS = ("mean", "sd", "ci_low", "ci_high", "n")
CSV_COLUMNS = ("factor", "value", "runs") + tuple(f"{metric}_{name}" for metric in METRICS for name in STAT_FIELDS)


def to_csv(groups: dict[str, list[GroupRow]]) -> str:
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for rows in groups.values():
        for row in rows:
            record = {"factor": row.factor, "value": format_value(row.value), "runs": row.runs}
            for metric in METRICS:
                record.update({f"{metric}_{name}": getattr(getattr(row, metric), name) for name in STAT_FIELDS})
            writer.writerow({key: "" if value is None else value for key, value in record.items()})
    return stream.getvalue()


def format_value(value: Any) -> str:
    """90.0 -> "90", 0.95 -> "0.95": values as they are written in the sweeps."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _number_text(value: float | None, signed: bool = False, digits: int = 4) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _ci_text(group: GroupStats, signed: bool = False) -> str:
    if group.ci_low is None:
        return "–"
    return f"[{_number_text(group.ci_low, signed)}, {_number_text(group.ci_high, signed)}]"


def _p_text(p: float | None) -> str:
    return "–" if p is None else f"{p:.3g}"


def stats_cells(group: GroupStats) -> str:
    """Markdown cells: mean | sd | 95 % CI | n."""
    return f"{_number_text(group.mean)} | {_number_text(group.sd)} | {_ci_text(group)} | {group.n}"


def comparison_sentence(comparison: PairedComparison) -> str:
    """The comparison in words: difference, CI, n pairs, verdict, p-values, smallest detectable difference."""
    difference = comparison.difference
    head = f"{comparison.setting} vs {comparison.baseline}, {METRICS[comparison.metric]}"
    if difference.mean is None:
        return f"{head}: not compared ({'; '.join(comparison.notes)})"
    text = f"{head}: difference {_number_text(difference.mean, signed=True)}"
    if difference.ci_low is not None:
        text += f" (95 % CI {_number_text(difference.ci_low, signed=True)} to {_number_text(difference.ci_high, signed=True)})"
    text += f" over n = {comparison.n_pairs} paired seed(s)"
    if comparison.t_test_p is None:
        verdict = "no test"
    elif comparison.significant:
        verdict = f"significant (paired t p = {_p_text(comparison.t_test_p)})"
    else:
        verdict = f"not significant (paired t p = {_p_text(comparison.t_test_p)})"
    text += f"; {verdict}; Wilcoxon p = {_p_text(comparison.wilcoxon_p)}"
    if comparison.detectable_difference is not None:
        text += f"; smallest difference detectable with power {POWER:g}: {comparison.detectable_difference:.4f}"
    if comparison.notes:
        text += f" [{'; '.join(comparison.notes)}]"
    return text + "."


def to_markdown(summary: dict) -> str:
    duplicates = sum(len(copies) for copies in summary["duplicates"].values())
    lines = ["# Results", "",
             f"{summary['runs']} runs ({summary['runs_read']} read, {duplicates} duplicate(s) counted once). "
             "Per group: mean, sample sd, 95 % CI of the mean (Student t) and n runs (seeds). Comparisons pair runs "
             f"by seed (setting − baseline); significant means a two-sided paired t-test p < {SIGNIFICANCE:g}, with no "
             "correction for the number of comparisons.", ""]
    for factor, rows in summary["groups"].items():
        fixed = ", ".join(f"{key}={format_value(value)}" for key, value in summary["slices"][factor]["fixed"].items() if value is not None)
        lines += [f"## {LABELS[factor]}", "", f"Fixed: {fixed or '—'}. Figure: `{summary['figures'][factor]}`.", "",
                  "| value | runs | scene mean | sd | 95 % CI | n | lwlrap mean | sd | 95 % CI | n |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {format_value(row.value)} | {row.runs} | {stats_cells(row.asc_macro_accuracy)} | {stats_cells(row.aet_lwlrap)} |"
                  for row in rows]
        lines += [""] + comparison_table(summary["comparisons"][factor])
    lines += ["## Pearson correlation of scene accuracy (individual runs)", "", "| with | r | p | runs |", "|---|---|---|---|"]
    for factor, result in summary["pearson"].items():
        r, p = result.get("r"), result.get("p")
        lines.append(f"| {LABELS[factor]} | {'–' if r is None else f'{r:.4f}'} | {'–' if p is None else f'{p:.4g}'} | {result['n']} |")
    if summary["duplicates"]:
        lines += ["", "## Duplicate runs (same configuration and seed, counted once)", ""]
        lines += [f"- kept {kept}; left out {', '.join(copies)}" for kept, copies in summary["duplicates"].items()]
    if summary["skipped"]:
        lines += ["", "## Not drawn", ""] + [f"- {factor}: {reason}" for factor, reason in summary["skipped"].items()]
    return "\n".join(lines) + "\n"


def comparison_table(comparisons: list[PairedComparison]) -> list[str]:
    """Markdown lines: the paired comparisons of one factor as a table, then in words."""
    if not comparisons:
        return []
    lines = ["Paired by seed (setting − baseline):", "",
             "| setting | baseline | metric | n pairs | difference | 95 % CI | paired t p | Wilcoxon p | detectable (power 0.8) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for comparison in comparisons:
        lines.append(f"| {comparison.setting} | {comparison.baseline} | {METRICS[comparison.metric]} | {comparison.n_pairs} "
                     f"| {_number_text(comparison.difference.mean, signed=True)} | {_ci_text(comparison.difference, signed=True)} "
                     f"| {_p_text(comparison.t_test_p)} | {_p_text(comparison.wilcoxon_p)} | {_number_text(comparison.detectable_difference)} |")
    lines += [""] + [f"- {comparison_sentence(comparison)}" for comparison in comparisons] + [""]
    return lines
