"""Where does a mini study's planted link live? Correlated - uncorrelated test accuracy by scene and background group,
per role assignment (issue 29: the link is a default-role effect; this says in which scenes).

It evaluates each finished link run's saved model on its own scene test split (the run's world and role
assignment, from its results.json), keeps every run's per-scene accuracies in OUTPUT_ROOT/<world>/link_by_scene.json
(runs already there are not evaluated again; `transfer_probe.py` keeps its runs' there too), and prints, for the default-role seeds, the swapped-role seeds and
the pairs: each background group's correlated accuracy and correlated - uncorrelated, mean [95 % CI] and paired t p.
A run's mean over the ten scenes equals its reported asc_macro_accuracy (checked as it goes).

    python benchmarks/link_by_scene.py --output_root outputs/mini_v6 --link_seeds 0-15 --report reports/mini/link_by_scene.md
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from scipy import stats
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from common import parse_study, print_report, study_parser
from sceneevent import SceneEventModel
from sceneevent.data.loader import BatchReader
from sceneevent.data.synthetic_world import BACKGROUND_GROUPS, SCENES
from sceneevent.io_utils import atomic_write_json
from sceneevent.study.design import WORLDS, swapped_roles
from sceneevent.study.mini import link_run_dir
from sceneevent.study.seed_statistics import describe
from sceneevent.training.arguments import DataArguments
from sceneevent.training.evaluation import predict_split
from sceneevent.training.preparation import make_feature_extractor, prepare_data
from sceneevent.training.results import read_results

ARMS = ("correlated", "uncorrelated")
STORE = "link_by_scene.json"  # in OUTPUT_ROOT/<world>/: each evaluated run's per-scene test accuracies
GROUPS = {"halls": BACKGROUND_GROUPS[0], "vehicles": BACKGROUND_GROUPS[1], "outdoors": BACKGROUND_GROUPS[2],
          "all ten scenes": tuple(SCENES)}


def per_scene_accuracy(run_dir: Path, data_cache: dict) -> dict[str, float]:
    """Test accuracy of each scene class for the model saved in `run_dir`, on the scene world its run trained in."""
    results = read_results(run_dir, require_validation_selection=False)
    data_args, = HfArgumentParser(DataArguments).parse_dict(results.config, allow_extra_keys=True)
    world = (data_args.synthetic_seed, data_args.synthetic_swap_event_roles, data_args.synthetic_event_informativeness)
    if world not in data_cache:
        data_cache.clear()  # one world at a time: a pair's runs come together
        data_cache[world] = prepare_data(data_args, make_feature_extractor(data_args), need_events=False)
    data = data_cache[world]
    model = SceneEventModel.from_pretrained(run_dir).eval()
    reader = BatchReader(data.scene_test, "scene", len(data.scene_labels))
    logits, truth = predict_split(Accelerator(cpu=True), model, reader, batch_size=64, logits_key="scene_logits")
    predicted = logits.argmax(axis=1)
    accuracy = {name: float((predicted[truth == index] == index).mean()) for index, name in enumerate(data.scene_labels)}
    reported = results.final.asc_macro_accuracy
    if not np.isclose(np.mean(list(accuracy.values())), reported, atol=1e-9):
        raise RuntimeError(f"{run_dir}: per-scene accuracies average {np.mean(list(accuracy.values()))}, the run reported {reported}")
    return accuracy


def per_scene_accuracies(run_dirs, store: Path) -> dict[Path, dict[str, float]]:
    """`per_scene_accuracy` of each run in `run_dirs`, kept in the JSON file `store` (keyed by the run's folder relative
    to the store's): a run already there is not evaluated again, and each new one is saved as it comes."""
    kept = json.loads(store.read_text()) if store.is_file() else {}
    data_cache, accuracies = {}, {}
    for run_dir in tqdm(list(run_dirs), desc="runs evaluated per scene"):
        key = str(run_dir.relative_to(store.parent))
        if key not in kept:
            kept[key] = per_scene_accuracy(run_dir, data_cache)
            atomic_write_json(store, kept)
        accuracies[run_dir] = kept[key]
    return accuracies


def interval(differences) -> str:
    """"+0.012 [-0.003, +0.027], p = 0.1": mean, 95 % t CI and one-sample t p (the mean alone for one value)."""
    d = describe(differences)
    if d.ci_low is None:
        return f"{d.mean:+.3f} (n = {d.n})"
    return f"{d.mean:+.3f} [{d.ci_low:+.3f}, {d.ci_high:+.3f}], p = {stats.ttest_1samp(differences, 0.0).pvalue:.2g}"


def row(name: str, correlated: list[float], differences: list[float]) -> str:
    return f"| {name} | {len(differences)} | {np.mean(correlated):.3f} | {interval(differences)} |"


def main(args=None) -> int:
    parser = study_parser(__doc__, "Its link seeds, e.g. 0-15.")
    parser.add_argument("--world", choices=sorted(WORLDS), default="planted", help="Which world's link runs.")
    options, scale, root = parse_study(parser, args)
    torch.set_num_threads(1)
    folders = {(arm, seed): link_run_dir(root, scale, options.world, arm, seed) for seed in scale.link_seeds for arm in ARMS}
    accuracies = per_scene_accuracies(folders.values(), root / options.world / STORE)

    def by_seed(seed: int, scenes) -> tuple[float, float]:
        scores = [np.mean([accuracies[folders[arm, seed]][s] for s in scenes]) for arm in ARMS]
        return scores[0], scores[0] - scores[1]

    lines = [f"{options.world.capitalize()} world, link seeds {options.link_seeds[0]}-{options.link_seeds[-1]} "
             f"({options.output_root}): test accuracy of the correlated arm, and correlated - uncorrelated, mean over the "
             "group's scenes, [95 % CI] over seeds (or pairs) and one-sample t p.", ""]
    roles = {"default-role seeds": [s for s in scale.link_seeds if not swapped_roles(s)],
             "swapped-role seeds": [s for s in scale.link_seeds if swapped_roles(s)]}
    for role, seeds in roles.items():
        lines += [f"**{role}**", "", "| group | n | correlated | correlated - uncorrelated [95 % CI], p |", "| --- | --- | --- | --- |"]
        for group, scenes in GROUPS.items():
            readings = [by_seed(seed, scenes) for seed in seeds]
            lines.append(row(group, [r[0] for r in readings], [r[1] for r in readings]))
        lines.append("")
    lines += ["**by pair** (the check's reading: the mean of a pair's two seeds)", "",
              "| group | n | correlated | correlated - uncorrelated [95 % CI], p |", "| --- | --- | --- | --- |"]
    for group, scenes in GROUPS.items():
        pairs = [(by_seed(even, scenes), by_seed(even + 1, scenes)) for even in roles["default-role seeds"]]
        lines.append(row(group, [(a[0] + b[0]) / 2 for a, b in pairs], [(a[1] + b[1]) / 2 for a, b in pairs]))
    print_report(lines, options.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
