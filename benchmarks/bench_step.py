"""Training-step throughput of the joint model against the bare network it is built on (the ceiling).

    python benchmarks/bench_step.py --threads 1                       # CPU default: 64 mels x 101 frames, 16 + 32
    python benchmarks/bench_step.py --device cuda --num_mel_bins 128 --frames 1001 \
        --asc_batch_size 64 --aet_batch_size 128 --precision bf16 --channels_last \
        --placement device                                            # the paper's shape, on a GPU

Arms (`--arms`, default `joint,bare`):

joint: `SceneEventModel` fed exactly as training.py feeds it: the loader's two sub-batches →
       `prepare_batch` (to the device, upcast, SpecAugment + MixUp per task as the paper has them on
       real data, `join_task_batches`) →
       forward with both label sets (masked losses, alpha-weighted) → backward → AdamW step.
noaug: the same with augmentation off (`build_augmenters` with every flag off): joint − noaug is
       what SpecAugment + MixUp cost, noaug − bare what the join, the upcasts and the masked losses cost.
bare:  the ceiling: the same network and nothing else — per-mel-bin `nn.BatchNorm1d`, the timm encoder
       (`in_chans=1, num_classes=0`), two `nn.Linear` heads — on one joined batch (as a loader that
       fills one buffer would give it); cross-entropy on the scene rows' logits, BCE on the event
       rows', no masks, no augmentation, no dropout.

Data placement (`--placement`), the same for every arm: `device` — the batch already sits on the
training device (as with `--cache_on_device`); `pinned` — a page-locked host batch copied to the
device every step on the training stream (the loader copies on a side stream instead); `pageable` — an ordinary host batch
copied every step. The joint arm copies with `prepare_batch`'s own `send_to_device`, the bare arm
with `.to(device, non_blocking=True)`. On a CPU there is no copy: `.to("cpu")` returns the batch
itself, so `pageable` is `device` there, and `pinned` is refused (page-locked memory only matters
for copies to a GPU). Features are fp16 on the host by default, as the cache stores them and the
loader yields them (`--feature_dtype fp32` for the old fp32 batch); both arms upcast them on the device.

All arms run in one process, in an order rotated every round so that machine noise hits them alike;
the figure is the median over rounds of the joint/bare time ratio (target <= 1.05). Beside the wall
time, the process's CPU time per step is recorded: on a CPU shared with other work, run with
`--threads 1` and read the CPU-time ratio (the work the step did, whatever share of a core it got);
on a GPU read the wall-time ratio (the CPU time is then the host's launch work). The first
`--warmup` steps of each arm are timed separately (with `--compile` they hold the compile time).
The step closures mark `prepare_batch` and the bare arm's input and losses with
`torch.profiler.record_function` ranges, which `profile_step.py` reports.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import timm
import torch
from torch import nn
from torch.nn import functional as F
from torch.profiler import record_function
from transformers import HfArgumentParser

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from sceneevent import SceneEventConfig, SceneEventModel

# The training loop's own batch path: the benchmark follows training.py if it changes.
from sceneevent.training.loop import prepare_batch

NAME = "bench_step"
ARMS = ("joint", "noaug", "bare")
PLACEMENTS = ("device", "pinned", "pageable")
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


@dataclass
class StepArguments:
    device: str = field(default="cpu", metadata={"help": "cpu or cuda."})
    encoder: str = field(default="resnet18", metadata={"help": "timm encoder (the paper: resnet18)."})
    asc_batch_size: int = field(default=16, metadata={"help": "Scene clips per step (the paper: 64; CPU default 16)."})
    aet_batch_size: int = field(default=32, metadata={"help": "Event clips per step (the paper: 128; CPU default 32)."})
    num_mel_bins: int = field(default=64, metadata={"help": "Mel bins (the paper: 128; CPU default 64)."})
    frames: int = field(default=101, metadata={"help": "Frames per clip (the paper: 1001 = 10 s; CPU default 101 = 1 s)."})
    precision: str = field(default="fp32", metadata={"help": "fp32 or bf16 (autocast, as accelerate's bf16 does)."})
    channels_last: bool = field(default=False, metadata={"help": "Every model in channels_last memory format."})
    compile: bool = field(default=False, metadata={"help": "torch.compile every model (slow to start on CPU)."})
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = field(
        default="default", metadata={"help": "torch.compile mode with --compile (reduce-overhead: CUDA graphs)."})
    placement: str = field(default="device", metadata={"help": "Where each step's batch comes from, for every arm: "
                           "device (already there), pinned (page-locked host batch copied each step; CUDA only) or "
                           "pageable (host batch copied each step; on a CPU the same as device)."})
    feature_dtype: str = field(default="fp16", metadata={"help": "Host features: fp16 (as the cache and the loader) or fp32."})
    arms: str = field(default="joint,bare", metadata={"help": f"Comma-separated arms out of {', '.join(ARMS)}; bare is needed for the ratio."})
    rounds: int = field(default=7, metadata={"help": "Rounds; the median over rounds is reported."})
    steps: int = field(default=4, metadata={"help": "Timed training steps per arm per round."})
    warmup: int = field(default=2, metadata={"help": "Untimed steps per arm before the first round (with --compile: 3 or more)."})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads. Default: torch's own choice."})
    seed: int = field(default=0, metadata={"help": "Seed of the weights and the random batch."})
    output: str | None = field(default=None, metadata={"help": "JSON path. Default: benchmarks/results/bench_step.json."})


def check_arguments(args: StepArguments) -> list[str]:
    """The arms to run; ValueError with the reason for a combination that cannot be measured."""
    if args.precision not in ("fp32", "bf16"):
        raise ValueError(f"--precision must be fp32 or bf16, got {args.precision!r}")
    if args.feature_dtype not in DTYPES:
        raise ValueError(f"--feature_dtype must be fp16 or fp32, got {args.feature_dtype!r}")
    if args.placement not in PLACEMENTS:
        raise ValueError(f"--placement must be one of {', '.join(PLACEMENTS)}, got {args.placement!r}")
    device = torch.device(args.device)
    if args.placement == "pinned" and device.type != "cuda":
        raise ValueError(
            f"--placement pinned needs a CUDA device (got {args.device!r}): page-locked host memory only speeds up "
            "copies from the host to a GPU. On a CPU the batch already sits where the step reads it, and "
            "--placement device and pageable measure the same thing."
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but torch sees no CUDA device")
    arms = [arm.strip() for arm in args.arms.split(",") if arm.strip()]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown or not arms or len(set(arms)) != len(arms):
        raise ValueError(f"--arms takes distinct names out of {', '.join(ARMS)}, got {args.arms!r}")
    return arms


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
    return torch.compile(model, mode=args.compile_mode) if args.compile else model


def joint_config(args: StepArguments) -> SceneEventConfig:
    return SceneEventConfig(
        scene_labels=[f"scene_{i}" for i in range(common.NUM_SCENES)],
        event_labels=[f"event_{i}" for i in range(common.NUM_EVENTS)],
        encoder=args.encoder, num_mel_bins=args.num_mel_bins, alpha=0.95,
    )


augmenters = common.paper_augmenters


def joint_step_fn(args: StepArguments, device: torch.device, batch: dict, augmentation: bool = True):
    """One training step of the project's path, as a closure (`augmentation=False`: the noaug arm)."""
    raw = SceneEventModel(joint_config(args))
    model = prepare(raw, args, device)
    optimizer = make_optimizer(model, device)
    augment = augmenters(augmentation).to(device)
    batch = place(batch, args.placement, device)

    def step() -> None:
        # A fresh dict per step: `prepare_batch` replaces tensors in the dicts it is given.
        item = {task: dict(sub) for task, sub in batch.items()}
        with record_function("range: prepare_batch"):  # named ranges: profile_step.py reports their total time
            inputs = prepare_batch(item, augment, device, raw.config)
        with autocast(args, device):
            outputs = model(**inputs)
        outputs.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def bare_step_fn(args: StepArguments, device: torch.device, batch: dict):
    """One training step of the bare network on one joined batch, as a closure."""
    model = prepare(BareModel(args.encoder, args.num_mel_bins, common.NUM_SCENES, common.NUM_EVENTS), args, device)
    optimizer = make_optimizer(model, device)
    scenes = args.asc_batch_size
    # One joined buffer, made once (a loader could fill it directly), kept where --placement says.
    joined = place({"input_features": torch.cat([batch["asc"]["input_features"], batch["aet"]["input_features"]]),
                    "scene_labels": batch["asc"]["scene_labels"], "event_labels": batch["aet"]["event_labels"]},
                   args.placement, device)

    def step() -> None:
        with record_function("range: batch to device"):
            features = joined["input_features"].to(device, non_blocking=True).float()
            scene_labels = joined["scene_labels"].to(device, non_blocking=True)
            event_labels = joined["event_labels"].to(device, non_blocking=True)
        with autocast(args, device):
            scene_logits, event_logits = model(features)
        with record_function("range: losses"):
            loss_asc = F.cross_entropy(scene_logits[:scenes].float(), scene_labels)
            loss_aet = F.binary_cross_entropy_with_logits(event_logits[scenes:].float(), event_labels)
            loss = 0.95 * loss_aet + 0.05 * loss_asc
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def build_arms(args: StepArguments, device: torch.device, names: list[str]) -> dict:
    """{arm name: step closure}, every arm from the same seed and the same host batch."""
    batch = host_batch(args)
    builders = {"joint": lambda: joint_step_fn(args, device, batch),
                "noaug": lambda: joint_step_fn(args, device, batch, augmentation=False),
                "bare": lambda: bare_step_fn(args, device, batch)}
    arms = {}
    for name in names:
        torch.manual_seed(args.seed)  # the same initial weights for the same network
        arms[name] = builders[name]()
    return arms


def run_steps(step, count: int) -> None:
    for _ in range(count):
        step()


def time_steps(step, count: int, device: torch.device) -> tuple[float, float]:
    """Wall seconds and CPU seconds of this process per step, device work included in the wall time."""
    common.sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    run_steps(step, count)
    common.sync(device)
    return (time.perf_counter() - wall) / count, (time.process_time() - cpu) / count


def measure(args: StepArguments, names: list[str]) -> dict:
    device = torch.device(args.device)
    arms = build_arms(args, device, names)
    warmup_seconds = {}
    for name, step in arms.items():
        # With --compile the first steps hold the compile time: reported apart, never in the figure.
        warmup_seconds[name] = common.time_call(functools.partial(run_steps, step, args.warmup), device)
    seconds = {name: [] for name in arms}
    cpu_seconds = {name: [] for name in arms}
    ratios = {name: [] for name in arms if name != "bare"} if "bare" in arms else {}
    cpu_ratios = {name: [] for name in ratios}
    for round_index in range(args.rounds):
        for name in common.rotated(names, round_index):
            wall, cpu = time_steps(arms[name], args.steps, device)
            seconds[name].append(wall)
            cpu_seconds[name].append(cpu)
        for name in ratios:
            ratios[name].append(seconds[name][-1] / seconds["bare"][-1])
            cpu_ratios[name].append(cpu_seconds[name][-1] / cpu_seconds["bare"][-1])
        print(f"  round {round_index + 1}/{args.rounds}: "
              + ", ".join(f"{name} {seconds[name][-1] * 1e3:.1f} ms/step (CPU {cpu_seconds[name][-1] * 1e3:.1f})" for name in names)
              + "".join(f", {name}/bare {values[-1]:.3f} (CPU {cpu_ratios[name][-1]:.3f})" for name, values in ratios.items()),
              flush=True)
    samples = args.asc_batch_size + args.aet_batch_size
    figures = {
        "seconds_per_step": {name: common.spread(values) for name, values in seconds.items()},
        "samples_per_second": {name: samples / common.median(values) for name, values in seconds.items()},
        "warmup_seconds": warmup_seconds,
        "seconds": seconds,
        # CPU seconds of the whole process per step: on a CPU with --threads 1 this is the compute the
        # step took, whatever share of the cores other processes got meanwhile (the wall time is not);
        # on a GPU it is the host's launch work only.
        "cpu_seconds_per_step": {name: common.spread(values) for name, values in cpu_seconds.items()},
        "cpu_seconds": cpu_seconds,
    }
    for name, values in ratios.items():
        figures[f"ratio_{name}_over_bare"] = common.spread(values)
        figures[f"ratios_{name}_over_bare"] = values
        figures[f"cpu_time_ratio_{name}_over_bare"] = common.spread(cpu_ratios[name])
        figures[f"cpu_time_ratios_{name}_over_bare"] = cpu_ratios[name]
    if "joint" in ratios:
        figures["target_ratio"] = 1.05
        figures["meets_target"] = common.median(ratios["joint"]) <= 1.05
    return figures


def load_average() -> list[float] | None:
    try:
        with open("/proc/loadavg") as handle:
            return [float(value) for value in handle.read().split()[:3]]
    except OSError:
        return None


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(StepArguments).parse_args_into_dataclasses(args=argv)
    names = check_arguments(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"step benchmark: {args.encoder}, input {args.num_mel_bins} mels x {args.frames} frames, batch "
          f"{args.asc_batch_size} ASC + {args.aet_batch_size} AET, {args.precision}, device {args.device}"
          f"{' (' + torch.cuda.get_device_name(0) + ')' if torch.device(args.device).type == 'cuda' else ''}, "
          f"placement {args.placement} ({args.feature_dtype} features), channels_last {args.channels_last}, "
          f"compile {args.compile}, {torch.get_num_threads()} threads, arms {names}, "
          f"{args.rounds} rounds x {args.steps} steps", flush=True)
    load_before = load_average()
    started = time.perf_counter()
    figures = measure(args, names)
    load_after = load_average()
    summary = ", ".join(f"{name} {value:.1f}" for name, value in figures["samples_per_second"].items())
    print(f"samples/s: {summary}; warm-up ({args.warmup} steps): "
          + ", ".join(f"{name} {value:.1f} s" for name, value in figures["warmup_seconds"].items()))
    for name in names:
        if f"ratio_{name}_over_bare" in figures:
            spread = figures[f"ratio_{name}_over_bare"]
            verdict = f" → target <= 1.05 {'met' if figures['meets_target'] else 'NOT met'}" if name == "joint" else ""
            print(f"{name}/bare time ratio {spread['median']:.3f} (median; min {spread['min']:.3f}, max {spread['max']:.3f}){verdict}")
            spread = figures[f"cpu_time_ratio_{name}_over_bare"]
            print(f"{name}/bare process-CPU-time ratio {spread['median']:.3f} (median; min {spread['min']:.3f}, "
                  f"max {spread['max']:.3f}){'' if torch.device(args.device).type == 'cpu' else ' (host launch work only)'}")
    print(f"load average before / after: {load_before} / {load_after}")
    settings = {"encoder": args.encoder, "num_mel_bins": args.num_mel_bins, "frames": args.frames,
                "asc_batch_size": args.asc_batch_size, "aet_batch_size": args.aet_batch_size, "precision": args.precision,
                "device": args.device, "channels_last": args.channels_last, "compile": args.compile,
                "compile_mode": args.compile_mode if args.compile else None,
                "placement": args.placement, "feature_dtype": args.feature_dtype, "arms": names,
                "rounds": args.rounds, "steps_per_round": args.steps, "warmup_steps": args.warmup}
    common.write_results(NAME, {"settings": settings, "load_average": {"before": load_before, "after": load_after},
                                "wall_seconds": time.perf_counter() - started, **figures}, args.output)
    return figures


if __name__ == "__main__":
    main()
