"""The report's sections beyond the paper's factors (issue 26): the regularisers beside joint training, the alpha
curves per hours T, and the tuned control. Each takes the runs the report read and returns its rows and paired
comparisons (`seed_statistics`), or None when the runs do not hold it.

- Regularisers (`sweeps/regularisers.yaml`): scene-only runs (alpha = 0) labelled by their regularisation
  (`none`, `dropout`, ..., `all`), against joint runs (0 < alpha < 1) trained with `all` of them: each setting is
  compared with joint, paired by seed (setting - joint).
- Alpha per T (`sweeps/alpha_hours.yaml`): at the default regularisation, scene accuracy per (T, alpha) on the
  event sets of the most common k and strategy; per T, alpha = 0.95 against ASC only.
- Tuned control (`tuned_control.select_control`'s file): the scene-only model at the regularisation its search chose
  on validation, against joint training at the alpha its search chose, on the seeds neither search used.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .factors import ASC_ONLY, PAPER_ALPHA, GroupRow, group_table, single_task_runs
from .regularisation import DEFAULTS, JOINT, PRESET_ORDER, same_setting
from .run_readings import RunReading
from .seed_statistics import GroupStats, compare_paired, describe

METRIC = "asc_macro_accuracy"


@dataclass
class SettingRow:
    """One named setting: its runs, seeds and scene accuracy over them."""

    name: str
    runs: int
    seeds: list[int]
    asc_macro_accuracy: GroupStats


def setting_row(name: str, runs: list[RunReading]) -> SettingRow:
    return SettingRow(name=name, runs=len(runs), seeds=sorted({run.seed for run in runs if run.seed is not None}),
                      asc_macro_accuracy=describe(getattr(run, METRIC) for run in runs))


def _joint_mode(run: RunReading) -> bool:
    return run.mode == "joint" and run.alpha is not None


def _alpha_text(runs: list[RunReading]) -> str:
    alphas = sorted({run.alpha for run in runs})
    return ", ".join(f"{alpha:.4g}" for alpha in alphas)


# --- the regularisers beside joint training -------------------------------------------------------------


def regulariser_section(runs: list[RunReading]) -> dict[str, Any] | None:
    """Scene-only settings of the regulariser comparison and joint training with all regularisers; None without
    joint runs or without a scene-only setting of the comparison."""
    joint = [run for run in runs if _joint_mode(run) and 0.0 < run.alpha < 1.0 and run.regularisation_label == "all"]
    scene_only = {name: [run for run in runs if _joint_mode(run) and run.alpha == 0.0 and run.regularisation_label == name]
                  for name in PRESET_ORDER if name != JOINT}
    scene_only = {name: members for name, members in scene_only.items() if members}
    if not joint or not scene_only:
        return None
    joint_name = f"{JOINT} (alpha = {_alpha_text(joint)})"
    rows = [setting_row(name, members) for name, members in scene_only.items()] + [setting_row(joint_name, joint)]
    comparisons = [compare_paired(members, joint, METRIC, name, joint_name) for name, members in scene_only.items()]
    return {"rows": rows, "comparisons": comparisons, "joint": joint_name}


# --- alpha curves per hours T ---------------------------------------------------------------------------


def alpha_per_hours_section(runs: list[RunReading]) -> dict[str, Any] | None:
    """Per hours T, the groups over alpha (0 < alpha <= 1) at the default regularisation, on the event sets of the
    most common (k, strategy, scene batch); None unless two or more T have two or more alphas."""
    joint = [run for run in runs if _joint_mode(run) and run.alpha > 0.0 and run.hours is not None
             and run.regularisation_label == DEFAULTS]
    if not joint:
        return None
    context = Counter((run.k, run.strategy, run.asc_batch_size) for run in joint).most_common(1)[0][0]
    members = [run for run in joint if (run.k, run.strategy, run.asc_batch_size) == context]
    curves = {}
    for hours in sorted({run.hours for run in members}):
        rows = [row for row in group_table([run for run in members if run.hours == hours], "alpha") if row.asc_macro_accuracy.mean is not None]
        if len(rows) >= 2:
            curves[hours] = rows
    if len(curves) < 2:
        return None
    scene_only = [run for run in single_task_runs(runs, 0.0) if run.regularisation_label == DEFAULTS]
    comparisons = []
    for hours in curves:
        at_paper = [run for run in members if run.hours == hours and math.isclose(run.alpha, PAPER_ALPHA)]
        if at_paper and scene_only:
            comparisons.append(compare_paired(at_paper, scene_only, METRIC, f"T={hours:g} h, alpha={PAPER_ALPHA:g}", ASC_ONLY))
    k, strategy, batch = context
    return {"curves": curves, "comparisons": comparisons, "fixed": {"k": k, "strategy": strategy, "asc_batch_size": batch}}


def curve_table(curves: dict[float, list[GroupRow]]) -> tuple[list[float], list[float], dict[tuple[float, float], GroupStats]]:
    """The T values, the alpha values and each (T, alpha) cell's scene statistics, for a table with a column per T."""
    cells = {(hours, row.value): row.asc_macro_accuracy for hours, rows in curves.items() for row in rows}
    return list(curves), sorted({alpha for _, alpha in cells}), cells


# --- the tuned control ----------------------------------------------------------------------------------


def tuned_control_section(runs: list[RunReading], selection: dict) -> dict[str, Any]:
    """The chosen scene-only setting and the chosen alpha, each re-run on seeds outside both searches, compared on
    test (joint - tuned scene only), with the budget each side's search had."""
    scene, joint_choice = selection["scene_only"], selection["joint"]
    excluded = set(scene["search_seeds"]) | set(joint_choice["search_seeds"])
    chosen = scene["setting"]
    tuned = [run for run in runs if _joint_mode(run) and run.alpha == 0.0 and run.seed not in excluded
             and same_setting(run.regularisation, chosen)]
    event_set = joint_choice.get("event_set") or {}
    joint = [run for run in runs if _joint_mode(run) and run.seed not in excluded and run.regularisation_label == DEFAULTS
             and math.isclose(run.alpha, joint_choice["alpha"], rel_tol=1e-9, abs_tol=1e-12)
             and all(event_set.get(key) is None or getattr(run, key) == event_set[key] for key in ("k", "hours", "strategy"))]
    joint_name, tuned_name = f"joint (alpha = {joint_choice['alpha']:g}, chosen on validation)", "scene only, tuned on validation"
    section = {"selection": selection, "rows": [setting_row(tuned_name, tuned), setting_row(joint_name, joint)], "comparison": None,
               "notes": []}
    if not tuned or not joint:
        missing = [name for name, members in ((tuned_name, tuned), (joint_name, joint)) if not members]
        section["notes"].append(f"no re-run of {' nor '.join(missing)} on seeds outside the searches ({sorted(excluded)}) "
                                "in these runs: run the sweeps select_control.py wrote")
        return section
    section["comparison"] = compare_paired(joint, tuned, METRIC, joint_name, tuned_name)
    return section
