"""The mini reproduction: the paper's experiments on the synthetic world, once with the scene-event link
planted and once without, to show that the instrument finds a planted effect and invents none.

The two worlds differ only in `synthetic_event_informativeness` (`WORLDS`: planted 1, unplanted 0). In each:
- the alpha sweep: 0 (scene only), 0.5, 0.9, the balanced alpha of eq. 3 (`--alpha auto` from the first
  seed's two single-task runs) and 1 (events only), on the whole synthetic event set;
- correlated vs uncorrelated event sets at equal k and hours, chosen by the world's ground truth (classes
  ranked by how strongly scenes favour them: `synthetic.ground_truth_ranking`), at alpha `JOINT_ALPHA`, with an
  A/A control (correlated vs correlated drawn again); each seed trains on its own draw, and odd seeds run in
  the world with event roles swapped, so that the two class sets' sounds are counterbalanced (`LINK_ARMS`);
- pre-training on events then fine-tuning on scenes vs joint training at `JOINT_ALPHA`, same total epochs.
The planted world also runs the T and k grids of Figures 3b and 4 (random classes). Every run of a scale has
the same epochs and every experiment the same seeds (the correlated-vs-uncorrelated comparison and its A/A
control more of them, `link_seeds`), so each comparison is paired by seed.

Runs go through the sweep runner (`sweeps.run_sweep`: resumable, `parallel` at a time); `report.write_report`
draws each world's figures; `claims` reads the verdicts.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..training.checkpointing import RESULTS_FILE
from ..data.ranking import write_ranking
from ..data.subsets import build_aet_subset, save_aet_subset
from ..data.synthetic import ground_truth_ranking
from .report import Run, run_from_results
from .sweeps import SweepRun, plan_runs

logger = logging.getLogger(__name__)

WORLDS = {"planted": 1.0, "unplanted": 0.0}  # name -> synthetic_event_informativeness
ALPHAS = (0.0, 0.5, 0.9, 1.0)
JOINT_ALPHA = 0.9  # event subsets, T, k and the joint side of pre-train vs joint (near the balanced alpha)


@dataclass(frozen=True)
class Subset:
    """An event set drawn from the synthetic one: k classes by `strategy`, `hours` of training audio."""

    k: int
    hours: float
    strategy: str
    seed: int = 0  # of the generated event set and of the drawn clips: another seed is another, exchangeable draw
    swapped: bool = False  # ranked in the world with event roles swapped (its correlated classes are the counterparts)

    @property
    def folder(self) -> str:
        return (f"k={self.k}_hours={self.hours:g}_strategy_{self.strategy}" + (f"_draw={self.seed}" if self.seed else "")
                + ("_roles=swapped" if self.swapped else ""))

    @property
    def label(self) -> str:
        """How the report names its runs: "random, k = 10, T = 0.2 h"."""
        return f"{self.strategy}, k = {self.k}, T = {self.hours:g} h"


# The arms of the comparison the study must settle: name -> (strategy, offset of the subset seed). Run `s` of an
# arm trains on its own draw, subset seed `s + offset`, so the seed-paired tests cover the draw of the event data
# too, not only the training randomness; "correlated, redrawn" is the A/A control, equal in expectation to
# "correlated" by construction. Odd seeds run in the world with event roles swapped (`swapped_roles`): the
# correlated and uncorrelated classes trade places, so how the two class sets sound is counterbalanced and only
# the link is left to tell them apart.
LINK_ARMS = {"correlated": ("correlated", 0), "uncorrelated": ("uncorrelated", 0), "correlated, redrawn": ("correlated", 1000)}


@dataclass(frozen=True)
class Scale:
    """The size of the study: the world, the model and budget every run gets, the seeds and the grids."""

    description: str
    seeds: tuple[int, ...]
    link_seeds: tuple[int, ...]  # of the correlated / uncorrelated / A/A runs: the comparison the study must settle
    run_flags: tuple[str, ...]  # given to every run (model, features, world size, epochs)
    pretrain_epochs: int  # + finetune_epochs = the epochs of the joint runs
    finetune_epochs: int
    parallel: int  # runs at a time
    threads_per_run: int
    difficulty: float = 0.6
    strategy_k: int = 10
    subset_hours: float = 0.2  # every subset of the strategy and k grids (the uncorrelated classes hold ~0.25 h)
    hours_grid: tuple[float, ...] = (0.1, 0.2, 0.4)  # at k = 40, random classes
    k_grid: tuple[tuple[int, str], ...] = ((2, "speech_music"), (10, "random"), (40, "random"))

    def world_flags(self, informativeness: float) -> list[str]:
        return [*self.run_flags, f"--synthetic_difficulty={self.difficulty}",
                f"--synthetic_event_informativeness={informativeness}", f"--num_cpu_threads={self.threads_per_run}"]

    def link_subset(self, arm: str, seed: int) -> Subset:
        """The event set of run `seed` of a `LINK_ARMS` arm."""
        strategy, offset = LINK_ARMS[arm]
        return Subset(self.strategy_k, self.subset_hours, strategy, seed=seed + offset, swapped=swapped_roles(seed))

    def arm_label(self, arm: str) -> str:
        return f"{arm}, k = {self.strategy_k}, T = {self.subset_hours:g} h (a draw per seed)"

    def link_subsets(self) -> list[Subset]:
        return [self.link_subset(arm, seed) for seed in self.link_seeds for arm in LINK_ARMS]

    def grid_subsets(self) -> list[Subset]:
        k_grid = [Subset(k, self.subset_hours, strategy) for k, strategy in self.k_grid]
        hours_grid = [Subset(40, hours, "random") for hours in self.hours_grid]
        return list(dict.fromkeys(k_grid + hours_grid))  # k = 40 at subset_hours is in both

    def subsets(self) -> list[Subset]:
        return list(dict.fromkeys(self.link_subsets() + self.grid_subsets()))


_COMMON = ("--asc_batch_size=16", "--aet_batch_size=32", "--num_train_epochs=40", "--eval_batch_size=64",
           "--synthetic_train_clips_per_scene=40", "--asc_validation_split=0.5", "--synthetic_test_clips_per_scene=100",
           "--checkpointing_steps=150", "--save_total_limit=1",
           "--channels_last=false")  # the memory format reports/mini was measured in (the default is now channels_last)
SCALES = {
    # Sized for <= 60 minutes on 2 CPU cores (two runs at a time, one thread each): timm's 0.37 M-parameter
    # `test_resnet` on 40 x 51 log-mels (2 s at 16 kHz, 40 ms hop), 480 steps of 16 + 32 clips per run
    # (200 scene training clips, 12 steps an epoch, 40 epochs).
    "cpu": Scale(
        description="2 CPU cores: test_resnet, 40 mel bins x 51 frames, 16 + 32 clips, 40 epochs, 4 seeds "
                    "(8 for correlated vs uncorrelated and the A/A control)",
        seeds=(0, 1, 2, 3),
        # Four seeds could not settle it (in the study's first run the smallest detectable difference was 0.062);
        # see reports/mini/README.md for every reading.
        link_seeds=tuple(range(8)),
        run_flags=("--encoder=test_resnet", "--num_mel_bins=40", "--hop_length=640", "--learning_rate=0.01", *_COMMON),
        pretrain_epochs=20, finetune_epochs=20, parallel=2, threads_per_run=1,
    ),
    # The same study with the paper's encoder at the demo's feature resolution and twice the seeds, four runs
    # sharing one GPU.
    "gpu": Scale(
        description="1 GPU: resnet18, 64 mel bins x 101 frames, 16 + 32 clips, 40 epochs, 8 seeds "
                    "(16 for correlated vs uncorrelated and the A/A control)",
        seeds=tuple(range(8)),
        link_seeds=tuple(range(16)),
        run_flags=("--encoder=resnet18", "--num_mel_bins=64", "--hop_length=320", "--learning_rate=0.002", *_COMMON),
        pretrain_epochs=20, finetune_epochs=20, parallel=4, threads_per_run=4,
    ),
}


# --- the plan -----------------------------------------------------------------------------------------


def swapped_roles(seed: int) -> bool:
    """Whether run `seed` of the correlated-vs-uncorrelated comparison runs in the world with event roles swapped."""
    return seed % 2 == 1


def role_flags(swapped: bool) -> list[str]:
    return ["--synthetic_swap_event_roles=true"] if swapped else []


def subset_dir(root: Path, subset: Subset) -> Path:
    return root / "aet_subsets" / subset.folder


def ranking_path(root: Path, swapped: bool) -> Path:
    return root / ("ranking_roles=swapped.json" if swapped else "ranking.json")


def prepare_subsets(root: Path, scale: Scale) -> None:
    """Write the ground-truth rankings (of both role assignments) and build every event subset the study uses
    (kept when present)."""
    for swapped in (False, True):
        ranking = ranking_path(root, swapped)
        if not ranking.is_file():
            write_ranking(ranking, [{"name": name, "rank": rank} for rank, name in enumerate(ground_truth_ranking(swapped), 1)],
                          tagger=f"ground truth of the synthetic world (synthetic.ground_truth_ranking(swap_event_roles={swapped}))",
                          asc_dataset="synthetic")
    for subset in scale.subsets():
        folder = subset_dir(root, subset)
        if (folder / "subset_info.json").is_file():
            continue
        data, info = build_aet_subset("synthetic", k=subset.k, hours=subset.hours, strategy=subset.strategy,
                                      ranking=str(ranking_path(root, subset.swapped)), seed=subset.seed,
                                      difficulty=scale.difficulty, return_info=True)
        save_aet_subset(data, folder, info)


def _sweep(parameters: dict, seeds: tuple[int, ...], program: str = "scripts/train_joint.py") -> dict:
    """A local grid sweep (the W&B sweep format `sweeps.plan_runs` takes); lists are swept, scalars fixed."""
    specs = {name: ({"values": list(value)} if isinstance(value, list) else {"value": value})
             for name, value in parameters.items()}
    return {"method": "grid", "program": program, "parameters": {**specs, "seed": {"values": list(seeds)}}}


def stage_one(root: Path, scale: Scale) -> list[SweepRun]:
    """Every run that needs nothing but the data: both worlds' alpha, strategy and pre-train sweeps, and the
    planted world's T and k grid."""
    runs = []
    for world, informativeness in WORLDS.items():
        flags, out = scale.world_flags(informativeness), root / world
        sweeps = [
            ("alpha", _sweep({"alpha": list(ALPHAS)}, scale.seeds), []),
            *(("link", _sweep({"aet_dataset": [str(subset_dir(root, scale.link_subset(arm, seed))) for arm in LINK_ARMS],
                               "alpha": JOINT_ALPHA}, (seed,)), role_flags(swapped_roles(seed))) for seed in scale.link_seeds),
            ("pretrain", _sweep({"mode": "pretrain_finetune", "pretrain_epochs": scale.pretrain_epochs,
                                 "finetune_epochs": scale.finetune_epochs}, scale.seeds), []),
        ]
        if world == "planted":
            sweeps.append(("subsets", _sweep({"aet_dataset": [str(subset_dir(root, s)) for s in scale.grid_subsets()],
                                              "alpha": JOINT_ALPHA}, scale.seeds), []))
        for name, sweep, roles in sweeps:  # roles: the link runs' world (swapped on odd seeds)
            runs += plan_runs(sweep, name, out, launcher="python", extra_args=flags + roles)
    return runs


def stage_two(root: Path, scale: Scale) -> list[SweepRun]:
    """The balanced-alpha runs: `--alpha auto` from the first seed's alpha = 0 and alpha = 1 runs of each world."""
    runs = []
    for world, informativeness in WORLDS.items():
        out = root / world
        first = scale.seeds[0]
        sweep = _sweep({"alpha": "auto", "asc_baseline": str(out / "alpha" / f"alpha=0.0_seed={first}"),
                        "aet_baseline": str(out / "alpha" / f"alpha=1.0_seed={first}")}, scale.seeds)
        runs += plan_runs(sweep, "balanced", out, launcher="python", extra_args=scale.world_flags(informativeness))
    return runs


# --- reading the runs -----------------------------------------------------------------------------------


def read_run(folder: Path) -> Run | None:
    path = folder / RESULTS_FILE
    return run_from_results(json.loads(path.read_text()), str(folder)) if path.is_file() else None


def read_group(folders) -> list[Run]:
    return [run for run in (read_run(Path(folder)) for folder in folders) if run is not None]


def world_groups(root: Path, scale: Scale, world: str) -> dict[str, list[Run]]:
    """The runs of one world by setting: "alpha=0.5", "balanced", "pretrain", and each subset's `label`."""
    out = root / world
    groups = {f"alpha={alpha:g}": read_group(out / "alpha" / f"alpha={alpha}_seed={seed}" for seed in scale.seeds)
              for alpha in ALPHAS}
    groups["balanced"] = read_group(out / "balanced" / f"seed={seed}" for seed in scale.seeds)
    groups["pretrain"] = read_group(out / "pretrain" / f"seed={seed}" for seed in scale.seeds)
    for arm in LINK_ARMS:
        groups[scale.arm_label(arm)] = read_group(
            out / "link" / f"aet_dataset={scale.link_subset(arm, seed).folder}_seed={seed}" for seed in scale.link_seeds)
    for subset in scale.grid_subsets():
        groups[subset.label] = read_group(out / "subsets" / f"aet_dataset={subset.folder}_seed={seed}" for seed in scale.seeds)
    return {name: runs for name, runs in groups.items() if runs}


def environment_threads(scale: Scale) -> dict[str, str]:
    """Thread settings for the runs' processes: `threads_per_run` each, so `parallel` runs share the cores."""
    threads = str(scale.threads_per_run)
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled")}


def prepare_caches(root: Path, scale: Scale) -> None:
    """Build every log-mel cache the runs will read, once, before runs start in parallel and race to build them."""
    from ..training.arguments import DataArguments, JointTrainingArguments, ModelArguments, parse_args
    from ..training.preparation import make_feature_extractor, prepare_data

    sources = [("synthetic", [])] + [(str(subset_dir(root, subset)), role_flags(subset.swapped)) for subset in scale.subsets()]
    for informativeness in WORLDS.values():
        for source, roles in sources:
            _, data_args, _ = parse_args((ModelArguments, DataArguments, JointTrainingArguments),
                                         [*scale.world_flags(informativeness), *roles, f"--aet_dataset={source}"])
            prepare_data(data_args, make_feature_extractor(data_args), need_events=True)


@dataclass
class StudyOutcome:
    wall_minutes: float
    failed: list[str]
    instrument_check: dict


def reproduce(scale: Scale, root: Path, report_dir: Path, parallel: int | None = None, project_dir: Path | None = None) -> StudyOutcome:
    """Build the subsets and caches, run both stages (finished runs are kept), and write every report."""
    import time

    from . import mini_report  # it reads this module's constants
    from .report import load_runs, write_report
    from .sweeps import run_sweep

    start = time.perf_counter()
    os.environ.update(environment_threads(scale))
    prepare_subsets(root, scale)
    prepare_caches(root, scale)
    failed, executed = [], 0
    for stage in (stage_one, stage_two):  # stage two reads stage one's baselines
        outcome = run_sweep(stage(root, scale), parallel=parallel or scale.parallel, cwd=project_dir)
        failed += [f"{run.output_dir}: {reason}" for run, reason in outcome.failed]
        executed += len(outcome.done) + len(outcome.failed)
        if outcome.stopped_by:
            raise KeyboardInterrupt(f"stopped by {outcome.stopped_by}; run the same command again to finish the study")
    # The study's wall time is the sum over the invocations that ran something (a resumed study took several).
    invocations = previous_invocations(report_dir, root)
    if executed:
        invocations.append({"minutes": round((time.perf_counter() - start) / 60, 2), "runs": executed})
    groups, claims = {}, []
    for world in WORLDS:
        write_report(load_runs(root / world), report_dir / world)
        groups[world] = world_groups(root, scale, world)
        claims += mini_report.world_claims(world, groups[world], scale)
    payload = mini_report.write_verdicts(claims, groups, scale, report_dir, invocations, root)
    return StudyOutcome(wall_minutes=payload["wall_minutes"], failed=failed, instrument_check=payload["instrument_check"])


def previous_invocations(report_dir: Path, root: Path) -> list[dict]:
    """The invocations recorded by the last report of this study (same runs folder): [{"minutes", "runs"}]."""
    path = report_dir / "verdicts.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    if previous.get("output_root") not in (None, str(root)):
        return []  # another study's report: its time is not this one's
    return list(previous.get("invocations", []))
