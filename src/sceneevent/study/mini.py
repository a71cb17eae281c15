"""The mini reproduction (its design: `design`): the event subsets and rankings it trains on, its runs as
local sweeps (`sweeps.plan_runs`, run by `sweep_runner.run_sweep`: resumable, `parallel` at a time), the
runs it read back per setting, each world's report (`report.write_report`) and the verdicts (`mini_report`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..data.ranking import write_ranking
from ..data.subsets import build_aet_subset, save_aet_subset
from ..data.synthetic import ground_truth_ranking
from ..training.results import has_results, read_results
from ..io_utils import atomic_write_json
from .design import ALPHAS, JOINT_ALPHA, LINK_ARMS, WORLDS, Scale, Subset
from .mini_report import TUNED_JOINT, TUNED_SCENE_ONLY, batch_label, link_claims, world_claims, write_verdicts
from .regularisation import SEARCH_SPACE
from .report import write_report
from .run_readings import RunReading, load_runs, run_from_results
from .sweep_runner import run_sweep
from .sweeps import SweepRun, plan_runs
from .tuned_control import SELECTION_FILE, read_selection, select_control

# --- the plan -----------------------------------------------------------------------------------------


def subset_dir(root: Path, subset: Subset) -> Path:
    return root / "aet_subsets" / subset.folder


def ranking_path(root: Path, swapped: bool) -> Path:
    return root / ("ranking_roles=swapped.json" if swapped else "ranking.json")


def prepare_subsets(root: Path, scale: Scale, link_only: bool = False) -> None:
    """Write the ground-truth rankings and build every event subset the study uses (kept when present)."""
    write_rankings(root)
    for subset in scale.link_subsets() if link_only else scale.subsets():
        build_subset(root, scale, subset)


def write_rankings(root: Path) -> None:
    """The ground-truth rankings of both role assignments, which the subsets are chosen by (kept when present)."""
    for swapped in (False, True):
        ranking = ranking_path(root, swapped)
        if not ranking.is_file():
            write_ranking(ranking, [{"name": name, "rank": rank} for rank, name in enumerate(ground_truth_ranking(swapped), 1)],
                          tagger=f"ground truth of the synthetic world (synthetic.ground_truth_ranking(swap_event_roles={swapped}))",
                          asc_dataset="synthetic")


def build_subset(root: Path, scale: Scale, subset: Subset) -> Path:
    """Build one event subset from the synthetic event set, ranked by the ground truth of its role assignment
    (kept when present); its folder."""
    folder = subset_dir(root, subset)
    if not (folder / "subset_info.json").is_file():
        data, info = build_aet_subset("synthetic", k=subset.k, hours=subset.hours, strategy=subset.strategy,
                                      ranking=str(ranking_path(root, subset.swapped)), seed=subset.seed,
                                      difficulty=scale.difficulty, return_info=True, **subset.load_kwargs)
        save_aet_subset(data, folder, info)
    return folder


def _sweep(parameters: dict, seeds: tuple[int, ...], program: str = "scripts/train_joint.py") -> dict:
    """A local grid sweep (the W&B sweep format `sweeps.plan_runs` takes); lists are swept, scalars fixed."""
    specs = {name: ({"values": list(value)} if isinstance(value, list) else {"value": value})
             for name, value in parameters.items()}
    return {"method": "grid", "program": program, "parameters": {**specs, "seed": {"values": list(seeds)}}}


def _search(scale: Scale) -> dict:
    """The tuned control's scene-only search: `search_budget` random draws of the regularisation, alpha 0."""
    return {"method": "random", "program": "scripts/train_joint.py", "run_cap": scale.search_budget,
            "parameters": {**SEARCH_SPACE, "alpha": {"value": 0}, "seed": {"value": scale.search_seed}}}


def _without(flags, name: str) -> list[str]:
    """`flags` less `--name=...` (a sweep's own value of it must not be overridden by the scale's)."""
    return [flag for flag in flags if not flag.startswith(f"--{name}=")]


def link_runs(root: Path, scale: Scale) -> list[SweepRun]:
    """The correlated / uncorrelated / A/A runs of both worlds: each seed in its pair's world and role assignment."""
    runs = []
    for world, informativeness in WORLDS.items():
        for seed in scale.link_seeds:
            sweep = _sweep({"aet_dataset": [str(subset_dir(root, scale.link_subset(arm, seed))) for arm in LINK_ARMS],
                            "alpha": JOINT_ALPHA}, (seed,))
            runs += plan_runs(sweep, "link", root / world, launcher="python",
                              extra_args=scale.world_flags(informativeness) + scale.link_flags(seed))
    return runs


def stage_one(root: Path, scale: Scale, link_only: bool = False) -> list[SweepRun]:
    """Every run that needs nothing but the data: the link runs, and unless `link_only` both worlds' alpha and
    pre-train sweeps and the planted world's T and k grid."""
    runs = link_runs(root, scale)
    if link_only:
        return runs
    for world, informativeness in WORLDS.items():
        flags = scale.world_flags(informativeness)
        sweeps = [
            ("alpha", _sweep({"alpha": list(ALPHAS)}, scale.seeds), flags),
            # The stages' epochs replace --num_train_epochs there: the scale's would only mislead a reader of the command.
            ("pretrain", _sweep({"mode": "pretrain_finetune", "pretrain_epochs": scale.pretrain_epochs,
                                 "finetune_epochs": scale.finetune_epochs}, scale.seeds), _without(flags, "num_train_epochs")),
            ("control_search", _search(scale), flags),
            ("alpha_search", _sweep({"alpha": list(scale.alpha_search)}, (scale.search_seed,)), flags),
        ]
        if world == "planted":
            sweeps.append(("subsets", _sweep({"aet_dataset": [str(subset_dir(root, s)) for s in scale.grid_subsets()],
                                              "alpha": JOINT_ALPHA}, scale.seeds), flags))
            sweeps.append(("batch", _sweep({"asc_batch_size": list(scale.scene_batch_grid), "alpha": JOINT_ALPHA}, scale.seeds),
                           _without(flags, "asc_batch_size")))
        for name, sweep, sweep_flags in sweeps:
            runs += plan_runs(sweep, name, root / world, launcher="python", extra_args=sweep_flags)
    return runs


def stage_two(root: Path, scale: Scale, link_only: bool = False) -> list[SweepRun]:
    """The balanced-alpha runs: `--alpha auto` from the first seed's alpha = 0 and alpha = 1 runs of each world."""
    runs = []
    if link_only:
        return runs
    for world, informativeness in WORLDS.items():
        out = root / world
        first = scale.seeds[0]
        sweep = _sweep({"alpha": "auto", "asc_baseline": str(out / "alpha" / f"alpha=0.0_seed={first}"),
                        "aet_baseline": str(out / "alpha" / f"alpha=1.0_seed={first}")}, scale.seeds)
        runs += plan_runs(sweep, "balanced", out, launcher="python", extra_args=scale.world_flags(informativeness))
    return runs


def stage_three(root: Path, scale: Scale, link_only: bool = False) -> list[SweepRun]:
    """The tuned control's re-runs, planned once stage one's searches have finished: in each world, the scene-only
    setting and the alpha chosen on validation (`choose_control`), each on the study's seeds. A world whose
    searches did not all finish (a run failed) gets no control, and says so; the rest of the study goes on."""
    runs = []
    if link_only:
        return runs
    for world, informativeness in WORLDS.items():
        try:
            selection = choose_control(root / world)
        except ValueError as error:
            (root / world / SELECTION_FILE).unlink(missing_ok=True)  # no choice stands without both searches
            print(f"{world}: no tuned control: {error}", file=sys.stderr)
            continue
        alpha = selection["joint"]["alpha"]
        sweeps = [("tuned_scene_only", _sweep({"alpha": 0, **selection["scene_only"]["setting"]}, scale.seeds))]
        if alpha not in ALPHAS:  # else the alpha sweep's runs are these runs
            sweeps.append(("tuned_joint", _sweep({"alpha": alpha}, scale.seeds)))
        for name, sweep in sweeps:
            runs += plan_runs(sweep, name, root / world, launcher="python", extra_args=scale.world_flags(informativeness))
    return runs


def choose_control(world_root: Path) -> dict:
    """Each side's choice from its finished search, on validation only (`tuned_control.select_control`), written to
    `world_root`/tuned_control.json; ValueError naming the search when one is missing or unfinished."""
    selection = select_control(world_root / "control_search", world_root / "alpha_search")
    atomic_write_json(world_root / SELECTION_FILE, selection)
    return selection


# --- reading the runs -----------------------------------------------------------------------------------


def read_run(folder: Path) -> RunReading | None:
    """The run in `folder`, None while it has not finished; OldResultsError if its epoch was chosen on test data."""
    if not has_results(folder):
        return None
    return run_from_results(read_results(folder, require_validation_selection=False), str(folder))


def read_group(folders) -> list[RunReading]:
    return [run for run in (read_run(Path(folder)) for folder in folders) if run is not None]


def link_run_dir(root: Path, scale: Scale, world: str, arm: str, seed: int) -> Path:
    """The folder of link run `seed` of `arm` in `world` (where `link_runs` plans it)."""
    return root / world / "link" / f"aet_dataset={scale.link_subset(arm, seed).folder}_seed={seed}"


def world_groups(root: Path, scale: Scale, world: str, link_only: bool = False) -> dict[str, list[RunReading]]:
    """The runs of one world by setting: each link arm's label, and unless `link_only` "alpha=0.5", "balanced",
    "pretrain" and each grid subset's `label`."""
    out = root / world
    groups = {scale.arm_label(arm): read_group(link_run_dir(root, scale, world, arm, seed) for seed in scale.link_seeds)
              for arm in LINK_ARMS}
    if link_only:
        return {name: runs for name, runs in groups.items() if runs}
    for alpha in ALPHAS:
        groups[f"alpha={alpha:g}"] = read_group(out / "alpha" / f"alpha={alpha}_seed={seed}" for seed in scale.seeds)
    groups["balanced"] = read_group(out / "balanced" / f"seed={seed}" for seed in scale.seeds)
    groups["pretrain"] = read_group(out / "pretrain" / f"seed={seed}" for seed in scale.seeds)
    for subset in scale.grid_subsets():
        groups[subset.label] = read_group(out / "subsets" / f"aet_dataset={subset.folder}_seed={seed}" for seed in scale.seeds)
    groups[TUNED_SCENE_ONLY] = read_group(out / "tuned_scene_only" / f"seed={seed}" for seed in scale.seeds)
    if (out / SELECTION_FILE).is_file():
        alpha = read_selection(out)["joint"]["alpha"]
        groups[TUNED_JOINT] = read_group((out / "alpha" / f"alpha={alpha}_seed={seed}") if alpha in ALPHAS
                                         else (out / "tuned_joint" / f"seed={seed}") for seed in scale.seeds)
    for size in scale.scene_batch_grid:
        groups[batch_label(size)] = read_group(out / "batch" / f"asc_batch_size={size}_seed={seed}" for seed in scale.seeds)
    return {name: runs for name, runs in groups.items() if runs}


def environment_threads(scale: Scale) -> dict[str, str]:
    """Thread settings for the runs' processes: `threads_per_run` each, so `parallel` runs share the cores."""
    threads = str(scale.threads_per_run)
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled")}


def data_arguments(run: SweepRun):
    """The `DataArguments` a run's program will parse from its flags."""
    from ..training.arguments import DataArguments, JointTrainingArguments, ModelArguments, parse_args
    from ..training.pretraining import PretrainArguments

    # Every program's flags parse with the pre-training script's classes, a superset of the joint script's.
    _, data_args, *_ = parse_args((ModelArguments, DataArguments, JointTrainingArguments, PretrainArguments), run.arguments)
    return data_args


def prepare_caches(runs: list[SweepRun]) -> None:
    """Build every log-mel store the runs will read, once, before runs start in parallel and race to build them."""
    from ..training.preparation import make_feature_extractor, prepare_data

    data_flags = set()
    for run in runs:  # the data a run reads is set by its data flags alone: prepare each set of them once
        data_args = data_arguments(run)
        key = tuple(sorted(f"{name}={value}" for name, value in vars(data_args).items()))
        if key not in data_flags:
            data_flags.add(key)
            prepare_data(data_args, make_feature_extractor(data_args), need_events=True)


@dataclass
class StudyOutcome:
    wall_minutes: float
    failed: list[str]
    instrument_check: dict


def reproduce(scale: Scale, root: Path, report_dir: Path, parallel: int | None = None, project_dir: Path | None = None,
              link_only: bool = False) -> StudyOutcome:
    """Build the subsets and caches, run both stages (finished runs are kept), and write every report. With
    `link_only`, only the link runs of both worlds and their verdicts (the instrument check)."""
    start = time.perf_counter()
    os.environ.update(environment_threads(scale))
    prepare_subsets(root, scale, link_only)
    first = stage_one(root, scale, link_only)
    prepare_caches(first)
    failed, executed = [], 0
    # Stage two reads stage one's baselines and the tuned control's choices: it is planned once stage one is done.
    for plan in (lambda: first, lambda: stage_two(root, scale, link_only) + stage_three(root, scale, link_only)):
        outcome = run_sweep(plan(), parallel=parallel or scale.parallel, cwd=project_dir)
        failed += [f"{run.output_dir}: {reason}" for run, reason in outcome.failed]
        executed += len(outcome.done) + len(outcome.failed)
        if outcome.stopped_by:
            raise KeyboardInterrupt(f"stopped by {outcome.stopped_by}; run the same command again to finish the study")
    # The study's wall time is the sum over the invocations that ran something (a resumed study took several).
    invocations = previous_invocations(report_dir, root)
    if executed:
        invocations.append({"minutes": round((time.perf_counter() - start) / 60, 2), "runs": executed})
    groups, claims = {}, []
    selections = {} if link_only else {world: read_selection(root / world) if (root / world / SELECTION_FILE).is_file() else None
                                       for world in WORLDS}
    for world in WORLDS:
        groups[world] = world_groups(root, scale, world, link_only)
        if link_only:
            claims += link_claims(world, groups[world], scale)
        else:
            write_report(load_runs(root / world), report_dir / world)
            claims += world_claims(world, groups[world], scale)
    payload = write_verdicts(claims, groups, scale, report_dir, invocations, root, selections)
    return StudyOutcome(wall_minutes=payload["wall_minutes"], failed=failed, instrument_check=payload["instrument_check"])


def previous_invocations(report_dir: Path, root: Path) -> list[dict]:
    """The invocations recorded by the last report of this study (same runs folder): [{"minutes", "runs"}]."""
    path = report_dir / "verdicts.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    if previous.get("output_root") not in (None, str(root)):
        return []  # another study's report: its time is not this one's
    return list(previous.get("invocations", []))
