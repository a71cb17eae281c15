"""How far does one run's scene accuracy move with the training seed alone, by training recipe? (issue 29)

Holds one link pair's scene world and event draw fixed (pair `--pair` of the scale, default roles, the
correlated classes of its pool), runs `--seeds` training seeds under each `--recipe` (the scale's flags with
some changed), and prints each recipe's mean, its sd over seeds, and the variance ratio of the first recipe to
it with the one-sided F-test p (does the recipe narrow the spread?).

    python benchmarks/seed_noise.py --output_root outputs/seed_noise --world unplanted --pair 7 --seeds 200-207 \\
        --recipe learning_rate=0.01 --recipe learning_rate=0.003 --recipe num_train_epochs=80 \\
        --recipe learning_rate=0.01,synthetic_train_clips_per_scene=80
"""

import argparse
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path

from scipy.stats import f as f_distribution

from sceneevent.study.design import JOINT_ALPHA, SCALES, WORLDS
from sceneevent.study.mini import _sweep, build_subset, environment_threads, prepare_caches, read_group, write_rankings
from sceneevent.study.sweep_runner import run_sweep
from sceneevent.study.sweeps import plan_runs

PROJECT_DIR = Path(__file__).resolve().parent.parent


def recipe_flags(text: str) -> list[str]:
    """"learning_rate=0.01,num_train_epochs=80" -> ["--learning_rate=0.01", "--num_train_epochs=80"]."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or not all("=" in part for part in parts):
        raise argparse.ArgumentTypeError(f"recipe {text!r}: expected flag=value[,flag=value...]")
    return [f"--{part}" for part in parts]


def seed_range(text: str) -> list[int]:
    low, _, high = text.partition("-")
    try:
        return list(range(int(low), int(high or low) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds {text!r}: expected e.g. 200-207") from None


def main(args=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--output_root", type=Path, required=True, help="Where the runs go (finished runs are kept).")
    parser.add_argument("--world", choices=sorted(WORLDS), default="unplanted")
    parser.add_argument("--pair", type=int, default=7, help="The link pair whose world and event draw are held fixed.")
    parser.add_argument("--seeds", type=seed_range, default=seed_range("200-207"), help="Training seeds, e.g. 200-207.")
    parser.add_argument("--recipe", type=recipe_flags, action="append", required=True,
                        help="Flags that change the scale's recipe, e.g. learning_rate=0.003 (repeat; the first is the reference).")
    options = parser.parse_args(args)
    scale = replace(SCALES[options.scale], link_seeds=(2 * options.pair, 2 * options.pair + 1))
    root = options.output_root.resolve()
    os.environ.update(environment_threads(scale))
    seed = 2 * options.pair  # the pair's default-role seed: its world and its correlated draw
    write_rankings(root)
    folder = build_subset(root, scale, scale.link_subset("correlated", seed))
    base = scale.world_flags(WORLDS[options.world]) + scale.link_flags(seed)
    plans = {}
    for flags in options.recipe:
        name = "_".join(flag.lstrip("-") for flag in flags)
        plans[name] = plan_runs(_sweep({"aet_dataset": str(folder), "alpha": JOINT_ALPHA}, tuple(options.seeds)), name,
                                root / options.world, launcher="python", extra_args=base + flags)  # last: the recipe wins
    everything = [run for runs in plans.values() for run in runs]
    prepare_caches(everything)
    outcome = run_sweep(everything, parallel=scale.parallel, cwd=PROJECT_DIR)
    print(f"{options.world} world, pair {options.pair} (world and draw fixed), seeds {options.seeds[0]}-{options.seeds[-1]}, "
          f"alpha {JOINT_ALPHA:g}\n")
    print("| recipe | n | scene accuracy, mean | sd over seeds | variance ratio to the first (one-sided F p) |")
    print("| --- | --- | --- | --- | --- |")
    reference = None
    for name, runs in plans.items():
        values = [run.asc_macro_accuracy for run in read_group(run.output_dir for run in runs)]
        if len(values) < 2:
            print(f"| {name} | {len(values)} | – | – | – |")
            continue
        variance = statistics.variance(values)
        if reference is None:
            reference, ratio_text = (variance, len(values) - 1), "–"
        else:
            ratio = reference[0] / variance if variance > 0 else float("inf")
            ratio_text = f"{ratio:.2f} ({f_distribution.sf(ratio, reference[1], len(values) - 1):.3f})"
        print(f"| {name} | {len(values)} | {statistics.mean(values):.3f} | {variance ** 0.5:.3f} | {ratio_text} |")
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    sys.exit(main())
