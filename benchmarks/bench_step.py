"""Training-step throughput of the joint model vs a plain PyTorch loop over the same network.

    python benchmarks/bench_step.py                                   # CPU default: 64 mels x 101 frames, 16 + 32
    python benchmarks/bench_step.py --device cuda --num_mel_bins 128 --frames 1001 \
        --asc_batch_size 64 --aet_batch_size 128 --precision bf16     # the paper's shape, on a GPU

joint: `SceneEventModel` fed exactly as training.py feeds it: host sub-batches → `prepare_batch`
       (to device, SpecAugment + MixUp per task, `join_task_batches`) → forward with both label
       sets → alpha-weighted loss → backward → AdamW step.
plain: the same network written directly — per-mel-bin `nn.BatchNorm1d`, the timm encoder
       (`in_chans=1, num_classes=0`), two `nn.Linear` heads — on the concatenated batch;
       cross-entropy on the scene rows, BCE on the event rows; no augmentation.

Both run in one process, alternating A/B (order swapped every round) so that machine noise hits
both alike; the figure is the median over rounds of the joint/plain time ratio (target <= 1.05).
"""

from __future__ import annotations

import contextlib
import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from torch import nn
from torch.nn import functional as F
from transformers import HfArgumentParser

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from sceneevent import SceneEventConfig, SceneEventModel
from sceneevent.arguments import JointTrainingArguments

# The training loop's own batch path (private names): the benchmark follows training.py if it changes.
from sceneevent.training import build_augmenters, prepare_batch

NAME = "bench_step"


@dataclass
class StepArguments:
    device: str = field(default="cpu", metadata={"help": "cpu or cuda."})
    encoder: str = field(default="resnet18", metadata={"help": "timm encoder (the paper: resnet18)."})
    asc_batch_size: int = field(default=16, metadata={"help": "Scene clips per step (the paper: 64; CPU default 16)."})
    aet_batch_size: int = field(default=32, metadata={"help": "Event clips per step (the paper: 128; CPU default 32)."})
    num_mel_bins: int = field(default=64, metadata={"help": "Mel bins (the paper: 128; CPU default 64)."})
    frames: int = field(default=101, metadata={"help": "Frames per clip (the paper: 1001 = 10 s; CPU default 101 = 1 s)."})
    precision: str = field(default="fp32", metadata={"help": "fp32 or bf16 (autocast, as accelerate's bf16 does)."})
    channels_last: bool = field(default=False, metadata={"help": "Both models in channels_last memory format."})
    compile: bool = field(default=False, metadata={"help": "torch.compile both models (slow to start on CPU)."})
    rounds: int = field(default=7, metadata={"help": "A/B rounds; the median over rounds is reported."})
    steps: int = field(default=4, metadata={"help": "Timed training steps per model per round."})
    warmup: int = field(default=2, metadata={"help": "Untimed steps per model before the first round."})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads. Default: torch's own choice."})
    seed: int = field(default=0, metadata={"help": "Seed of the weights and the random batch."})
    output: str | None = field(default=None, metadata={"help": "JSON path. Default: benchmarks/results/bench_step.json."})


class PlainModel(nn.Module):
    """The same network written directly: per-mel-bin input BatchNorm + encoder + scene head + event head.

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
    """One loader item as MultiTaskLoader yields it: fp32 host tensors per task."""
    generator = torch.Generator().manual_seed(args.seed)
    shape = (args.num_mel_bins, args.frames)
    events = (torch.rand(args.aet_batch_size, common.NUM_EVENTS, generator=generator) < 0.05).float()
    return {
        "asc": {
            "input_features": torch.randn(args.asc_batch_size, *shape, generator=generator),
            "scene_labels": torch.randint(0, common.NUM_SCENES, (args.asc_batch_size,), generator=generator),
        },
        "aet": {"input_features": torch.randn(args.aet_batch_size, *shape, generator=generator), "event_labels": events},
    }


def make_optimizer(model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    # Same choice as training.py: fused kernels on CUDA, foreach elsewhere.
    cuda = device.type == "cuda"
    return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4, foreach=not cuda, fused=cuda or None)


def autocast(args: StepArguments, device: torch.device):
    if args.precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare(model: nn.Module, args: StepArguments, device: torch.device) -> nn.Module:
    model = model.to(device).train()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model) if args.compile else model


def joint_step_fn(args: StepArguments, device: torch.device, batch: dict):
    """One training step of the project's path, as a closure."""
    config = SceneEventConfig(
        scene_labels=[f"scene_{i}" for i in range(common.NUM_SCENES)],
        event_labels=[f"event_{i}" for i in range(common.NUM_EVENTS)],
        encoder=args.encoder, num_mel_bins=args.num_mel_bins, alpha=0.95,
    )
    raw = SceneEventModel(config)
    model = prepare(raw, args, device)
    optimizer = make_optimizer(model, device)
    augment = build_augmenters(JointTrainingArguments()).to(device)  # default flags: SpecAugment + MixUp on both tasks

    def step() -> None:
        # A fresh copy of the host batch: `prepare_batch` replaces tensors in the dicts it is given.
        item = {task: dict(sub) for task, sub in batch.items()}
        inputs = prepare_batch(item, augment, device, raw.config)
        with autocast(args, device):
            outputs = model(**inputs)
        outputs.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def plain_step_fn(args: StepArguments, device: torch.device, batch: dict):
    """One training step of the hand-written loop, as a closure."""
    model = prepare(PlainModel(args.encoder, args.num_mel_bins, common.NUM_SCENES, common.NUM_EVENTS), args, device)
    optimizer = make_optimizer(model, device)
    scenes = args.asc_batch_size

    def step() -> None:
        features = torch.cat([batch["asc"]["input_features"], batch["aet"]["input_features"]]).to(device, non_blocking=True)
        scene_labels = batch["asc"]["scene_labels"].to(device, non_blocking=True)
        event_labels = batch["aet"]["event_labels"].to(device, non_blocking=True)
        with autocast(args, device):
            scene_logits, event_logits = model(features)
        loss_asc = F.cross_entropy(scene_logits[:scenes].float(), scene_labels)
        loss_aet = F.binary_cross_entropy_with_logits(event_logits[scenes:].float(), event_labels)
        (0.95 * loss_aet + 0.05 * loss_asc).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def run_steps(step, count: int) -> None:
    for _ in range(count):
        step()


def measure(args: StepArguments) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    batch = host_batch(args)
    arms = {"joint": joint_step_fn(args, device, batch), "plain": plain_step_fn(args, device, batch)}
    for step in arms.values():
        run_steps(step, args.warmup)
    seconds = {name: [] for name in arms}
    ratios = []
    for round_index in range(args.rounds):
        # Swap the order every round: a slow phase of the machine must not always hit the same arm.
        order = ["joint", "plain"] if round_index % 2 == 0 else ["plain", "joint"]
        for name in order:
            seconds[name].append(common.time_call(functools.partial(run_steps, arms[name], args.steps), device) / args.steps)
        ratios.append(seconds["joint"][-1] / seconds["plain"][-1])
        print(f"  round {round_index + 1}/{args.rounds}: joint {seconds['joint'][-1] * 1e3:.0f} ms/step, "
              f"plain {seconds['plain'][-1] * 1e3:.0f} ms/step, ratio {ratios[-1]:.3f}", flush=True)
    samples = args.asc_batch_size + args.aet_batch_size
    return {
        "seconds_per_step": {name: common.spread(values) for name, values in seconds.items()},
        "samples_per_second": {name: samples / common.median(values) for name, values in seconds.items()},
        "ratio_joint_over_plain": common.spread(ratios),
        "ratios": ratios,
        "target_ratio": 1.05,
        "meets_target": common.median(ratios) <= 1.05,
    }


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(StepArguments).parse_args_into_dataclasses(args=argv)
    if args.precision not in ("fp32", "bf16"):
        raise ValueError(f"--precision must be fp32 or bf16, got {args.precision!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"step benchmark: {args.encoder}, input {args.num_mel_bins} mels x {args.frames} frames, batch "
          f"{args.asc_batch_size} ASC + {args.aet_batch_size} AET, {args.precision}, device {args.device}, "
          f"{torch.get_num_threads()} threads, {args.rounds} rounds x {args.steps} steps", flush=True)
    figures = measure(args)
    ratio = figures["ratio_joint_over_plain"]["median"]
    print(f"joint: {figures['samples_per_second']['joint']:.1f} samples/s, plain: {figures['samples_per_second']['plain']:.1f} "
          f"samples/s, joint/plain time ratio {ratio:.3f} (median; min {figures['ratio_joint_over_plain']['min']:.3f}, "
          f"max {figures['ratio_joint_over_plain']['max']:.3f}) → target <= 1.05 {'met' if figures['meets_target'] else 'NOT met'}")
    shape = {"encoder": args.encoder, "num_mel_bins": args.num_mel_bins, "frames": args.frames,
             "asc_batch_size": args.asc_batch_size, "aet_batch_size": args.aet_batch_size, "precision": args.precision,
             "device": args.device, "channels_last": args.channels_last, "compile": args.compile,
             "rounds": args.rounds, "steps_per_round": args.steps}
    common.write_results(NAME, {"settings": shape, **figures}, args.output)
    return figures


if __name__ == "__main__":
    main()
