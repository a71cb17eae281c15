"""Run a W&B sweep file locally, without a W&B server: every grid point, `--parallel` at a time, resumable.

    python scripts/run_sweep.py sweeps/alpha.yaml --output_root outputs/sweeps
    python scripts/run_sweep.py sweeps/k.yaml --parallel 2 --launcher python --extra_args "--max_train_steps 2"
    python scripts/run_sweep.py sweeps/*.yaml --dry_run

Each run writes into OUTPUT_ROOT/<sweep>/<param>=<value>_..., with its log in train.log there. Runs that
already hold results.json are skipped, so re-running the command resumes a sweep. A failed run does not
stop the others; the failures are listed at the end and the exit code is 1.
"""

import argparse
import shlex
import sys
from pathlib import Path

from sceneevent.sweeps import LAUNCHERS, is_finished, load_sweep, plan_runs, run_sweep


def parse_args(args: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="+", help="Sweep YAML file(s) with `method: grid`, e.g. sweeps/alpha.yaml.")
    parser.add_argument("--output_root", default="outputs/sweeps", help="Runs go to OUTPUT_ROOT/<sweep file name>/<run name>.")
    parser.add_argument("--launcher", default="accelerate", choices=LAUNCHERS,
                        help="`accelerate launch PROGRAM ...` or `python PROGRAM ...` with this interpreter.")
    parser.add_argument("--parallel", type=int, default=1, help="Runs at a time.")
    parser.add_argument("--extra_args", default="",
                        help='Flags added to every run after the sweep\'s, so they win: --extra_args "--max_train_steps 2" '
                             "(or --extra_args=--max_train_steps=2).")
    parser.add_argument("--dry_run", action="store_true", help="Print the commands, mark finished runs, run nothing.")
    return parser.parse_args(args)


def main(args: list[str] | None = None) -> int:
    options = parse_args(args)
    extra = shlex.split(options.extra_args)
    runs = []
    for path in options.sweeps:
        runs += plan_runs(load_sweep(path), Path(path).stem, options.output_root, options.launcher, extra)
    if options.dry_run:
        for run in runs:
            done = "# done: " if is_finished(run) else ""
            print(done + shlex.join(run.command))
        print(f"{len(runs)} runs", file=sys.stderr)
        return 0
    outcome = run_sweep(runs, parallel=options.parallel)
    print(f"{len(outcome.done)} run, {len(outcome.skipped)} already finished, {len(outcome.failed)} failed")
    for run, reason in outcome.failed:
        print(f"  FAILED {run.output_dir}: {reason}")
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    sys.exit(main())
