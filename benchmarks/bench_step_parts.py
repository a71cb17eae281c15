"""The joint step's own pieces timed alone, beside what the bare network does in their place, and a
proposed replacement side by side with the code it would replace.

    python benchmarks/bench_step_parts.py --threads 1                 # CPU default shape (as bench_step.py)
    python benchmarks/bench_step_parts.py --device cuda --num_mel_bins 128 --frames 1001 \
        --asc_batch_size 64 --aet_batch_size 128

A whole CPU step is seconds, the joint path's extra work is a fraction of a millisecond, and the
machine is shared: a difference that small is invisible in step timings (bench_step.py's ratios
scatter by ±10 % per round). Timed alone, many calls per repeat, pieces alternating, it is
measurable. Each figure is the median over repeats of the time per call (process CPU time on a
CPU, which other processes' load does not inflate; wall time with a device sync on a GPU).

Pieces: `bare_input` (the bare arm's `.float()` of one joined batch), `prepare_batch` with the
default augmentation and without, the parts of it (`upcast_and_join`, `specaugment`, `mixup`), the
masked losses of `SceneEventModel` vs plain CE + BCE on the sub-batches (forward + backward), and
the proposal `join_then_upcast` (concatenate the fp16 sub-batches, then upcast once). (The MixUp
proposal measured here before is now `augment.MixUp` itself; its figures are in docs/performance.md.) Writes
`benchmarks/results/bench_step_parts.json`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn import functional as F
from transformers import HfArgumentParser

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_step
import common

from sceneevent.training.augment import MixUp
from sceneevent.models.losses import event_loss, joint_loss, scene_loss
from sceneevent.training.loop import prepare_batch

NAME = "bench_step_parts"


@dataclass
class PartsArguments:
    calls: int = field(default=20, metadata={"help": "Calls per timed repeat."})
    repeats: int = field(default=15, metadata={"help": "Repeats (pieces alternate within each); the median is reported."})
    step_repeats: int = field(default=3, metadata={"help": "Bare training steps timed for the denominator (0: skip)."})
    parts_output: str | None = field(default=None, metadata={"help": "JSON path. Default: benchmarks/results/bench_step_parts.json."})


def timer(device: torch.device):
    cpu = device.type == "cpu"

    def measure(fn, calls: int) -> float:
        common.sync(device)
        start = time.process_time() if cpu else time.perf_counter()
        for _ in range(calls):
            fn()
        common.sync(device)
        return ((time.process_time() if cpu else time.perf_counter()) - start) / calls

    return measure


def main(argv: list[str] | None = None) -> dict:
    step_args, args = HfArgumentParser((bench_step.StepArguments, PartsArguments)).parse_args_into_dataclasses(args=argv)
    bench_step.check_arguments(step_args)
    if step_args.threads:
        torch.set_num_threads(step_args.threads)
    device = torch.device(step_args.device)
    torch.manual_seed(step_args.seed)
    host = bench_step.host_batch(step_args)
    batch = bench_step.place(host, step_args.placement, device)
    config = bench_step.joint_config(step_args)
    augment = bench_step.augmenters(True).to(device)
    no_augment = bench_step.augmenters(False)
    joined = torch.cat([batch["asc"]["input_features"], batch["aet"]["input_features"]])
    asc32 = batch["asc"]["input_features"].to(device).float()
    aet32 = batch["aet"]["input_features"].to(device).float()
    mixup = MixUp(0.3).train()
    specaugment = augment["asc_specaugment"]
    scenes = step_args.asc_batch_size
    rows = scenes + step_args.aet_batch_size
    joined_inputs = prepare_batch({t: dict(s) for t, s in batch.items()}, no_augment, device, config)
    scene_labels, event_labels = joined_inputs["scene_labels"], joined_inputs["event_labels"]
    plain_scene, plain_event = batch["asc"]["scene_labels"].to(device), batch["aet"]["event_labels"].to(device)
    scene_logits = torch.randn(rows, config.num_scenes, device=device, requires_grad=True)
    event_logits = torch.randn(rows, config.num_events, device=device, requires_grad=True)

    def masked_losses():
        loss = joint_loss(scene_loss(scene_logits, scene_labels), event_loss(event_logits, event_labels), 0.95)
        loss.backward()

    def plain_losses():
        loss_asc = F.cross_entropy(scene_logits[:scenes].float(), plain_scene)
        loss_aet = F.binary_cross_entropy_with_logits(event_logits[scenes:].float(), plain_event)
        (0.95 * loss_aet + 0.05 * loss_asc).backward()

    def upcast_and_join():  # what prepare_batch does to the features besides augmenting
        torch.cat([batch["asc"]["input_features"].to(device).float(), batch["aet"]["input_features"].to(device).float()])

    def join_then_upcast():
        torch.cat([batch["asc"]["input_features"].to(device), batch["aet"]["input_features"].to(device)]).float()

    pieces = {
        "bare_input": lambda: joined.to(device, non_blocking=True).float(),
        "prepare_batch": lambda: prepare_batch({t: dict(s) for t, s in batch.items()}, augment, device, config),
        "prepare_batch_noaug": lambda: prepare_batch({t: dict(s) for t, s in batch.items()}, no_augment, device, config),
        "upcast_and_join": upcast_and_join,
        "join_then_upcast": join_then_upcast,
        "specaugment": lambda: (specaugment(asc32), specaugment(aet32)),
        "mixup": lambda: (mixup(asc32, plain_scene, config.num_scenes), mixup(aet32, plain_event)),
        "masked_losses": masked_losses,
        "plain_losses": plain_losses,
    }
    measure = timer(device)
    names = list(pieces)
    for fn in pieces.values():  # warm-up: allocator, lazy init
        measure(fn, 2)
    times = {name: [] for name in names}
    for repeat in range(args.repeats):
        for name in common.rotated(names, repeat):
            times[name].append(measure(pieces[name], args.calls))
    step_seconds = None
    if args.step_repeats:
        step = bench_step.bare_step_fn(step_args, device, host)
        step()
        step_seconds = common.median([measure(step, 1) for _ in range(args.step_repeats)])
    medians = {name: common.median(values) for name, values in times.items()}
    clock = "process CPU" if device.type == "cpu" else "wall"
    print(f"step pieces: {step_args.num_mel_bins} x {step_args.frames}, {step_args.asc_batch_size} + {step_args.aet_batch_size}, "
          f"{step_args.feature_dtype} features, placement {step_args.placement}, device {device}, {torch.get_num_threads()} threads; "
          f"{clock} time per call, median of {args.repeats} x {args.calls} calls; load {bench_step.load_average()}")
    for name in names:
        share = f"  ({medians[name] / step_seconds * 100:.3f} % of a bare step)" if step_seconds else ""
        print(f"  {name:<20} {medians[name] * 1e6:10.1f} us{share}")
    extra = medians["prepare_batch"] - medians["bare_input"] + medians["masked_losses"] - medians["plain_losses"]
    if step_seconds:
        print(f"bare step: {step_seconds * 1e3:.1f} ms ({clock}); joint path's own extra (prepare_batch − bare_input + "
              f"masked − plain losses): {extra * 1e6:.0f} us = {extra / step_seconds * 100:.2f} % of the step")
    print(f"upcast_and_join / join_then_upcast: {medians['upcast_and_join'] / medians['join_then_upcast']:.2f}x")
    settings = {key: getattr(step_args, key) for key in ("num_mel_bins", "frames", "asc_batch_size", "aet_batch_size",
                                                          "device", "placement", "feature_dtype")}
    settings.update(calls=args.calls, repeats=args.repeats, clock=clock, torch_threads=torch.get_num_threads())
    payload = {"settings": settings, "load_average": bench_step.load_average(), "seconds_per_call": medians,
               "all_seconds": times, "bare_step_seconds": step_seconds, "joint_extra_seconds": extra,
               "joint_extra_share_of_step": extra / step_seconds if step_seconds else None}
    common.write_results(NAME, payload, args.parts_output)
    return payload


if __name__ == "__main__":
    main()
