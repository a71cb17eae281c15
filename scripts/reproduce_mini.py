"""A mini reproduction of Parikh et al. (Interspeech 2022) on the embedded synthetic world, run twice: with
a scene-event link planted (synthetic_event_informativeness 1) and without (0), to show that the instrument
detects a planted effect and invents none.

    python scripts/reproduce_mini.py                    # 75 minutes on 2 CPU cores (208 runs)
    python scripts/reproduce_mini.py --scale gpu        # the same study, larger, on one GPU
    python scripts/reproduce_mini.py --dry_run          # print every run's command
    python scripts/reproduce_mini.py --link_only --link_seeds 100-115 --report_dir reports/replication
                                                        # the instrument check alone, on new seeds

Each world runs the alpha sweep (0, 0.5, 0.9, balanced alpha of eq. 3, 1), correlated vs uncorrelated event
classes at equal k and hours with an A/A null control, pre-train + fine-tune vs joint, and the tuned control
(the scene-only model's regularisation and the joint model's alpha, each searched on validation with the same
budget, re-run on the seeds); the planted world also the T and k grids and the scene clips per batch. Every run gets the same epochs; every setting has the same seeds (the correlated /
uncorrelated / A/A runs more of them), so comparisons pair by seed. Runs go to OUTPUT_ROOT/<world>/<sweep>/<run>
and are kept: running the command again resumes (finished runs are skipped). The report goes to REPORT_DIR:
summary.md (the verdict table with n, paired differences, CIs, p-values and the smallest detectable
difference, and the instrument check), verdicts.json, verdicts.png, and each world's Figures 2-5 in
REPORT_DIR/<world>/. The exit code is 1 when a run failed or the instrument check did not pass.

The instrument check: where the link is planted, correlated minus uncorrelated classes must have its 95 % CI
above 0; where it is not, and between two draws of the correlated classes (A/A) in both worlds, the 95 % CI
must lie inside +-margin. Its seeds come in pairs (2p, 2p + 1), one in each role assignment, each pair with
its own scene world and event draws. `--link_only` runs just those runs (96 at 16 seeds) and writes the check.
"""

import argparse
import logging
import shlex
import sys
from pathlib import Path

from dataclasses import replace

from sceneevent.study.design import SCALES, WORLDS, parse_seed_range
from sceneevent.study.mini import reproduce, stage_one, stage_two

PROJECT_DIR = Path(__file__).resolve().parent.parent


def parse_args(args=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu",
                        help="; ".join(f"{name}: {scale.description}" for name, scale in SCALES.items()))
    parser.add_argument("--output_root", type=Path, default=Path("outputs/mini"), help="Where the runs and event subsets go.")
    parser.add_argument("--report_dir", type=Path, default=Path("reports/mini"), help="Where the verdicts and figures go.")
    parser.add_argument("--parallel", type=int, default=None, help="Runs at a time (default: the scale's).")
    parser.add_argument("--dry_run", action="store_true", help="Print the stage-one and stage-two commands; run nothing.")
    parser.add_argument("--link_only", action="store_true",
                        help="Run only the correlated / uncorrelated / A/A runs of both worlds and write the instrument "
                             "check (exit code 0 only if it passes).")
    parser.add_argument("--link_seeds", type=_seed_range, default=None,
                        help="The link runs' seeds, in pairs (2p, 2p + 1), e.g. 100-115 or 0-3,8,9 (default: the scale's).")
    return parser.parse_args(args)


def _seed_range(text: str) -> tuple[int, ...]:
    try:
        return parse_seed_range(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(args=None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    options = parse_args(args)
    scale = SCALES[options.scale]
    if options.link_seeds:
        scale = replace(scale, link_seeds=options.link_seeds)
    root = options.output_root.resolve()
    if options.dry_run:
        runs = stage_one(root, scale, options.link_only) + stage_two(root, scale, options.link_only)
        for run in runs:
            print(shlex.join(run.command))
        tuned = 0 if options.link_only else 2 * len(scale.seeds) * len(WORLDS)
        print(f"{len(runs)} runs in {len(WORLDS)} worlds" + (f", then up to {tuned} tuned-control re-runs planned from the "
              "searches' validation readings once they finish" if tuned else ""), file=sys.stderr)
        return 0
    outcome = reproduce(scale, root, options.report_dir.resolve(), options.parallel, project_dir=PROJECT_DIR,
                        link_only=options.link_only)
    print(f"mini reproduction ({options.scale}): report in {options.report_dir}; the study's runs took "
          f"{outcome.wall_minutes:.1f} minutes of wall time in all (summed over the calls that ran some)")
    for check in outcome.instrument_check["checks"]:
        print(f"  {check['world']}, {check['question']}: expected {check['expected']}; got {check['verdict']} "
              f"[{check['ci_low']}, {check['ci_high']}]")
    print("instrument check " + ("passed" if outcome.instrument_check["passed"] else "FAILED"))
    for failure in outcome.failed:
        print(f"  FAILED {failure}")
    return 1 if outcome.failed or not outcome.instrument_check["passed"] else 0


if __name__ == "__main__":
    sys.exit(main())
