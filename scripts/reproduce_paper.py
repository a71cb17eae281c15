"""The study of Parikh et al. (Interspeech 2022) on real data, from the two data folders to the paper's figures:
the real-data twin of reproduce_mini.py.

    python scripts/reproduce_paper.py --asc_dataset data/TUT-urban-acoustic-scenes-2018-development \\
        --audioset data/audioset --dry_run --gpus 0,1,2,3,4,5,6,7      # the plan: runs, event sets, GPU-hours, disk
    python scripts/reproduce_paper.py --asc_dataset data/TUT-urban-acoustic-scenes-2018-development \\
        --audioset data/audioset                                        # everything, on every visible GPU
    python scripts/reproduce_paper.py ... --figures 3a,4               # only what Figures 3a and 4 need
    python scripts/reproduce_paper.py ... --figures all,batch,alpha_hours   # and the batch composition, alpha x T
    python scripts/reproduce_paper.py ... --wandb --wandb_entity ME    # the sweeps on W&B: prints `wandb agent` lines

The figures' sweeps are the files in --sweeps_dir (sweeps/*.yaml: Fig. 2 alpha, 3a strategy, 3b hours, 4 k,
5 pretrain_vs_joint; 152 runs on 14 event sets for all five). A setting two figures share (joint training at
alpha = 0.95 on the reference set is a point of Figures 2, 3b, 4 and 5) is trained once and drawn in both:
136 trainings. The stages, each skipping what is already built or finished, so that running the command again
resumes it:
  1. the event sets (OUTPUT_ROOT/aet_subsets/k=<k>_hours=<T>_strategy_<s>) from --audioset, read once;
  2. the event-only tagger (Figure 2's alpha = 1 run of the first seed), when a correlated or uncorrelated set is
     needed; 3. its ranking of the event classes on the scene training clips (OUTPUT_ROOT/ranking.json);
  4. the correlated and uncorrelated sets; 5. the log-mel store of every run's data;
  6. every run (OUTPUT_ROOT/runs/<sweep>/<run>) through the sweep runner: one run per free GPU (--gpus,
     --gpus_per_run; without a GPU --parallel at a time), resumable from each run's last checkpoint;
  7. the report (--report_dir: the figures, summary.md/csv/json), rewritten when a run finished after it.
With --wandb, stages 1-4 run here, then the W&B sweeps are created (once: their ids are kept in
OUTPUT_ROOT/wandb_sweeps/sweeps.json) and the `wandb agent` commands printed; their runs write into
OUTPUT_ROOT/runs, so the agents need this folder and the data at the same paths. Running the command again once
they are done writes the report.

Exit code 0 when everything asked is done, 1 when a run failed, 2 for bad arguments, 128 + N after signal N.
"""

import argparse
import logging
import shlex
import signal
import sys
from pathlib import Path

import yaml

from sceneevent.study.paper import (
    plan_estimate,
    plan_lines,
    plan_study,
    event_source,
    parse_figures,
    reproduce,
    scene_source,
    wandb_configs,
)
from sceneevent.study.sweep_plan import command_lines, comparison_lines, summary_lines
from sceneevent.study.sweep_runner import DEFAULT_STOP_TIMEOUT, GpuPool, SweepBusyError
from sceneevent.study.sweeps import LAUNCHERS, parse_gpus, visible_gpu_count

PROJECT_DIR = Path(__file__).resolve().parent.parent


def parse_args(args: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--asc_dataset", required=True,
                      help="TUT Urban Acoustic Scenes 2018 development folder (meta.csv, evaluation_setup/, audio/) or its Hub mirror id.")
    data.add_argument("--audioset", required=True,
                      help="AudioSet: a folder with the official segment CSVs and audio/, a saved or parquet folder, or a Hub id "
                           "(agkphysics/AudioSet layout).")
    data.add_argument("--audioset_config", default="unbalanced", choices=("balanced", "unbalanced", "full"),
                      help="AudioSet training list the event sets draw from (T up to 360 h needs unbalanced or full).")
    study = parser.add_argument_group("study")
    study.add_argument("--figures", default="all",
                       help="'all' (Figures 2, 3a, 3b, 4, 5) or a comma list of 2, 3a, 3b, 4, 5 and the paper's other experiments "
                            "batch (sweeps/batch_composition.yaml, 24 runs) and alpha_hours (sweeps/alpha_hours.yaml, 456 runs), "
                            "e.g. all,batch.")
    study.add_argument("--sweeps_dir", default=str(PROJECT_DIR / "sweeps"),
                       help="Folder of the figures' sweep files (alpha.yaml, strategy.yaml, hours.yaml, k.yaml, pretrain_vs_joint.yaml).")
    study.add_argument("--seeds", default=None, help="Comma list of seeds for every sweep, e.g. 0,1 (default: the sweep files', 0-3).")
    study.add_argument("--output_root", default="outputs/paper", help="Event sets, ranking, runs and W&B sweep files go here.")
    study.add_argument("--report_dir", default=None, help="Where the figures and tables go (default OUTPUT_ROOT/report).")
    study.add_argument("--extra_args", default="",
                       help='Flags added to every training after the sweep\'s, e.g. --extra_args "--mixed_precision bf16".')
    study.add_argument("--ranking_device", default=None, help="Torch device that scores the scene clips for the ranking "
                                                              "(default cuda when a GPU is visible, else cpu).")
    local = parser.add_argument_group("running here")
    local.add_argument("--gpus", default=None, help="GPU ids for the runs, e.g. 0,1,2,3 (default every visible GPU; 'none': "
                                                    "--parallel runs share the machine).")
    local.add_argument("--gpus_per_run", type=int, default=1, help="GPUs of each run (accelerate launch --num_processes K).")
    local.add_argument("--parallel", type=int, default=None, help="Runs at a time without GPUs (default 1); with GPUs at most this many.")
    local.add_argument("--launcher", default="accelerate", choices=LAUNCHERS, help="accelerate launch or python for each run.")
    local.add_argument("--report_to", default="none", choices=("none", "wandb"), help="Logging of the runs made here.")
    local.add_argument("--stop_timeout", type=float, default=DEFAULT_STOP_TIMEOUT,
                       help="Seconds a run gets to exit after Ctrl-C before it is killed.")
    local.add_argument("--samples_per_second", type=float, default=None,
                       help="Training throughput per GPU for the estimate (default: the finished runs', else the H100 profile's).")
    local.add_argument("--dry_run", action="store_true", help="Print the plan with its estimates; build and run nothing.")
    remote = parser.add_argument_group("W&B")
    remote.add_argument("--wandb", action="store_true", help="Create the sweeps on W&B and print the `wandb agent` commands.")
    remote.add_argument("--wandb_project", default="sceneevent", help="W&B project of the sweeps.")
    remote.add_argument("--wandb_entity", default=None, help="W&B entity (user or team) of the sweeps (default: yours).")
    return parser.parse_args(args)


def parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--seeds {text!r}: give whole numbers, e.g. 0,1,2,3") from None
    if not seeds or len(set(seeds)) < len(seeds):
        raise ValueError(f"--seeds {text!r}: give distinct seeds, e.g. 0,1,2,3")
    return seeds


def main(args: list[str] | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    options = parse_args(args)
    try:
        # A dry run may plan for another machine (a login node for a GPU node): its ids are not checked against this one's.
        gpus = parse_gpus(options.gpus, None if options.dry_run and options.gpus is not None else visible_gpu_count())
        if options.gpus_per_run < 1 or (options.gpus_per_run > 1 and not gpus):
            raise ValueError(f"--gpus_per_run {options.gpus_per_run}: needs at least 1, and GPUs (--gpus) above 1")
        if gpus:
            GpuPool(gpus, options.gpus_per_run)
        audioset = event_source(options.audioset, options.audioset_config)
        plan = plan_study(options.sweeps_dir, parse_figures(options.figures), scene_source(options.asc_dataset),
                          options.output_root, seeds=parse_seeds(options.seeds), launcher=options.launcher,
                          extra_args=shlex.split(options.extra_args), processes_per_run=options.gpus_per_run if gpus else None,
                          report_to="wandb" if options.wandb else options.report_to, report_dir=options.report_dir)
        if options.dry_run:
            print("\n".join(f"# {line}" for line in plan_lines(plan)))
            if options.wandb:
                for name, config in wandb_configs(plan, options.wandb_project).items():
                    print(f"# W&B sweep {name}:\n" + "".join(f"#   {line}\n" for line in yaml.safe_dump(config, sort_keys=False).splitlines()), end="")
            estimate = plan_estimate(plan, gpus, options.gpus_per_run, options.parallel, options.samples_per_second)
            print("\n".join(command_lines(estimate)))
            return 0
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(plan_lines(plan)), file=sys.stderr)
    estimate = None
    if not options.wandb:
        try:
            estimate = plan_estimate(plan, gpus, options.gpus_per_run, options.parallel, options.samples_per_second)
            print("\n".join(summary_lines(estimate)), file=sys.stderr)
        except Exception as error:  # noqa: BLE001 - the plan reads data not built yet; the stages name what is wrong
            print(f"no estimate yet ({type(error).__name__}: {error})", file=sys.stderr)
    device = options.ranking_device or ("cuda" if gpus else "cpu")
    try:
        outcome = reproduce(plan, audioset, options.audioset_config, gpus=gpus, gpus_per_run=options.gpus_per_run,
                            parallel=options.parallel, cwd=PROJECT_DIR, ranking_device=device,
                            wandb_project=options.wandb_project if options.wandb else None, wandb_entity=options.wandb_entity)
    except SweepBusyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # outside the runs (they stop on their own signal handling): building, ranking, reporting
        print("interrupted: what was finished is kept; run the same command again to go on", file=sys.stderr)
        return 128 + signal.SIGINT
    except (ValueError, RuntimeError, FileNotFoundError) as error:  # data that cannot give an event set, no run to report, ...
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"built {len(outcome.built)} event set(s), {'wrote' if outcome.ranked else 'kept'} the ranking, "
          f"ran {len(outcome.trained)} training(s) ({len(outcome.failed)} failed)")
    for failure in outcome.failed:
        print(f"  FAILED {failure}")
    for line in comparison_lines(estimate, outcome.sweep) if estimate is not None and outcome.sweep is not None else []:
        print(line)
    for name, path in outcome.agents.items():
        print(f"wandb agent {path}    # {name}: on each GPU machine, from {PROJECT_DIR}")
    if outcome.stopped_by:
        print(f"interrupted by {outcome.stopped_by}: run the same command again to go on")
        return 128 + signal.Signals[outcome.stopped_by].value
    if outcome.failed:
        return 1
    if not options.wandb:
        print(f"report in {plan.report_dir}" + (" (kept: no run finished after it)" if outcome.report is None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
