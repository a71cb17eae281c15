"""Figures, tables and statistics over seeds of the paper's experiments from finished runs (results.json
files or a W&B project).

    python scripts/report.py outputs/sweeps --output_dir reports/paper
    python scripts/report.py --wandb_project my-entity/sceneevent --output_dir reports/wandb
    python scripts/report.py outputs/sweeps --tuned_control outputs/search/tuned_control.json --output_dir reports/paper

Writes into --output_dir: fig2_alpha.png, fig3a_strategy.png, fig3b_hours.png, fig4_k.png,
fig5_pretrain_vs_joint.png, batch_composition.png and task_gradients_alpha.png (each only when its factor varies
in the runs, drawn from the runs at the default regularisation; then, when the runs hold them,
regularisers_vs_joint.png, alpha_per_hours.png, and with --tuned_control tuned_control.png;
error bars are 95 % CIs over seeds), summary.csv, summary.md and summary.json (mean, sd, 95 % CI and n
per group; paired-by-seed differences against the baselines with t-test and Wilcoxon p-values and the
smallest detectable difference; Pearson r of scene accuracy with T and k). The CIs and p-values are
printed too. Results written before schema_version 2 (final epoch chosen on test data) are refused;
--skip_old_results leaves them out instead. Runs with the same configuration and seed count once.
W&B is contacted only with --wandb_project.
"""

import argparse
import logging
import sys

from sceneevent.study.factors import LABELS, format_value
from sceneevent.study.report import comparison_sentence, write_report
from sceneevent.study.run_readings import METRICS, load_runs, load_wandb_runs
from sceneevent.study.seed_statistics import GroupStats
from sceneevent.study.tuned_control import read_selection


def parse_args(args: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs_dir", nargs="?", help="Folder searched recursively for results.json files.")
    parser.add_argument("--wandb_project", default=None, help="Also read the finished runs of this W&B project (entity/project).")
    parser.add_argument("--output_dir", default="reports", help="Folder for the figures and tables.")
    parser.add_argument("--tuned_control", default=None,
                        help="tuned_control.json written by scripts/select_control.py (or its folder): adds the tuned control's "
                             "section (the chosen settings, both budgets, and their re-runs compared on test).")
    parser.add_argument("--skip_old_results", action="store_true",
                        help="Leave out (with a warning naming them) results older than schema_version 2 instead of stopping.")
    options = parser.parse_args(args)
    if options.runs_dir is None and options.wandb_project is None:
        parser.error("give a runs folder, --wandb_project, or both")
    return options


def group_text(name: str, stats: GroupStats) -> str:
    ci = f" [{stats.ci_low:.4f}, {stats.ci_high:.4f}]" if stats.ci_low is not None else ""
    return f"{name} {stats.mean:.4f}{ci} (n={stats.n})"


def print_summary(summary: dict, output_dir: str) -> None:
    duplicates = sum(len(copies) for copies in summary["duplicates"].values())
    print(f"{summary['runs']} runs ({duplicates} duplicate(s) counted once) → {output_dir}")
    for factor, name in summary["figures"].items():
        print(f"  drew {name}")
    for factor, reason in summary["skipped"].items():
        print(f"  skipped {factor}: {reason}")
    for factor, rows in summary["groups"].items():
        print(f"{LABELS[factor]}: mean [95 % CI] (n)")
        for row in rows:
            cells = [group_text(METRICS[metric], getattr(row, metric)) for metric in METRICS if getattr(row, metric).mean is not None]
            print(f"  {factor}={format_value(row.value)}: " + "; ".join(cells))
        for comparison in summary["comparisons"][factor]:
            print(f"  {comparison_sentence(comparison)}")
    for section in ("regularisers", "alpha_per_hours"):
        for comparison in (summary.get(section) or {}).get("comparisons", []):
            print(f"  {comparison_sentence(comparison)}")
    control = summary.get("tuned_control")
    if control:
        scene, joint = control["selection"]["scene_only"], control["selection"]["joint"]
        print(f"tuned control: scene only {scene['setting_text']} ({scene['budget']} search runs) vs joint alpha = "
              f"{joint['alpha']:g} ({joint['budget']} search runs)")
        for line in [comparison_sentence(control["comparison"])] if control["comparison"] else control["notes"]:
            print(f"  {line}")
    for factor, result in summary["pearson"].items():
        if result.get("r") is not None:
            print(f"Pearson r(scene accuracy, {factor}) = {result['r']:.3f} (p = {result['p']:.3g}, n = {result['n']})")


def main(args: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    options = parse_args(args)
    try:
        runs = load_runs(options.runs_dir, options.skip_old_results) if options.runs_dir else []
        if options.wandb_project:
            runs += load_wandb_runs(options.wandb_project, skip_old_results=options.skip_old_results)
        selection = read_selection(options.tuned_control) if options.tuned_control else None
        summary = write_report(runs, options.output_dir, tuned_control=selection)
    except (ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_summary(summary, options.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
