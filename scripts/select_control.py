"""The tuned control's choice (issue 26): the scene-only model's regularisation and the joint model's alpha, each
picked on the VALIDATION split from its search with the same budget of runs, then the re-run sweeps on the seeds
neither search used.

    python scripts/run_sweep.py sweeps/tuned_control_search.yaml --output_root outputs/search   # 18 random settings
    python scripts/run_sweep.py sweeps/alpha_search.yaml --output_root outputs/search           # 18 alphas
    python scripts/select_control.py --scene_search outputs/search/tuned_control_search \\
        --alpha_search outputs/search/alpha_search --output_dir outputs/search
    python scripts/run_sweep.py outputs/search/tuned_scene_only.yaml outputs/search/tuned_joint.yaml --output_root outputs/sweeps
    python scripts/report.py outputs/sweeps --tuned_control outputs/search/tuned_control.json --output_dir reports/paper

Each side's winner is the run with the best validation scene macro accuracy over its epochs; only each results.json's
config and per-epoch validation history are read (its `final` test readings are dropped unread). Writes into
--output_dir, each file atomically: tuned_control.json (both choices, each side's budget, the search seeds) and the
sweeps tuned_scene_only.yaml and tuned_joint.yaml (the chosen settings on --seeds). Unequal budgets (a search not
finished) are refused unless --allow_unequal_budgets, which the report then states. Exit code 2 on a bad folder.
"""

import argparse
import json
import sys

from sceneevent.study.tuned_control import DEFAULT_SEEDS, select_control, write_selection


def parse_args(args: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene_search", required=True,
                        help="Folder of the scene-only search's runs (sweeps/tuned_control_search.yaml, alpha = 0).")
    parser.add_argument("--alpha_search", required=True, help="Folder of the alpha search's runs (sweeps/alpha_search.yaml).")
    parser.add_argument("--output_dir", default="outputs/search", help="Where tuned_control.json and the two re-run sweeps go.")
    parser.add_argument("--seeds", default=",".join(map(str, DEFAULT_SEEDS)),
                        help="Comma list of seeds for the re-runs; none of them may be a search seed.")
    parser.add_argument("--report_to", default="wandb", choices=("wandb", "none"), help="report_to of the re-run sweeps.")
    parser.add_argument("--allow_unequal_budgets", action="store_true",
                        help="Choose even when the searches finished different numbers of runs (the report says so).")
    return parser.parse_args(args)


def main(args: list[str] | None = None) -> int:
    options = parse_args(args)
    try:
        seeds = [int(part) for part in options.seeds.split(",") if part.strip()]
    except ValueError:
        print(f"error: --seeds {options.seeds!r}: expected a comma list of integers, e.g. 0,1,2,3", file=sys.stderr)
        return 2
    try:
        selection = select_control(options.scene_search, options.alpha_search, allow_unequal_budgets=options.allow_unequal_budgets)
        written = write_selection(selection, options.output_dir, seeds, options.report_to)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    scene, joint = selection["scene_only"], selection["joint"]
    print(f"scene only: {scene['setting_text']} (validation {scene['validation_asc_macro_accuracy']:.4f}, "
          f"best of {scene['budget']} runs: {scene['run']})")
    print(f"joint: alpha = {joint['alpha']:g} (validation {joint['validation_asc_macro_accuracy']:.4f}, "
          f"best of {joint['budget']} runs: {joint['run']})")
    for path in written:
        print(f"wrote {path}")
    print(json.dumps({"budgets": {"scene_only": scene["budget"], "joint": joint["budget"]}, "rerun_seeds": seeds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
