"""The design of the mini reproduction: the paper's experiments on the synthetic world, once with the
scene-event link planted and once without, to show that the instrument finds a planted effect and invents
none. `mini` plans and runs it; `mini_report` reads its verdicts.

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
"""

from __future__ import annotations

from dataclasses import dataclass

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


def swapped_roles(seed: int) -> bool:
    """Whether run `seed` of the correlated-vs-uncorrelated comparison runs in the world with event roles swapped."""
    return seed % 2 == 1


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
