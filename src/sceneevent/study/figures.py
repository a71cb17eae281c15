"""The report's figures, in the layout of Parikh et al. (Interspeech 2022): Figure 2 (alpha), 3a (strategy),
3b (hours T), 4 (k), 5 (pre-training vs joint), the batch composition and the task-gradient cosines; and the
controls of issue 26: the regularisers beside joint training, alpha curves per T and the tuned control. Each with
95 % CIs over seeds."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..io_utils import staged_file
from .factors import AET_ONLY, ASC_ONLY, LABELS, GroupRow, baseline, group_table
from ..markup import plot_text
from .run_readings import METRICS, RunReading
from .seed_statistics import GroupStats

FIGURES = {  # factor -> (file name, title)
    "alpha": ("fig2_alpha.png", "Figure 2: scene and event performance against alpha"),
    "strategy": ("fig3a_strategy.png", "Figure 3a: scene accuracy by event-class strategy"),
    "hours": ("fig3b_hours.png", "Figure 3b: scene accuracy against hours T of event audio"),
    "k": ("fig4_k.png", "Figure 4: scene accuracy against the number k of event classes"),
    "mode": ("fig5_pretrain_vs_joint.png", "Figure 5: pre-training on events + fine-tuning vs joint training"),
    "asc_batch_size": ("batch_composition.png", "Batch composition (§2): scene accuracy against scene clips per batch"),
}
GRADIENT_FIGURE = "task_gradients_alpha.png"
CI_LABEL = "mean, 95 % CI over seeds"


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: Path) -> None:
    """Write `figure` as a PNG at `path` (atomically) and close it."""
    figure.tight_layout()
    with staged_file(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")  # the temporary name does not end in .png
    pyplot().close(figure)


def draw_factor(factor: str, members: list[RunReading], summary: dict, output_dir: Path, everything: list[RunReading]) -> None:
    name, title = FIGURES[factor]
    rows = summary["groups"][factor]
    if factor == "alpha":
        plot_alpha(members, output_dir / name, everything)
    elif factor in ("strategy", "mode"):
        plot_bars(rows, factor, output_dir / name, title, everything)
    else:
        plot_line(rows, factor, output_dir / name, title, summary["pearson"].get(factor, {}), everything)


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


def floor_value(runs: list[RunReading]) -> tuple[float, int] | None:
    """Mean floor of the runs that carry one, and their count; None when none does."""
    floors = [run.floor_asc_macro_accuracy for run in runs if run.floor_asc_macro_accuracy is not None]
    return (float(np.mean(floors)), len(floors)) if floors else None


def _floor_line(axis, everything: list[RunReading]) -> None:
    """The scene floor (training/floor.py) as a dashed line: what a linear model on per-mel statistics reads."""
    floor = floor_value(everything)
    if floor is not None:
        axis.axhline(floor[0], color="tab:red", linestyle="--", linewidth=1.2,
                     label=f"floor (logistic regression on per-mel mean, sd): {floor[0]:.3f}, n = {floor[1]}")


def plot_alpha(runs: list[RunReading], path: Path, everything: list[RunReading]) -> None:
    """Figure 2: scene accuracy and lwlrap against alpha; the alpha=0 and alpha=1 baselines as lines.

    Right-hand panels zoom on alpha >= 0.9, where the paper's grid is dense (step 0.01).
    """
    plt = pyplot()
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
            if metric == "asc_macro_accuracy":
                _floor_line(axis, everything)
            axis.grid(alpha=0.3)
        row_axes[0].set_ylabel(METRICS[metric])
        row_axes[0].set_xlim(-0.02, 1.02)
        row_axes[1].set_xlim(0.895, 1.005)
        row_axes[0].legend(loc="lower left", fontsize=8)
    for axis, label in zip(axes[1], (LABELS["alpha"], "alpha (zoom on 0.9 to 1)")):
        axis.set_xlabel(label)
    figure.suptitle(FIGURES["alpha"][1])
    save_figure(figure, path)


def plot_bars(rows: list[GroupRow], factor: str, path: Path, title: str, everything: list[RunReading]) -> None:
    """Figures 3a and 5: scene accuracy per strategy / training mode, mean and 95 % CI over seeds."""
    plt = pyplot()
    values, mean, half = _series(rows, "asc_macro_accuracy")
    counts = [row.asc_macro_accuracy.n for row in rows if row.asc_macro_accuracy.mean is not None]
    figure, axis = plt.subplots(figsize=(6, 4.5))
    positions = np.arange(len(values))
    axis.bar(positions, mean, yerr=half, capsize=5, color="tab:blue", alpha=0.8, label=CI_LABEL)
    reference = baseline(everything, 0.0, "asc_macro_accuracy")
    _baseline_line(axis, reference, ASC_ONLY, "gray")
    _floor_line(axis, everything)
    axis.set_xticks(positions, [f"{plot_text(value)}\n(n = {n})" for value, n in zip(values, counts)])
    floor = floor_value(everything)
    lows = list(mean - np.nan_to_num(half)) + [reference.ci_low if reference.ci_low is not None else reference.mean,
                                               floor[0] if floor else None]
    lows = [low for low in lows if low is not None]
    axis.set_ylim(max(0.0, min(lows, default=0.0) - 0.05), None)  # bars start near the data, as in the paper
    axis.set_xlabel(LABELS[factor])
    axis.set_ylabel(METRICS["asc_macro_accuracy"])
    axis.set_title(title, fontsize=10)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(loc="best", fontsize=8)
    save_figure(figure, path)


def plot_line(rows: list[GroupRow], factor: str, path: Path, title: str, correlation: dict, everything: list[RunReading]) -> None:
    """Figures 3b and 4 and the batch composition: scene accuracy against T, k or the scene clips per batch (log axis),
    mean and 95 % CI, with Pearson r in the legend where the report has one."""
    plt = pyplot()
    x, mean, half = _series(rows, "asc_macro_accuracy")
    figure, axis = plt.subplots(figsize=(6, 4.5))
    label = CI_LABEL
    if correlation.get("r") is not None:
        label += f"\nPearson r = {correlation['r']:.3f}, p = {correlation['p']:.2g} (n = {correlation['n']})"
    axis.errorbar(x, mean, yerr=half, marker="o", capsize=4, color="tab:blue", label=label)
    _baseline_line(axis, baseline(everything, 0.0, "asc_macro_accuracy"), ASC_ONLY, "gray")
    _floor_line(axis, everything)
    if len(x) and min(x) > 0:
        axis.set_xscale("log", base=2 if factor == "asc_batch_size" else 10)  # the grids double (11, 22, 45, ... h; 8, 16, ... clips)
    axis.set_xticks(x, [f"{value:g}" for value in x])
    axis.minorticks_off()
    axis.set_xlabel(LABELS[factor])
    axis.set_ylabel(METRICS["asc_macro_accuracy"])
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(loc="best", fontsize=8)
    save_figure(figure, path)


def plot_gradients(rows: list[dict], path: Path) -> None:
    """Cosine between the ASC and AET gradients of the shared encoder, against alpha."""
    plt = pyplot()
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
    save_figure(figure, path)


REGULARISER_FIGURE = "regularisers_vs_joint.png"
ALPHA_PER_HOURS_FIGURE = "alpha_per_hours.png"
TUNED_CONTROL_FIGURE = "tuned_control.png"


def plot_setting_bars(rows: list, comparisons: dict, path: Path, title: str, xlabel: str, highlight: str) -> None:
    """Scene accuracy per named setting (rows with `name` and `asc_macro_accuracy`), mean and 95 % CI, with n and
    the paired-t p against `highlight` (drawn in another colour) under each bar."""
    plt = pyplot()
    kept = [row for row in rows if row.asc_macro_accuracy.mean is not None]
    figure, axis = plt.subplots(figsize=(max(6.0, 1.0 * len(kept) + 2), 4.5))
    positions = np.arange(len(kept))
    axis.bar(positions, [row.asc_macro_accuracy.mean for row in kept], yerr=[row.asc_macro_accuracy.ci_half_width for row in kept],
             capsize=5, alpha=0.8, color=["tab:orange" if row.name == highlight else "tab:blue" for row in kept], label=CI_LABEL)
    labels = []
    for row in kept:
        comparison = comparisons.get(row.name)
        p = "" if comparison is None or comparison.t_test_p is None else f"\np = {comparison.t_test_p:.2g}"
        labels.append(f"{plot_text(row.name)}\n(n = {row.asc_macro_accuracy.n}){p}")
    axis.set_xticks(positions, labels, fontsize=8)
    lows = [row.asc_macro_accuracy.ci_low if row.asc_macro_accuracy.ci_low is not None else row.asc_macro_accuracy.mean for row in kept]
    axis.set_ylim(max(0.0, min(lows, default=0.0) - 0.05), None)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(METRICS["asc_macro_accuracy"])
    axis.set_title(title, fontsize=10)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(loc="best", fontsize=8)
    save_figure(figure, path)


def plot_alpha_per_hours(curves: dict[float, list[GroupRow]], path: Path, everything: list[RunReading]) -> None:
    """Scene accuracy against alpha, one curve per hours T of event audio (mean, 95 % CI over seeds), with the ASC-only
    baseline; a right-hand panel zooms on alpha >= 0.9."""
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True, gridspec_kw={"width_ratios": [2, 1]})
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(curves)))
    for colour, (hours, rows) in zip(colours, curves.items()):
        x, mean, half = _series(rows, "asc_macro_accuracy")
        n = min(row.asc_macro_accuracy.n for row in rows)
        for axis in axes:
            axis.errorbar(x, mean, yerr=half, marker="o", markersize=3, capsize=2, color=colour, label=f"T = {hours:g} h (n ≥ {n})")
    for axis in axes:
        _baseline_line(axis, baseline(everything, 0.0, "asc_macro_accuracy"), ASC_ONLY, "gray")
        axis.grid(alpha=0.3)
        axis.set_xlabel(LABELS["alpha"])
    axes[0].set_xlim(-0.02, 1.02)
    axes[1].set_xlim(0.895, 1.005)
    axes[0].set_ylabel(METRICS["asc_macro_accuracy"])
    axes[0].legend(loc="lower left", fontsize=7)
    figure.suptitle(f"Scene accuracy against alpha per hours T of event audio (§4.1; {CI_LABEL})")
    save_figure(figure, path)
