"""Does drawing the event subset with the training seed change the scene accuracy? (issue 29, item 4)

The first design of reports/mini drew run `s`'s correlated classes with subset seed `s` (its training seed)
and the A/A control's with `s + 1000`; its unplanted A/A came out at -0.020 (p = 0.019, 16 seeds). This runs,
beside a finished `reproduce_mini.py --link_only` study, one more arm in the unplanted world: the correlated
classes drawn with the training seed ("coupled"), each seed otherwise exactly as the study's link runs (its
pair's world and role assignment, the same pool of event clips). It then prints the paired differences
coupled - decoupled (the study's correlated arm) and coupled - redrawn (its A/A arm): if the coupling mattered,
both would move together; two exchangeable draws differ by zero in expectation.

    python benchmarks/aa_coupling.py --output_root outputs/mini_link --link_seeds 0-15 --report reports/mini/aa_coupling.md
"""

import sys
from pathlib import Path

from common import parse_study, print_report, study_parser
from sceneevent.study.design import JOINT_ALPHA, WORLDS, Subset, swapped_roles
from sceneevent.study.mini import _sweep, build_subset, prepare_caches, read_group, world_groups
from sceneevent.study.seed_statistics import compare_paired
from sceneevent.study.sweep_runner import run_sweep
from sceneevent.study.sweeps import plan_runs

PROJECT_DIR = Path(__file__).resolve().parent.parent
WORLD = "unplanted"


def coupled_subset(scale, seed: int) -> Subset:
    return Subset(scale.strategy_k, scale.subset_hours, "correlated", seed=seed, swapped=swapped_roles(seed),
                  pool_clips=scale.link_pool_clips)


def main(args=None) -> int:
    parser = study_parser(__doc__, "Its seeds, e.g. 0-15.")
    options, scale, root = parse_study(parser, args)
    runs = []
    for seed in scale.link_seeds:
        folder = build_subset(root, scale, coupled_subset(scale, seed))
        sweep = _sweep({"aet_dataset": [str(folder)], "alpha": JOINT_ALPHA}, (seed,))
        runs += plan_runs(sweep, "coupling", root / WORLD, launcher="python",
                          extra_args=scale.world_flags(WORLDS[WORLD]) + scale.link_flags(seed))
    prepare_caches(runs)
    outcome = run_sweep(runs, parallel=scale.parallel, cwd=PROJECT_DIR)
    groups = world_groups(root, scale, WORLD, link_only=True)
    arms = {"coupled": read_group(run.output_dir for run in runs),
            "decoupled": groups[scale.arm_label("correlated")], "redrawn": groups[scale.arm_label("correlated, redrawn")]}
    lines = [f"Unplanted world, seeds {options.link_seeds[0]}-{options.link_seeds[-1]}: coupled = correlated classes drawn "
             "with the training seed; decoupled = the study's correlated arm; redrawn = its A/A arm. Paired by seed.", "",
             "| comparison | n | mean [95 % CI] | sd | paired t p |", "| --- | --- | --- | --- | --- |"]
    for setting, reference, note in (("coupled", "decoupled", ""), ("coupled", "redrawn", ""),
                                     ("redrawn", "decoupled", " (the A/A row, by seed)")):
        comparison = compare_paired(arms[setting], arms[reference], "asc_macro_accuracy", setting, reference)
        d = comparison.difference
        lines.append(f"| {setting} - {reference}{note} | {comparison.n_pairs} | {d.mean:+.4f} [{d.ci_low:+.4f}, {d.ci_high:+.4f}] "
                     f"| {d.sd:.4f} | {comparison.t_test_p:.3g} |")
    print_report(lines, options.report)
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    sys.exit(main())
