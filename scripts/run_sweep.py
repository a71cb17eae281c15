"""Run a W&B sweep file locally, without a W&B server: every grid point, `--parallel` at a time, resumable.

    python scripts/run_sweep.py sweeps/alpha.yaml --output_root outputs/sweeps
    python scripts/run_sweep.py sweeps/k.yaml --parallel 2 --launcher python --extra_args "--max_train_steps 2"
    python scripts/run_sweep.py sweeps/*.yaml --dry_run

Each run writes into OUTPUT_ROOT/<sweep>/<param>=<value>_..., with its log in train.log there, and saves a
checkpoint every epoch (--checkpointing_steps epoch --save_total_limit 1, unless the sweep or --extra_args
set them). Re-running the command resumes a sweep: runs with results.json are skipped, runs with a
checkpoint continue from it, runs stopped before their first checkpoint start again. A failed run does not
stop the others; the failures are listed at the end and the exit code is 1.

Ctrl-C (SIGINT) or SIGTERM stops the running runs (each run's whole process group) and starts no more; a
second Ctrl-C kills them at once. The interrupted runs are listed and the exit code is 128 + the signal
number (130 for Ctrl-C). While any run of a sweep lives, a second runner on the same sweep folder refuses
to start.
"""

import argparse
import shlex
import signal
import sys
from pathlib import Path

from sceneevent.study.sweep_runner import DEFAULT_STOP_TIMEOUT, SweepBusyError, run_sweep
from sceneevent.study.sweeps import LAUNCHERS, is_finished, load_sweep, plan_runs


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
    parser.add_argument("--stop_timeout", type=float, default=DEFAULT_STOP_TIMEOUT,
                        help="Seconds a run gets to exit after Ctrl-C / SIGTERM before it is killed.")
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
    try:
        outcome = run_sweep(runs, parallel=options.parallel, stop_timeout=options.stop_timeout)
    except SweepBusyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{len(outcome.done)} run, {len(outcome.skipped)} already finished, {len(outcome.failed)} failed")
    for run, reason in outcome.failed:
        print(f"  FAILED {run.output_dir}: {reason}")
    if outcome.stopped_by:
        return report_interruption(outcome)
    return 1 if outcome.failed else 0


def report_interruption(outcome) -> int:
    """Name what the signal stopped and what is left; the exit code is the shell's 128 + signal number."""
    print(f"interrupted by {outcome.stopped_by}: {len(outcome.interrupted)} run(s) stopped, "
          f"{len(outcome.not_started)} not started; run the same command again to finish the sweep "
          "(stopped runs continue from their last checkpoint, or start again if they had none)")
    for run in outcome.interrupted:
        print(f"  INTERRUPTED {run.output_dir}")
    return 128 + signal.Signals[outcome.stopped_by].value


if __name__ == "__main__":
    sys.exit(main())
