"""Does the uncorrelated arm teach the planted classes' pitch? A probe of the planted world's swapped roles (issue 29).

In world version 6's swapped-role planted world the vehicles (bus, metro, tram) planted tone pips with harmonics at
330, 220 and 420 Hz (version 7 made them trills, after this probe); the link's uncorrelated arm then holds Buzzer, Train horn and Car horn: continuous harmonic stacks at the
same three pitches. `link_by_scene.py` found the vehicles scoring *higher* with that uncorrelated arm than with the
planted classes themselves (-0.037, p = 0.010, 8 seeds). If the stacks teach the pitches the vehicles are told
apart by, an uncorrelated arm without them should lose that: this runs the swapped-role seeds of a finished study
once more on the uncorrelated classes with those three stacks replaced by three never-planted classes at other
pitches (`REPLACEMENTS`), from the same pool of clips, each seed otherwise exactly as its link runs, and prints the
vehicles' and the other scenes' test accuracy against both study arms, paired by seed.

    python benchmarks/transfer_probe.py --output_root outputs/mini_v6 --link_seeds 0-15 --report reports/mini/transfer_probe.md
"""

import sys
from pathlib import Path

import numpy as np

from link_by_scene import ARMS, GROUPS, STORE, interval, per_scene_accuracies
from common import parse_study, print_report, study_parser
from sceneevent.data.subsets import build_aet_subset, save_aet_subset
from sceneevent.data.synthetic import ground_truth_ranking, uncorrelated_events
from sceneevent.study.design import JOINT_ALPHA, WORLDS, swapped_roles
from sceneevent.study.mini import _sweep, link_run_dir, prepare_caches
from sceneevent.study.sweep_runner import run_sweep
from sceneevent.study.sweeps import plan_runs

PROJECT_DIR = Path(__file__).resolve().parent.parent
WORLD = "planted"
# The vehicles' pitch in the default world (never planted in the swapped one) -> a never-planted class (in the swapped
# world) of another pitch and group: the default world's secondary classes of airport, public square, metro station.
REPLACEMENTS = {"Buzzer": "Beep", "Train horn": "Cash register", "Car horn": "Brakes squeal"}


def probe_events() -> list[str]:
    """The swapped world's uncorrelated classes at k = 10 (its ranking's bottom ten), the vehicles' pitch stacks replaced."""
    bottom = ground_truth_ranking(swap_event_roles=True)[-10:]
    if not (set(REPLACEMENTS) <= set(bottom) and set(REPLACEMENTS.values()) <= set(uncorrelated_events(swap_event_roles=True)) - set(bottom)):
        raise RuntimeError("REPLACEMENTS no longer fits the synthetic world's swapped roles")
    return [REPLACEMENTS.get(name, name) for name in bottom]


def main(args=None) -> int:
    parser = study_parser(__doc__, "Its link seeds, e.g. 0-15 (the swapped-role ones run).")
    options, scale, root = parse_study(parser, args)
    seeds = [seed for seed in scale.link_seeds if swapped_roles(seed)]
    events, runs = probe_events(), []
    for seed in seeds:
        pool = scale.link_subset("uncorrelated", seed)  # the same pool of clips as the study's two arms
        folder = root / "probe_subsets" / f"{pool.folder}_vehicle_pitches_replaced"
        if not (folder / "subset_info.json").is_file():
            data, info = build_aet_subset("synthetic", events=events, hours=pool.hours, seed=pool.seed,
                                          difficulty=scale.difficulty, return_info=True, **pool.load_kwargs)
            save_aet_subset(data, folder, info)
        runs += plan_runs(_sweep({"aet_dataset": [str(folder)], "alpha": JOINT_ALPHA}, (seed,)), "transfer_probe", root / WORLD,
                          launcher="python", extra_args=scale.world_flags(WORLDS[WORLD]) + scale.link_flags(seed))
    prepare_caches(runs)
    outcome = run_sweep(runs, parallel=scale.parallel, cwd=PROJECT_DIR)
    if outcome.failed:
        print("failed:", *(f"{run.output_dir}: {reason}" for run, reason in outcome.failed), sep="\n", file=sys.stderr)
        return 1
    folders = {seed: {"probe": run.output_dir, **{arm: link_run_dir(root, scale, WORLD, arm, seed) for arm in ARMS}}
               for seed, run in zip(seeds, runs)}
    accuracies = per_scene_accuracies([folder for by_arm in folders.values() for folder in by_arm.values()], root / WORLD / STORE)

    def reading(seed: int, arm: str, scenes) -> float:
        return float(np.mean([accuracies[folders[seed][arm]][scene] for scene in scenes]))

    lines = [f"Planted world, swapped-role seeds {seeds} ({options.output_root}): test accuracy by group, mean over the group's "
             f"scenes; probe = the uncorrelated classes with {', '.join(f'{a} -> {b}' for a, b in REPLACEMENTS.items())} "
             "(the vehicles' pitch stacks replaced). Differences paired by seed: mean [95 % CI], paired t p (a one-sample t of the differences).", "",
             "| group | correlated | uncorrelated | probe | probe - uncorrelated | correlated - probe |",
             "| --- | --- | --- | --- | --- | --- |"]
    for group, scenes in GROUPS.items():
        by_arm = {arm: [reading(seed, arm, scenes) for seed in seeds] for arm in ("correlated", "uncorrelated", "probe")}
        cells = [interval(np.subtract(by_arm[a], by_arm[b])) for a, b in (("probe", "uncorrelated"), ("correlated", "probe"))]
        lines.append(f"| {group} | " + " | ".join(f"{np.mean(by_arm[arm]):.3f}" for arm in by_arm) + " | " + " | ".join(cells) + " |")
    print_report(lines, options.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
