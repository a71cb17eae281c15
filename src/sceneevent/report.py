"""Figures, tables and correlations of a set of runs, in the layout of Parikh et al. (Interspeech 2022).

Each run is one `results.json` (or one W&B run). Its factors:
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
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .checkpointing import RESULTS_FILE
from .io_utils import atomic_write_json, atomic_write_text

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
STRATEGY_ORDER = ("random", "correlated", "uncorrelated", "speech_music")
FULL_EVENT_SET = "all classes"  # the strategy of a run on a whole event source (no subset)
PAPER_ALPHA = 0.95  # joint training in the paper's comparisons (Figures 3-5)
MODE_ORDER = ("pretrain_finetune", "joint")
_K = re.compile(r"(?:^|[^A-Za-z])k=(\d+)")
_HOURS = re.compile(r"(?:^|[^A-Za-z])(?:hours|T)=(\d+(?:\.\d+)?)")
_STRATEGY = re.compile(r"strategy[_=](random|correlated|uncorrelated|speech_music)")


@dataclass
class Run:
    """The factors and final metrics of one run."""

    source: str
    seed: int | None
    alpha: float | None
    mode: str
    k: int | None
    hours: float | None
    strategy: str | None
    asc: float | None
    lwlrap: float | None
    task_gradients: list[dict] = field(default_factory=list)

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
    """The factors and metrics of one results.json payload."""
    config = results.get("config") or {}
    final = results.get("final") or {}
    alpha = results.get("alpha", config.get("alpha"))
    alpha = float(alpha) if _is_number(alpha) else None
    mode = config.get("mode") or "joint"
    # A pre-trained-then-fine-tuned run saw its event data in stage 1 (recorded under "pretrain").
    stage_one = (results.get("pretrain") or {}).get("data") if mode == "pretrain_finetune" else None
    event_source = {**results, "data": stage_one} if stage_one else results
    k, hours, strategy = _event_factors(event_source) if alpha != 0.0 or mode == "pretrain_finetune" else (None, None, None)
    gradients = [entry for epoch in results.get("history") or [] for entry in (epoch.get("task_gradients") or [])]
    return Run(
        source=source, seed=results.get("seed", config.get("seed")), alpha=alpha, mode=mode,
        k=k, hours=hours, strategy=strategy, asc=_number(final.get("asc_macro_accuracy")),
        lwlrap=_number(final.get("aet_lwlrap")), task_gradients=gradients,
    )


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


def load_runs(root: str | Path) -> list[Run]:
    """Every run below `root`; an unreadable results.json is reported and left out."""
    runs = []
    for path in find_results(root):
        try:
            results = json.loads(path.read_text())
            if (results.get("config") or {}).get("mode") == "pretrain":
                continue  # stage 1 of a pre-train-then-fine-tune run, reported through its parent
            runs.append(run_from_results(results, str(path.parent)))
        except (OSError, json.JSONDecodeError, TypeError, ValueError) as error:
            logger.warning("skipping %s: %s", path, error)
    return runs


def load_wandb_runs(project: str, timeout: int = 30) -> list[Run]:
    """Finished runs of a W&B project ("entity/project"), from their config and summary.

    The summary holds the last logged `eval/*` values (results.json holds the best epoch's).
    """
    try:
        import wandb

        api = wandb.Api(timeout=timeout)
        wandb_runs = list(api.runs(project, filters={"state": "finished"}))
    except Exception as error:  # offline, no login, unknown project: say so instead of a traceback
        raise RuntimeError(f"--wandb_project {project}: could not read runs from W&B ({type(error).__name__}: {error})") from error
    runs = []
    for wandb_run in wandb_runs:
        config = {key: value for key, value in dict(wandb_run.config).items() if not key.startswith("_")}
        summary = dict(wandb_run.summary)
        results = {"config": config, "alpha": config.get("alpha"), "seed": config.get("seed"),
                   "final": {"asc_macro_accuracy": summary.get("eval/asc_macro_accuracy"),
                             "aet_lwlrap": summary.get("eval/aet_lwlrap")}}
        runs.append(run_from_results(results, f"wandb:{wandb_run.path}" if hasattr(wandb_run, "path") else str(wandb_run.id)))
    return runs


# --- slicing and statistics ---------------------------------------------------------------------------


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


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """Mean, sample standard deviation (ddof=1; 0 for one run) and count of the known values."""
    known = np.array([value for value in values if value is not None], dtype=float)
    if known.size == 0:
        return None, None, 0
    std = float(known.std(ddof=1)) if known.size > 1 else 0.0
    return float(known.mean()), std, int(known.size)


def sort_values(factor: str, values: Iterable) -> list:
    order = {"strategy": STRATEGY_ORDER, "mode": MODE_ORDER}.get(factor)
    if order:
        return sorted(values, key=lambda value: (order.index(value) if value in order else len(order), str(value)))
    return sorted(values)


def group_table(runs: list[Run], factor: str) -> list[dict]:
    """One row per value of `factor`: n and mean ± std of scene accuracy and lwlrap over the runs (seeds)."""
    rows = []
    for value in sort_values(factor, {run.factor(factor) for run in runs}):
        members = [run for run in runs if run.factor(factor) == value]
        asc_mean, asc_std, asc_n = mean_std(run.asc for run in members)
        lw_mean, lw_std, lw_n = mean_std(run.lwlrap for run in members)
        rows.append({"factor": factor, "value": value, "runs": len(members), "seeds": sorted({run.seed for run in members if run.seed is not None}),
                     "asc_macro_accuracy_mean": asc_mean, "asc_macro_accuracy_std": asc_std, "asc_n": asc_n,
                     "aet_lwlrap_mean": lw_mean, "aet_lwlrap_std": lw_std, "aet_n": lw_n})
    return rows


def pearson(runs: list[Run], factor: str) -> dict:
    """Pearson r of scene accuracy with `factor` over the individual runs (scipy.stats.pearsonr)."""
    from scipy.stats import pearsonr

    pairs = [(float(run.factor(factor)), run.asc) for run in runs if run.factor(factor) is not None and run.asc is not None]
    x, y = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    if len(pairs) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"r": None, "p": None, "n": len(pairs), "note": "needs 3+ runs with varying values"}
    result = pearsonr(x, y)
    return {"r": float(result.statistic), "p": float(result.pvalue), "n": len(pairs)}


def baseline(runs: list[Run], alpha: float, metric: str) -> tuple[float | None, float | None, int]:
    """Mean ± std of `metric` ("asc" or "lwlrap") over the single-task runs at `alpha` (0: ASC only, 1: AET only)."""
    return mean_std(getattr(run, metric) for run in runs if run.alpha == alpha and run.mode == "joint")


# --- figures ------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _series(rows: list[dict], metric: str) -> tuple[list, np.ndarray, np.ndarray]:
    kept = [row for row in rows if row[f"{metric}_mean"] is not None]
    return ([row["value"] for row in kept], np.array([row[f"{metric}_mean"] for row in kept]),
            np.array([row[f"{metric}_std"] for row in kept]))


def _baseline_line(axis, stats: tuple, label: str, color: str) -> None:
    mean, std, n = stats
    if mean is None:
        return
    axis.axhline(mean, color=color, linestyle="--", linewidth=1.2, label=f"{label} ({mean:.3f}, n={n})")
    axis.axhspan(mean - std, mean + std, color=color, alpha=0.12)


def plot_alpha(runs: list[Run], path: Path, everything: list[Run]) -> None:
    """Figure 2: scene accuracy and lwlrap against alpha; the alpha=0 and alpha=1 baselines as lines.

    Right-hand panels zoom on alpha >= 0.9, where the paper's grid is dense (step 0.01).
    """
    plt = _pyplot()
    joint = [run for run in runs if run.alpha is not None and 0.0 < run.alpha < 1.0]
    rows = group_table(joint, "alpha")
    figure, axes = plt.subplots(2, 2, figsize=(10, 7), sharey="row", gridspec_kw={"width_ratios": [2, 1]})
    for row_axes, metric, base_alpha, name, base_label, color in (
        (axes[0], "asc_macro_accuracy", 0.0, "scene macro accuracy", "ASC only (alpha = 0)", "tab:blue"),
        (axes[1], "aet_lwlrap", 1.0, "event lwlrap", "AET only (alpha = 1)", "tab:orange"),
    ):
        x, mean, std = _series(rows, metric)
        stats = baseline(everything, base_alpha, "asc" if metric.startswith("asc") else "lwlrap")
        for axis in row_axes:
            axis.errorbar(x, mean, yerr=std, marker="o", markersize=4, capsize=3, color=color, label="joint (mean ± std over seeds)")
            _baseline_line(axis, stats, base_label, "gray")
            axis.grid(alpha=0.3)
        row_axes[0].set_ylabel(name)
        row_axes[0].set_xlim(-0.02, 1.02)
        row_axes[1].set_xlim(0.895, 1.005)
        row_axes[0].legend(loc="lower left", fontsize=8)
    for axis, label in zip(axes[1], (LABELS["alpha"], "alpha (zoom on 0.9 to 1)")):
        axis.set_xlabel(label)
    figure.suptitle(FIGURES["alpha"][1])
    _save(figure, path)


def plot_bars(rows: list[dict], factor: str, path: Path, title: str, everything: list[Run]) -> None:
    """Figures 3a and 5: scene accuracy per strategy / training mode (`group_table` rows), mean ± std over seeds."""
    plt = _pyplot()
    values, mean, std = _series(rows, "asc_macro_accuracy")
    counts = [row["asc_n"] for row in rows if row["asc_macro_accuracy_mean"] is not None]
    figure, axis = plt.subplots(figsize=(6, 4.5))
    positions = np.arange(len(values))
    axis.bar(positions, mean, yerr=std, capsize=5, color="tab:blue", alpha=0.8, label="mean ± std over seeds")
    reference = baseline(everything, 0.0, "asc")
    _baseline_line(axis, reference, "ASC only (alpha = 0)", "gray")
    axis.set_xticks(positions, [f"{value}\n(n = {n})" for value, n in zip(values, counts)])
    lows = list(mean - std) + ([reference[0] - reference[1]] if reference[0] is not None else [])
    low = min(lows) if lows else 0.0
    axis.set_ylim(max(0.0, low - 0.05), None)  # bars start near the data, as in the paper; the axis says where
    axis.set_xlabel(LABELS[factor])
    axis.set_ylabel("scene macro accuracy")
    axis.set_title(title, fontsize=10)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(loc="best", fontsize=8)
    _save(figure, path)


def plot_line(rows: list[dict], factor: str, path: Path, title: str, correlation: dict, everything: list[Run]) -> None:
    """Figures 3b and 4: scene accuracy against T or k (log axis; `group_table` rows), mean ± std, with Pearson r
    in the legend."""
    plt = _pyplot()
    x, mean, std = _series(rows, "asc_macro_accuracy")
    figure, axis = plt.subplots(figsize=(6, 4.5))
    label = "mean ± std over seeds"
    if correlation.get("r") is not None:
        label += f"\nPearson r = {correlation['r']:.3f}, p = {correlation['p']:.2g} (n = {correlation['n']})"
    axis.errorbar(x, mean, yerr=std, marker="o", capsize=4, color="tab:blue", label=label)
    _baseline_line(axis, baseline(everything, 0.0, "asc"), "ASC only (alpha = 0)", "gray")
    if len(x) and min(x) > 0:
        axis.set_xscale("log")  # the grids double (11, 22, 45, ... h)
    axis.set_xticks(x, [f"{value:g}" for value in x])
    axis.minorticks_off()
    axis.set_xlabel(LABELS[factor])
    axis.set_ylabel("scene macro accuracy")
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(loc="best", fontsize=8)
    _save(figure, path)


def gradient_table(runs: list[Run]) -> list[dict]:
    """Per alpha: mean ± std over runs of each run's mean task-gradient cosine."""
    per_run = [(run.alpha, float(np.mean([entry["cosine"] for entry in run.task_gradients if entry.get("cosine") is not None])))
               for run in runs if run.alpha is not None and any(entry.get("cosine") is not None for entry in run.task_gradients)]
    rows = []
    for alpha in sorted({alpha for alpha, _ in per_run}):
        mean, std, n = mean_std(cosine for a, cosine in per_run if a == alpha)
        rows.append({"alpha": alpha, "cosine_mean": mean, "cosine_std": std, "runs": n})
    return rows


def plot_gradients(rows: list[dict], path: Path) -> None:
    """Cosine between the ASC and AET gradients of the shared encoder, against alpha."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4.5))
    axis.errorbar([row["alpha"] for row in rows], [row["cosine_mean"] for row in rows], yerr=[row["cosine_std"] for row in rows],
                  marker="o", capsize=3, color="tab:green", label="mean over steps, ± std over seeds")
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
    """Write the figures, summary.csv, summary.md and summary.json into `output_dir`; return the summary."""
    if not runs:
        raise ValueError("no runs to report (no results.json found)")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"runs": len(runs), "figures": {}, "skipped": {}, "slices": {}, "groups": {}, "pearson": {}}
    for factor in FACTORS:
        members, fixed = factor_slice(runs, factor)
        values = {run.factor(factor) for run in members}
        if factor in ("hours", "k"):
            summary["pearson"][factor] = pearson(members, factor)
        if len(values) < 2:
            summary["skipped"][factor] = f"{len(values)} distinct value(s) of {factor} in the runs"
            continue
        summary["slices"][factor] = {"fixed": fixed, "runs": len(members)}
        summary["groups"][factor] = group_table(members, factor)
        name, title = FIGURES[factor]
        if factor == "alpha":
            plot_alpha(members, output_dir / name, runs)
        elif factor in ("strategy", "mode"):
            plot_bars(summary["groups"][factor], factor, output_dir / name, title, runs)
        else:
            plot_line(summary["groups"][factor], factor, output_dir / name, title, summary["pearson"][factor], runs)
        summary["figures"][factor] = name
    gradients = gradient_table(runs)
    if len(gradients) >= 1:
        plot_gradients(gradients, output_dir / GRADIENT_FIGURE)
        summary["figures"]["task_gradients"] = GRADIENT_FIGURE
        summary["task_gradients"] = gradients
    else:
        summary["skipped"]["task_gradients"] = "no run's history has task_gradients"
    atomic_write_text(output_dir / "summary.csv", to_csv(summary["groups"]))
    atomic_write_text(output_dir / "summary.md", to_markdown(summary))
    atomic_write_json(output_dir / "summary.json", summary)
    return summary


CSV_COLUMNS = ("factor", "value", "runs", "asc_macro_accuracy_mean", "asc_macro_accuracy_std",
               "aet_lwlrap_mean", "aet_lwlrap_std", "asc_n", "aet_n")


def to_csv(groups: dict[str, list[dict]]) -> str:
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for rows in groups.values():
        for row in rows:
            writer.writerow({key: "" if row[key] is None else format_value(row[key]) if key == "value" else row[key] for key in CSV_COLUMNS})
    return stream.getvalue()


def format_value(value: Any) -> str:
    """90.0 -> "90", 0.95 -> "0.95": values as they are written in the sweeps."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _pm(mean: float | None, std: float | None) -> str:
    return "–" if mean is None else f"{mean:.4f} ± {std:.4f}"


def to_markdown(summary: dict) -> str:
    lines = ["# Results", "", f"{summary['runs']} runs. Mean ± sample std over runs (seeds) per group.", ""]
    for factor, rows in summary["groups"].items():
        fixed = ", ".join(f"{key}={format_value(value)}" for key, value in summary["slices"][factor]["fixed"].items() if value is not None)
        lines += [f"## {LABELS[factor]}", "", f"Fixed: {fixed or '—'}. Figure: `{summary['figures'][factor]}`.", "",
                  "| value | runs | scene macro accuracy | event lwlrap |", "|---|---|---|---|"]
        lines += [f"| {format_value(row['value'])} | {row['runs']} | {_pm(row['asc_macro_accuracy_mean'], row['asc_macro_accuracy_std'])} "
                  f"| {_pm(row['aet_lwlrap_mean'], row['aet_lwlrap_std'])} |" for row in rows]
        lines.append("")
    lines += ["## Pearson correlation of scene accuracy (individual runs)", "", "| with | r | p | runs |", "|---|---|---|---|"]
    for factor, result in summary["pearson"].items():
        r, p = result.get("r"), result.get("p")
        lines.append(f"| {LABELS[factor]} | {'–' if r is None else f'{r:.4f}'} | {'–' if p is None else f'{p:.4g}'} | {result['n']} |")
    if summary["skipped"]:
        lines += ["", "## Not drawn", ""] + [f"- {factor}: {reason}" for factor, reason in summary["skipped"].items()]
    return "\n".join(lines) + "\n"
