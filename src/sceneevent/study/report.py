"""The report over a set of runs: per factor its slice, figure, group statistics and paired comparisons, in
the layout of Parikh et al. (Interspeech 2022), written as summary.csv, summary.md and summary.json.

The runs come from `run_readings` (results.json files or W&B), the slices and comparisons from `factors`,
the numbers from `seed_statistics`, the figures from `figures`. Runs with the same configuration and seed (a
copied run folder) count once, unless they recorded different event subsets. Values from the runs appear in
summary.md as text (`markup`), never as markup.

The paper's figures draw the runs at the default regularisation only; the sections of `controls` (regularisers
beside joint training, alpha curves per T, the tuned control from a `tuned_control.json`) follow when the runs
hold them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..io_utils import atomic_write_json, atomic_write_text
from .controls import alpha_per_hours_section, curve_table, regulariser_section, tuned_control_section
from .factors import FACTORS, LABELS, GroupRow, factor_comparisons, factor_slice, format_value, group_table
from .figures import (ALPHA_PER_HOURS_FIGURE, FIGURES, GRADIENT_FIGURE, REGULARISER_FIGURE, TUNED_CONTROL_FIGURE, draw_factor,
                      floor_value, plot_alpha_per_hours, plot_gradients, plot_setting_bars)
from ..markup import csv_cell, markdown_text
from .regularisation import DEFAULTS
from .run_readings import METRICS, RunReading, drop_duplicates
from .seed_statistics import POWER, SIGNIFICANCE, GroupStats, PairedComparison, describe, pearson

logger = logging.getLogger(__name__)


def write_report(runs: list[RunReading], output_dir: str | Path, tuned_control: dict | None = None) -> dict:
    """Write the figures, summary.csv, summary.md and summary.json into `output_dir`; return the summary.

    `tuned_control`: a selection (`tuned_control.read_selection`) whose re-runs the runs hold, for its section.
    In the returned summary, groups and comparisons are GroupRow / PairedComparison objects; summary.json
    holds them as plain dicts.
    """
    if not runs:
        raise ValueError("no runs to report (no results.json found)")
    unique, duplicates = drop_duplicates(runs)
    warn_duplicates(duplicates)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    floor = floor_value(unique)
    summary: dict[str, Any] = {"runs": len(unique), "runs_read": len(runs), "duplicates": duplicates, "figures": {},
                               "skipped": {}, "slices": {}, "groups": {}, "comparisons": {}, "pearson": {},
                               "floor": {"asc_macro_accuracy": floor[0], "runs": floor[1]} if floor else None}
    paper = [run for run in unique if run.regularisation_label == DEFAULTS]  # the regulariser studies' runs are their own
    for factor in FACTORS:
        members, fixed = factor_slice(paper, factor)
        values = {run.factor(factor) for run in members}
        if factor in ("hours", "k"):
            summary["pearson"][factor] = pearson(members, factor)
        if len(values) < 2:
            summary["skipped"][factor] = f"{len(values)} distinct value(s) of {factor} in the runs"
            continue
        summary["slices"][factor] = {"fixed": fixed, "runs": len(members)}
        summary["groups"][factor] = group_table(members, factor)
        summary["comparisons"][factor] = factor_comparisons(members, factor, paper)
        draw_factor(factor, members, summary, output_dir, paper)
        summary["figures"][factor] = FIGURES[factor][0]
    add_controls(summary, unique, output_dir, tuned_control)
    gradients = gradient_table(paper)
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


def add_controls(summary: dict, runs: list[RunReading], output_dir: Path, tuned_control: dict | None) -> None:
    """The sections of `controls` the runs hold, each with its figure."""
    regularisers = regulariser_section(runs)
    if regularisers is not None:
        by_setting = {comparison.setting: comparison for comparison in regularisers["comparisons"]}
        plot_setting_bars(regularisers["rows"], by_setting, output_dir / REGULARISER_FIGURE,
                          "Scene-only regularisers beside joint training (p: paired t against joint)", "scene only (alpha = 0)",
                          regularisers["joint"])
        summary["regularisers"], summary["figures"]["regularisers"] = regularisers, REGULARISER_FIGURE
    per_hours = alpha_per_hours_section(runs)
    if per_hours is not None:
        plot_alpha_per_hours(per_hours["curves"], output_dir / ALPHA_PER_HOURS_FIGURE,
                             [run for run in runs if run.regularisation_label == DEFAULTS])
        summary["alpha_per_hours"], summary["figures"]["alpha_per_hours"] = per_hours, ALPHA_PER_HOURS_FIGURE
    if tuned_control is not None:
        section = tuned_control_section(runs, tuned_control)
        if section["comparison"] is not None:
            joint_row = section["rows"][1]
            plot_setting_bars(section["rows"], {joint_row.name: section["comparison"]}, output_dir / TUNED_CONTROL_FIGURE,
                              "Tuned control: both sides chosen on validation, read on test", "", joint_row.name)
            summary["figures"]["tuned_control"] = TUNED_CONTROL_FIGURE
        summary["tuned_control"] = section


def warn_duplicates(duplicates: dict[str, list[str]]) -> None:
    for kept, copies in duplicates.items():
        logger.warning("same configuration and seed as %s, counted once (left out): %s", kept, ", ".join(copies))


def gradient_table(runs: list[RunReading]) -> list[dict]:
    """Per alpha: the statistics over runs of each run's mean task-gradient cosine."""
    per_run = [(run.alpha, float(np.mean([entry["cosine"] for entry in run.task_gradients if entry.get("cosine") is not None])))
               for run in runs if run.alpha is not None and any(entry.get("cosine") is not None for entry in run.task_gradients)]
    rows = []
    for alpha in sorted({alpha for alpha, _ in per_run}):
        cosine = describe(value for a, value in per_run if a == alpha)
        rows.append({"alpha": alpha, "cosine_mean": cosine.mean, "cosine_sd": cosine.sd, "cosine_ci_low": cosine.ci_low,
                     "cosine_ci_high": cosine.ci_high, "runs": cosine.n})
    return rows


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
            writer.writerow({key: "" if value is None else csv_cell(value) for key, value in record.items()})
    return stream.getvalue()


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
    if summary.get("floor"):
        lines += [f"Floor: {summary['floor']['asc_macro_accuracy']:.4f} test scene macro accuracy, the mean over "
                  f"{summary['floor']['runs']} run(s) of a logistic regression on per-mel mean and sd of the same log-mels "
                  "(training/floor.py; the dashed red line in the figures). A setting below it has learnt less than that.", ""]
    for factor, rows in summary["groups"].items():
        fixed = ", ".join(f"{key}={markdown_text(format_value(value))}" for key, value in summary["slices"][factor]["fixed"].items()
                          if value is not None)
        lines += [f"## {LABELS[factor]}", "", f"Fixed: {fixed or '—'}. Figure: `{summary['figures'][factor]}`.", "",
                  "| value | runs | scene mean | sd | 95 % CI | n | lwlrap mean | sd | 95 % CI | n |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {markdown_text(format_value(row.value))} | {row.runs} | {stats_cells(row.asc_macro_accuracy)} | {stats_cells(row.aet_lwlrap)} |"
                  for row in rows]
        lines += [""] + comparison_table(summary["comparisons"][factor])
    lines += ["## Pearson correlation of scene accuracy (individual runs)", "", "| with | r | p | runs |", "|---|---|---|---|"]
    for factor, result in summary["pearson"].items():
        r, p = result.get("r"), result.get("p")
        lines.append(f"| {LABELS[factor]} | {'–' if r is None else f'{r:.4f}'} | {'–' if p is None else f'{p:.4g}'} | {result['n']} |")
    lines += controls_markdown(summary)
    if summary["duplicates"]:
        lines += ["", "## Duplicate runs (same configuration and seed, counted once)", ""]
        lines += [f"- kept {markdown_text(kept)}; left out {', '.join(map(markdown_text, copies))}"
                  for kept, copies in summary["duplicates"].items()]
    if summary["skipped"]:
        lines += ["", "## Not drawn", ""] + [f"- {factor}: {reason}" for factor, reason in summary["skipped"].items()]
    return "\n".join(lines) + "\n"


def comparison_table(comparisons: list[PairedComparison]) -> list[str]:
    """Markdown lines: the paired comparisons of one factor as a table, then in words."""
    if not comparisons:
        return []
    # the names and notes carry values from the runs (a strategy, a folder): shown as text, not as markup
    comparisons = [dataclasses.replace(comparison, setting=markdown_text(comparison.setting), baseline=markdown_text(comparison.baseline),
                                       notes=[markdown_text(note) for note in comparison.notes]) for comparison in comparisons]
    lines = ["Paired by seed (setting − baseline):", "",
             "| setting | baseline | metric | n pairs | difference | 95 % CI | paired t p | Wilcoxon p | detectable (power 0.8) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for comparison in comparisons:
        lines.append(f"| {comparison.setting} | {comparison.baseline} | {METRICS[comparison.metric]} | {comparison.n_pairs} "
                     f"| {_number_text(comparison.difference.mean, signed=True)} | {_ci_text(comparison.difference, signed=True)} "
                     f"| {_p_text(comparison.t_test_p)} | {_p_text(comparison.wilcoxon_p)} | {_number_text(comparison.detectable_difference)} |")
    lines += [""] + [f"- {comparison_sentence(comparison)}" for comparison in comparisons] + [""]
    return lines


def _setting_table(rows: list) -> list[str]:
    lines = ["| setting | runs | scene mean | sd | 95 % CI | n |", "|---|---|---|---|---|---|"]
    return lines + [f"| {markdown_text(row.name)} | {row.runs} | {stats_cells(row.asc_macro_accuracy)} |" for row in rows]


def controls_markdown(summary: dict) -> list[str]:
    """The sections of `controls` (regularisers, alpha per T, the tuned control) the summary holds."""
    lines = []
    regularisers = summary.get("regularisers")
    if regularisers:
        lines += ["", "## Regularisers beside joint training", "",
                  "Scene only (alpha = 0) with no regulariser, each alone and all of them, against joint training with all of "
                  f"them at the balanced alpha. Figure: `{summary['figures']['regularisers']}`.", ""]
        lines += _setting_table(regularisers["rows"]) + [""] + comparison_table(regularisers["comparisons"])
    per_hours = summary.get("alpha_per_hours")
    if per_hours:
        hours, alphas, cells = curve_table(per_hours["curves"])
        fixed = ", ".join(f"{key}={markdown_text(format_value(value))}" for key, value in per_hours["fixed"].items() if value is not None)
        lines += ["", "## Alpha per hours T of event audio", "",
                  f"Scene macro accuracy, mean [95 % CI] (n) per alpha and T. Fixed: {fixed or '—'}. "
                  f"Figure: `{summary['figures']['alpha_per_hours']}`.", "",
                  "| alpha | " + " | ".join(f"T = {value:g} h" for value in hours) + " |", "|---|" + "---|" * len(hours)]
        for alpha in alphas:
            cell = [cells.get((value, alpha)) for value in hours]
            lines.append(f"| {alpha:g} | " + " | ".join("–" if stats is None else f"{_number_text(stats.mean)} {_ci_text(stats)} ({stats.n})"
                                                      for stats in cell) + " |")
        lines += [""] + comparison_table(per_hours["comparisons"])
    control = summary.get("tuned_control")
    if control:
        lines += tuned_control_markdown(control, summary["figures"].get("tuned_control"))
    return lines


def tuned_control_markdown(control: dict, figure: str | None) -> list[str]:
    """Which setting won each search, the budget each side had, and the test comparison with n, CI and p."""
    selection = control["selection"]
    scene, joint = selection["scene_only"], selection["joint"]
    budget = "equal budgets" if selection.get("budgets_equal") else "UNEQUAL budgets"
    lines = ["", "## Tuned control: joint training against a scene-only model tuned as carefully", "",
             f"Both settings were chosen on the validation split ({markdown_text(selection.get('selected_on', 'validation'))}), "
             f"with {budget}: the scene-only regularisation from {scene['budget']} search run(s), the joint model's alpha from "
             f"{joint['budget']} search run(s), on seed(s) {scene['search_seeds']} and {joint['search_seeds']}.", "",
             f"- scene only, chosen: {markdown_text(scene['setting_text'])} (validation {_number_text(scene['validation_asc_macro_accuracy'])}, "
             f"run {markdown_text(scene['run'])})",
             f"- joint, chosen: alpha = {joint['alpha']:g} (validation {_number_text(joint['validation_asc_macro_accuracy'])}, "
             f"run {markdown_text(joint['run'])})", "",
             "Test, re-run on the seeds neither search used" + (f". Figure: `{figure}`." if figure else "."), ""]
    lines += _setting_table(control["rows"]) + [""]
    if control["comparison"] is not None:
        lines += comparison_table([control["comparison"]])
    lines += [f"- {markdown_text(note)}" for note in control["notes"]]
    return lines
