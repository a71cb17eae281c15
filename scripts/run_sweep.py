"""Run a W&B sweep file locally, without a W&B server: every grid point (or a random search's `run_cap` draws,
seeded), one run per free GPU (or `--parallel` at a time on a machine without one), resumable.

    python scripts/run_sweep.py sweeps/alpha.yaml --output_root outputs/sweeps            # a run on each visible GPU
    python scripts/run_sweep.py sweeps/alpha.yaml --dry_run --gpus 0,1,2,3                # the plan: GPUs, data, estimate
    python scripts/run_sweep.py sweeps/k.yaml --gpus 0,1,2,3 --gpus_per_run 2             # each run on 2 GPUs
    python scripts/run_sweep.py sweeps/k.yaml --parallel 2 --launcher python --extra_args "--max_train_steps 2"

GPUs: each run gets GPUs of its own through CUDA_VISIBLE_DEVICES (`--gpus`, default every visible GPU), and
`--gpus_per_run K` runs each grid point as `accelerate launch --num_processes K --multi_gpu`; a run starts as soon
as enough GPUs are free. Without a GPU (or with `--gpus none`) `--parallel` runs share the machine.

The plan (`--dry_run` prints it, a sweep prints its estimate first and the estimate against the measured wall
time at the end): every run with its GPU, the data it needs and whether that is built, GPU-hours, wall time
and disk. Throughput comes from `--samples_per_second`, else from the finished runs in the sweep folder.

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

from sceneevent.study.sweep_plan import command_lines, comparison_lines, plan_sweep, summary_lines
from sceneevent.study.sweep_runner import DEFAULT_STOP_TIMEOUT, GpuPool, SweepBusyError, run_sweep
from sceneevent.study.sweeps import LAUNCHERS, load_sweep, parse_gpus, plan_runs, visible_gpu_count


def parse_args(args: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="+", help="Sweep YAML file(s) with `method: grid` (every grid point) or `method: random` "
                                                  "(run_cap draws, seeded by --random_seed), e.g. sweeps/alpha.yaml.")
    parser.add_argument("--output_root", default="outputs/sweeps", help="Runs go to OUTPUT_ROOT/<sweep file name>/<run name>.")
    parser.add_argument("--launcher", default="accelerate", choices=LAUNCHERS,
                        help="`accelerate launch PROGRAM ...` or `python PROGRAM ...` with this interpreter.")
    parser.add_argument("--parallel", type=int, default=None,
                        help="Runs at a time: without GPUs (default 1); with GPUs, at most this many (default: as many as they hold).")
    parser.add_argument("--gpus", default=None,
                        help="GPU ids for the runs, e.g. 0,1,2,3 (ids among those this machine shows; default every visible "
                             "GPU; 'none': no placement, --parallel runs share the machine). Each run gets its own through "
                             "CUDA_VISIBLE_DEVICES.")
    parser.add_argument("--gpus_per_run", type=int, default=1,
                        help="GPUs of each run: `accelerate launch --num_processes K --multi_gpu` (needs --launcher accelerate).")
    parser.add_argument("--samples_per_second", type=float, default=None,
                        help="Training throughput per GPU (process) for the estimate, as results.json's "
                             "train_steady_samples_per_second. Default: the median of the sweep folder's finished runs.")
    parser.add_argument("--extra_args", default="",
                        help='Flags added to every run after the sweep\'s, so they win: --extra_args "--max_train_steps 2" '
                             "(or --extra_args=--max_train_steps=2).")
    parser.add_argument("--stop_timeout", type=float, default=DEFAULT_STOP_TIMEOUT,
                        help="Seconds a run gets to exit after Ctrl-C / SIGTERM before it is killed.")
    parser.add_argument("--random_seed", type=int, default=0,
                        help="Seed of the draws of a `method: random` sweep: the same seed draws the same runs (and resumes them).")
    parser.add_argument("--dry_run", action="store_true",
                        help="Print the plan: each run's command with its GPU, the data it needs, the estimate; run nothing.")
    return parser.parse_args(args)


def main(args: list[str] | None = None) -> int:
    options = parse_args(args)
    extra = shlex.split(options.extra_args)
    try:
        # A dry run may plan for another machine (a login node for a GPU node): its ids are not checked against this one's.
        gpus = parse_gpus(options.gpus, None if options.dry_run and options.gpus is not None else visible_gpu_count())
        check_placement(gpus, options)
        runs = []
        for path in options.sweeps:
            runs += plan_runs(load_sweep(path), Path(path).stem, options.output_root, options.launcher, extra,
                              processes_per_run=options.gpus_per_run if gpus else None, random_seed=options.random_seed)
        plan = make_plan(runs, gpus, options)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if options.dry_run:
        print("\n".join(command_lines(plan)))
        return 0
    if plan is not None:
        print("\n".join(summary_lines(plan)), file=sys.stderr)
    try:
        outcome = run_sweep(runs, parallel=options.parallel, stop_timeout=options.stop_timeout, gpus=gpus,
                            gpus_per_run=options.gpus_per_run)
    except SweepBusyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{len(outcome.done)} run, {len(outcome.skipped)} already finished, {len(outcome.failed)} failed")
    for run, reason in outcome.failed:
        print(f"  FAILED {run.output_dir}: {reason}")
    for line in comparison_lines(plan, outcome) if plan is not None else []:
        print(line)
    if outcome.stopped_by:
        return report_interruption(outcome)
    return 1 if outcome.failed else 0


def check_placement(gpus: list[int], options: argparse.Namespace) -> None:
    """Raise ValueError naming the flag when the runs cannot be placed as asked."""
    if options.gpus_per_run < 1:
        raise ValueError(f"--gpus_per_run must be at least 1, got {options.gpus_per_run}")
    if options.gpus_per_run > 1 and not gpus:
        raise ValueError(f"--gpus_per_run {options.gpus_per_run} needs GPUs, and --gpus gives none")
    if gpus:
        GpuPool(gpus, options.gpus_per_run)  # enough GPUs for one run
    if options.samples_per_second is not None and options.samples_per_second <= 0:
        raise ValueError(f"--samples_per_second must be positive, got {options.samples_per_second}")


def make_plan(runs, gpus: list[int], options: argparse.Namespace):
    """The plan; before a real sweep a plan that cannot be made (unreadable data, say) is named and skipped, not fatal."""
    try:
        return plan_sweep(runs, gpus, options.gpus_per_run, options.parallel, options.samples_per_second)
    except Exception as error:  # noqa: BLE001 - the runs themselves report what is wrong with their data
        if options.dry_run:
            raise ValueError(f"no plan: {error}") from error
        print(f"no estimate ({type(error).__name__}: {error}); running the sweep without one", file=sys.stderr)
        return None


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
