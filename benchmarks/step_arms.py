"""The step benchmark's arguments and arms (`bench_step.py` runs them).

joint: `SceneEventModel` trained by the loop's own `sceneevent.training.step.training_step`, through an
       `Accelerator` set to the benchmark's device and precision: the loader's two sub-batches → `prepare_batch`
       (to the device, upcast, SpecAugment + MixUp per task as the paper has them, join) → forward with both
       label sets (masked losses, alpha-weighted) → backward → AdamW step. As in training (and unlike the former
       copy of the step here) it runs inside `accelerator.accumulate`, with Accelerate's backward and optimizer
       wrapper, and with bf16 under Accelerate's autocast wrapper, which also upcasts the outputs to fp32.
noaug: the same with augmentation off: joint − noaug is what SpecAugment + MixUp cost, noaug − bare what the
       join, the upcasts and the masked losses cost.
bare:  the ceiling, the benchmark's own by design: the same network and nothing else — per-mel-bin
       `nn.BatchNorm1d`, the timm encoder (`in_chans=1, num_classes=0`), two `nn.Linear` heads — on one joined
       batch; cross-entropy on the scene rows' logits, BCE on the event rows', no masks, no augmentation.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Literal

import timm
import torch
from accelerate import Accelerator
from torch import nn
from torch.nn import functional as F

import common

from sceneevent import SceneEventConfig, SceneEventModel
from sceneevent.training.step import training_step

ARMS = ("joint", "noaug", "bare")
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
# Per mode, (rounds, steps) when not given: a piece takes microseconds, so `parts` times many calls per round.
DEFAULT_ROUNDS_STEPS = {"arms": (7, 4), "parts": (15, 20), "profile": (3, 4)}


@dataclass
class StepArguments:
    mode: Literal["arms", "parts", "profile"] = field(default="arms", metadata={"help": "arms: steps per second of each "
                                                      "arm and the joint/bare ratio; parts: the joint path's pieces timed "
                                                      "alone; profile: torch.profiler tables of the arms, op by op."})
    device: Literal["cpu", "cuda"] = field(default="cpu", metadata={"help": "The training device."})
    encoder: str = field(default="resnet18", metadata={"help": "timm encoder (the paper: resnet18)."})
    asc_batch_size: int = field(default=16, metadata={"help": "Scene clips per step (the paper: 64; CPU default 16)."})
    aet_batch_size: int = field(default=32, metadata={"help": "Event clips per step (the paper: 128; CPU default 32)."})
    num_mel_bins: int = field(default=64, metadata={"help": "Mel bins (the paper: 128; CPU default 64)."})
    frames: int = field(default=101, metadata={"help": "Frames per clip (the paper: 1001 = 10 s; CPU default 101 = 1 s)."})
    precision: Literal["fp32", "bf16"] = field(default="fp32", metadata={"help": "bf16: autocast (Accelerate's for joint)."})
    channels_last: bool = field(default=False, metadata={"help": "Every model in channels_last memory format."})
    compile: bool = field(default=False, metadata={"help": "torch.compile every model (slow to start on CPU)."})
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = field(
        default="default", metadata={"help": "torch.compile mode with --compile (reduce-overhead: CUDA graphs)."})
    placement: Literal["device", "pinned", "pageable"] = field(default="device", metadata={"help": "Where each step's "
                           "batch comes from, for every arm: device (already there), pinned (page-locked host batch copied "
                           "each step; CUDA only) or pageable (host batch copied each step; on a CPU the same as device)."})
    feature_dtype: Literal["fp16", "fp32"] = field(default="fp16", metadata={"help": "Host features: fp16 (as the cache "
                                                                             "and the loader) or fp32."})
    arms: str = field(default="joint,bare", metadata={"help": f"Comma-separated arms out of {', '.join(ARMS)}; bare is "
                                                              "needed for the ratios (not used by --mode parts)."})
    rounds: int | None = field(default=None, metadata={"help": "Rounds, the order rotated in each; the median over "
                                                               "rounds is reported. Default: 7 (arms), 15 (parts), 3 (profile)."})
    steps: int | None = field(default=None, metadata={"help": "Timed steps per arm per round (parts: calls per piece). "
                                                              "Default: 4 (arms, profile), 20 (parts)."})
    warmup: int = field(default=2, metadata={"help": "Untimed steps (calls) of each before the first round, timed apart "
                                                     "(with --compile they hold the compile: 3 or more)."})
    top: int = field(default=15, metadata={"help": "--mode profile: rows per table."})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads. Default: torch's own choice."})
    seed: int = field(default=0, metadata={"help": "Seed of the weights and the random batch."})
    output: str | None = field(default=None, metadata={"help": "JSON path. Default: benchmarks/results/bench_step.json "
                                                               "(bench_step_parts.json, bench_step_profile.json by mode)."})


def check_arguments(args: StepArguments) -> list[str]:
    """Fill the mode's default rounds and steps; the arms to run. ValueError for what cannot be measured."""
    default_rounds, default_steps = DEFAULT_ROUNDS_STEPS[args.mode]
    args.rounds = args.rounds or default_rounds
    args.steps = args.steps or default_steps
    if args.placement == "pinned" and args.device != "cuda":
        raise ValueError(
            "--placement pinned needs --device cuda: page-locked host memory only speeds up copies from the host to "
            "a GPU. On a CPU the batch already sits where the step reads it (device and pageable measure the same)."
        )
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but torch sees no CUDA device")
    arms = [arm.strip() for arm in args.arms.split(",") if arm.strip()]
    if not arms or not set(arms) <= set(ARMS) or len(set(arms)) != len(arms):
        raise ValueError(f"--arms takes distinct names out of {', '.join(ARMS)}, got {args.arms!r}")
    return arms


def make_accelerator(args: StepArguments) -> Accelerator:
    """The loop's device and mixed precision, as `training_step` expects them."""
    return Accelerator(cpu=args.device == "cpu", mixed_precision="bf16" if args.precision == "bf16" else "no")


class BareModel(nn.Module):
    """The ceiling: per-mel-bin input BatchNorm + timm encoder + scene head + event head, nothing else.

    The input BatchNorm is part of `SceneEventModel`; it also makes the first convolution compute a
    gradient for its input, which a network without it skips (about 10 % of a CPU step here), so
    leaving it out would compare two different networks.
    """

    def __init__(self, encoder: str, num_mel_bins: int, num_scenes: int, num_events: int):
        super().__init__()
        self.input_norm = nn.BatchNorm1d(num_mel_bins)
        self.encoder = timm.create_model(encoder, pretrained=False, in_chans=1, num_classes=0)
        self.scene_head = nn.Linear(self.encoder.num_features, num_scenes)
        self.event_head = nn.Linear(self.encoder.num_features, num_events)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embeddings = self.encoder(self.input_norm(features).unsqueeze(1))
        return self.scene_head(embeddings), self.event_head(embeddings)


def host_batch(args: StepArguments) -> dict:
    """One loader item as MultiTaskLoader yields it: host tensors per task (features fp16 by default)."""
    generator = torch.Generator().manual_seed(args.seed)
    shape = (args.num_mel_bins, args.frames)
    dtype = DTYPES[args.feature_dtype]
    events = (torch.rand(args.aet_batch_size, common.NUM_EVENTS, generator=generator) < 0.05).float()
    return {
        "asc": {
            "input_features": torch.randn(args.asc_batch_size, *shape, generator=generator).to(dtype),
            "scene_labels": torch.randint(0, common.NUM_SCENES, (args.asc_batch_size,), generator=generator),
        },
        "aet": {"input_features": torch.randn(args.aet_batch_size, *shape, generator=generator).to(dtype), "event_labels": events},
    }


def place(tree, placement: str, device: torch.device):
    """The batch (nested dicts of tensors) where `--placement` keeps it between steps."""
    if isinstance(tree, dict):
        return {key: place(value, placement, device) for key, value in tree.items()}
    if placement == "device":
        return tree.to(device)
    if placement == "pinned":
        return tree.pin_memory()
    return tree  # pageable: an ordinary host tensor


def make_optimizer(model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    # The loop's choice: fused kernels on CUDA, foreach elsewhere.
    cuda = device.type == "cuda"
    return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4, foreach=not cuda, fused=cuda or None)


def autocast(args: StepArguments, device: torch.device):
    if args.precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def joint_config(args: StepArguments) -> SceneEventConfig:
    return SceneEventConfig(
        scene_labels=[f"scene_{i}" for i in range(common.NUM_SCENES)],
        event_labels=[f"event_{i}" for i in range(common.NUM_EVENTS)],
        encoder=args.encoder, num_mel_bins=args.num_mel_bins, alpha=0.95,
    )


def joint_step_fn(args: StepArguments, accelerator: Accelerator, batch: dict, augmentation: bool = True):
    """One `training_step` of the loop, as a closure (`augmentation=False`: the noaug arm). Set up as the loop
    sets up its model: channels_last, then `accelerator.prepare`, then `torch.compile`."""
    config = joint_config(args)
    model = SceneEventModel(config).train()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model, optimizer = accelerator.prepare(model, make_optimizer(model, accelerator.device))
    if args.compile:
        model = torch.compile(model, mode=args.compile_mode)
    augment = common.paper_augmenters(augmentation).to(accelerator.device)
    batch = place(batch, args.placement, accelerator.device)

    def step() -> None:
        # A fresh dict per step: `prepare_batch` replaces tensors in the dicts it is given.
        training_step(accelerator, model, config, {task: dict(sub) for task, sub in batch.items()}, augment, optimizer)

    return step


def bare_step_fn(args: StepArguments, device: torch.device, batch: dict):
    """One training step of the bare network on one joined batch, as a closure."""
    model = BareModel(args.encoder, args.num_mel_bins, common.NUM_SCENES, common.NUM_EVENTS).to(device).train()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, device)
    if args.compile:
        model = torch.compile(model, mode=args.compile_mode)
    scenes = args.asc_batch_size
    # One joined buffer, made once (a loader could fill it directly), kept where --placement says.
    joined = place({"input_features": torch.cat([batch["asc"]["input_features"], batch["aet"]["input_features"]]),
                    "scene_labels": batch["asc"]["scene_labels"], "event_labels": batch["aet"]["event_labels"]},
                   args.placement, device)

    def step() -> None:
        features = joined["input_features"].to(device, non_blocking=True).float()
        scene_labels = joined["scene_labels"].to(device, non_blocking=True)
        event_labels = joined["event_labels"].to(device, non_blocking=True)
        with autocast(args, device):
            scene_logits, event_logits = model(features)
        loss_asc = F.cross_entropy(scene_logits[:scenes].float(), scene_labels)
        loss_aet = F.binary_cross_entropy_with_logits(event_logits[scenes:].float(), event_labels)
        (0.95 * loss_aet + 0.05 * loss_asc).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def build_arms(args: StepArguments, accelerator: Accelerator, names: list[str]) -> dict:
    """{arm name: step closure}, every arm from the same seed and the same host batch."""
    batch = host_batch(args)
    builders = {"joint": lambda: joint_step_fn(args, accelerator, batch),
                "noaug": lambda: joint_step_fn(args, accelerator, batch, augmentation=False),
                "bare": lambda: bare_step_fn(args, accelerator.device, batch)}
    arms = {}
    for name in names:
        torch.manual_seed(args.seed)  # the same initial weights for the same network
        arms[name] = builders[name]()
    return arms
