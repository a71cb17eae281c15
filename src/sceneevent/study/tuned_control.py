"""The tuned control (issue 26; Kurin et al., NeurIPS 2022): the scene-only model's regularisation searched as
carefully as the joint model's alpha, both on the validation split with the same budget of runs, then each chosen
setting re-run on seeds neither search used and compared on test (`controls.tuned_control_section`).

`select_control` reads the two finished searches (`sweeps/tuned_control_search.yaml`, `sweeps/alpha_search.yaml`)
and chooses, on each side, the run with the best validation scene macro accuracy over its epochs (the epoch the
run itself would select). It reads only `config`, `alpha`, `seed` and the per-epoch validation `history` of each
results.json: `final` (the test readings) is dropped as the file is parsed, so no test number can reach a choice.
`write_selection` writes the choice with each side's budget, and the two re-run sweeps, each file atomically.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..io_utils import atomic_write_json, atomic_write_text
from ..training.results import RunResults
from .regularisation import DEFAULTS, REGULARISATION_FLAGS, regularisation_label, regularisation_of, setting_text
from .run_readings import event_factors, find_results
from .sweeps import schema_violations

VALIDATION_KEY = "val_asc_macro_accuracy"  # the per-epoch validation reading in results.json's history
SELECTION_FILE = "tuned_control.json"
SWEEP_NAMES = ("tuned_scene_only", "tuned_joint")
DEFAULT_SEEDS = (0, 1, 2, 3)


@dataclass
class Candidate:
    """One finished search run, as the selection sees it: no test reading."""

    source: str
    config: dict
    alpha: float | None
    seed: int | None
    validation: float | None  # best validation scene macro accuracy over the epochs
    epoch: int | None  # the epoch it was read at


def read_candidate(path: Path) -> Candidate:
    """The search run of results.json `path` without its test readings (`final` is dropped unread)."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable results.json ({error})") from None
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: not a results.json (a JSON object)")
    payload.pop("final", None)  # the test readings: never part of a choice
    results = RunResults.from_dict(payload)
    readings = [(epoch.get(VALIDATION_KEY), epoch.get("epoch")) for epoch in results.history if isinstance(epoch, dict)]
    readings = [(float(value), epoch) for value, epoch in readings
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)]
    best = max(readings, key=lambda reading: reading[0], default=(None, None))
    alpha = results.alpha if results.alpha is not None else results.config.get("alpha")
    try:
        alpha = float(alpha) if alpha is not None else None
    except (TypeError, ValueError):
        alpha = None
    seed = results.seed if results.seed is not None else results.config.get("seed")
    return Candidate(str(path.parent), results.config, alpha, seed, best[0], best[1])


def read_search(folder: str | Path, what: str) -> list[Candidate]:
    """Every finished run of a search folder; ValueError naming the flag `what` when it holds none."""
    if not Path(folder).is_dir():
        raise ValueError(f"{what} {folder}: no such folder")
    paths = find_results(folder)
    if not paths:
        raise ValueError(f"{what} {folder}: no finished run (results.json) in it")
    return [read_candidate(path) for path in paths]


def _best(candidates: list[Candidate], what: str, folder: str | Path) -> Candidate:
    measured = [candidate for candidate in candidates if candidate.validation is not None]
    if not measured:
        raise ValueError(f"{what} {folder}: no run has a validation scene accuracy ({VALIDATION_KEY}) in its history")
    return max(measured, key=lambda candidate: candidate.validation)  # the first of equals, in path order


def select_control(scene_search: str | Path, alpha_search: str | Path, *, allow_unequal_budgets: bool = False) -> dict[str, Any]:
    """The scene-only regularisation and the joint alpha, each chosen on validation from its search, with the
    budget (finished runs) each search had. Raises ValueError when a search holds runs of the other kind or none,
    or (unless `allow_unequal_budgets`) when the budgets differ."""
    scene = read_search(scene_search, "--scene_search")
    joint = read_search(alpha_search, "--alpha_search")
    stray = [c.source for c in scene if c.alpha != 0.0] + [c.source for c in joint if c.alpha is None or not 0.0 < c.alpha < 1.0]
    if stray:
        raise ValueError("the scene-only search must hold alpha = 0 runs and the alpha search 0 < alpha < 1 runs; these are not: "
                         + ", ".join(stray))
    not_default = [c.source for c in joint if regularisation_label(regularisation_of(c.config)) != DEFAULTS]
    if not_default:
        raise ValueError("the alpha search must train at the default regularisation (the joint model as the paper trains it); "
                         "these do not: " + ", ".join(not_default))
    if len(scene) != len(joint) and not allow_unequal_budgets:
        raise ValueError(f"unequal budgets: {len(scene)} scene-only search run(s) in {scene_search} against {len(joint)} alpha "
                         "search run(s) in " f"{alpha_search}; finish both searches (or pass --allow_unequal_budgets to say so "
                         "in the report)")
    scene_best, joint_best = _best(scene, "--scene_search", scene_search), _best(joint, "--alpha_search", alpha_search)
    k, hours, strategy = event_factors({}, joint_best.config)
    setting = regularisation_of(scene_best.config)
    return {
        "selected_on": f"validation: each run's best {VALIDATION_KEY} over its epochs; test readings are not read",
        "budgets_equal": len(scene) == len(joint),
        "scene_only": {"setting": setting, "setting_text": setting_text(setting), "validation_asc_macro_accuracy": scene_best.validation,
                       "epoch": scene_best.epoch, "run": scene_best.source, "budget": len(scene), "folder": str(scene_search),
                       "search_seeds": sorted({c.seed for c in scene if c.seed is not None})},
        "joint": {"alpha": joint_best.alpha, "validation_asc_macro_accuracy": joint_best.validation, "epoch": joint_best.epoch,
                  "run": joint_best.source, "budget": len(joint), "folder": str(alpha_search),
                  "search_seeds": sorted({c.seed for c in joint if c.seed is not None}),
                  "event_set": {"k": k, "hours": hours, "strategy": strategy}, "aet_dataset": joint_best.config.get("aet_dataset")},
        "asc_dataset": scene_best.config.get("asc_dataset"),
    }


def rerun_sweeps(selection: dict, seeds: list[int], report_to: str = "wandb", output_root: str = "outputs/sweeps") -> dict[str, dict]:
    """The two re-runs as W&B sweep configurations: the chosen scene-only setting and joint training at the chosen alpha
    (default regularisation), each on `seeds`. ValueError when a seed is one the searches used."""
    used = sorted(set(selection["scene_only"]["search_seeds"]) | set(selection["joint"]["search_seeds"]))
    reused = sorted(set(seeds) & set(used))
    if reused:
        raise ValueError(f"--seeds {','.join(map(str, seeds))}: seed(s) {reused} chose the settings (the searches ran on {used}); "
                         "re-run on seeds that played no part in choosing")
    setting = selection["scene_only"]["setting"]
    data = {"asc_dataset": {"value": selection["asc_dataset"]}, "report_to": {"value": report_to}}
    scene = {"seed": {"values": list(seeds)}, "alpha": {"value": 0},
             **{flag: {"value": setting[flag]} for flag in REGULARISATION_FLAGS}, **data}
    joint = {"seed": {"values": list(seeds)}, "alpha": {"value": selection["joint"]["alpha"]}, **data,
             "aet_dataset": {"value": selection["joint"]["aet_dataset"]}}
    configs = {}
    for name, parameters, description in (
        (SWEEP_NAMES[0], scene, f"The scene-only model at the regularisation chosen on validation: {selection['scene_only']['setting_text']}."),
        (SWEEP_NAMES[1], joint, f"Joint training at the alpha chosen on validation ({selection['joint']['alpha']:g})."),
    ):
        configs[name] = {
            "name": name, "project": "sceneevent", "description": description, "program": "scripts/train_joint.py",
            "method": "grid", "metric": {"name": "eval/asc_macro_accuracy", "goal": "maximize"}, "parameters": parameters,
            "command": ["sh", "-c", f'exec accelerate launch "$0" "$@" --output_dir="{output_root}/{name}/$WANDB_RUN_ID"',
                        "${program}", "${args}"],
        }
        violations = schema_violations(configs[name])
        if violations:
            raise ValueError(f"the {name} sweep would not be valid: {'; '.join(violations)}")
    return configs


def write_selection(selection: dict, output_dir: str | Path, seeds: list[int] = DEFAULT_SEEDS, report_to: str = "wandb") -> list[Path]:
    """tuned_control.json (the choice and both budgets) and the re-run sweeps tuned_scene_only.yaml and tuned_joint.yaml,
    each written atomically into `output_dir`. Returns the paths."""
    output_dir = Path(output_dir)
    sweeps = rerun_sweeps(selection, list(seeds), report_to)
    written = []
    for name, config in sweeps.items():
        path = output_dir / f"{name}.yaml"
        header = (f"# Written by scripts/select_control.py from the searches in {selection['scene_only']['folder']} and "
                  f"{selection['joint']['folder']}.\n# Local: python scripts/run_sweep.py {path} --output_root outputs/sweeps\n")
        atomic_write_text(path, header + yaml.safe_dump(config, sort_keys=False))
        written.append(path)
    atomic_write_json(output_dir / SELECTION_FILE, {**selection, "rerun_seeds": list(seeds)})
    return [output_dir / SELECTION_FILE, *written]


def read_selection(path: str | Path) -> dict:
    """A tuned_control.json (or the folder holding one); ValueError naming the file when it is not one."""
    path = Path(path)
    if path.is_dir():
        path = path / SELECTION_FILE
    try:
        selection = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"--tuned_control {path}: not a readable {SELECTION_FILE} ({error})") from None
    if not isinstance(selection, dict) or not {"scene_only", "joint"} <= set(selection):
        raise ValueError(f"--tuned_control {path}: not a selection written by select_control.py (no scene_only / joint)")
    return selection
