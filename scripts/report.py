"""Figures and tables of the paper's experiments from finished runs (results.json files or a W&B project).

    python scripts/report.py outputs/sweeps --output_dir reports/paper
    python scripts/report.py --wandb_project my-entity/sceneevent --output_dir reports/wandb

Writes into --output_dir: fig2_alpha.png, fig3a_strategy.png, fig3b_hours.png, fig4_k.png,
fig5_pretrain_vs_joint.png and task_gradients_alpha.png (each only when its factor varies in the runs),
summary.csv, summary.md and summary.json (mean ± std per group, Pearson r of scene accuracy with T and k).
W&B is contacted only with --wandb_project.
"""

import argparse
import logging
import sys

from sceneevent.report import load_runs, load_wandb_runs, write_report


def parse_args(args: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs_dir", nargs="?", help="Folder searched recursively for results.json files.")
    parser.add_argument("--wandb_project", default=None, help="Also read the finished runs of this W&B project (entity/project).")
    parser.add_argument("--output_dir", default="reports", help="Folder for the figures and tables.")
    options = parser.parse_args(args)
    if options.runs_dir is None and options.wandb_project is None:
        parser.error("give a runs folder, --wandb_project, or both")
    return options


def main(args: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    options = parse_args(args)
    try:
        runs = load_runs(options.runs_dir) if options.runs_dir else []
        if options.wandb_project:
            runs += load_wandb_runs(options.wandb_project)
        summary = write_report(runs, options.output_dir)
    except (ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{summary['runs']} runs → {options.output_dir}")
    for factor, name in summary["figures"].items():
        print(f"  drew {name}")
    for factor, reason in summary["skipped"].items():
        print(f"  skipped {factor}: {reason}")
    for factor, result in summary["pearson"].items():
        if result.get("r") is not None:
            print(f"  Pearson r(scene accuracy, {factor}) = {result['r']:.3f} (p = {result['p']:.3g}, n = {result['n']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
