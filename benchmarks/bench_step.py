"""The joint model's training step against the bare network it is built on (the ceiling), three ways.

    python benchmarks/bench_step.py --threads 1                       # arms: steps/s and joint/bare (CPU shape)
    python benchmarks/bench_step.py --threads 1 --mode parts          # the joint path's pieces timed alone
    python benchmarks/bench_step.py --threads 1 --mode profile --arms joint,noaug,bare   # torch.profiler, op by op
    python benchmarks/bench_step.py --device cuda --num_mel_bins 128 --frames 1001 \
        --asc_batch_size 64 --aet_batch_size 128 --precision bf16 --channels_last   # the paper's shape, on a GPU

The arms (`--arms`, default `joint,bare`) are in `step_arms.py`: `joint` is the loop's own `training_step`,
`noaug` the same without augmentation, `bare` the network alone. `--placement` says where each step's batch
comes from, for every arm alike: `device` (already on the training device, as with `--cache_on_device`),
`pinned` (a page-locked host batch copied every step on the training stream; CUDA only) or `pageable` (an
ordinary host batch copied every step; on a CPU `.to("cpu")` returns the batch itself, so it is `device`).

--mode arms (writes results/bench_step.json): all arms in one process, in an order rotated every round so that
machine noise hits them alike; the figure is the median over rounds of the joint/bare time ratio (target <=
1.05). Beside the wall time the process's CPU time per step is recorded: on a shared CPU run with `--threads 1`
and read the CPU-time ratio (the work the step did, whatever share of a core it got); on a GPU read the wall
time (the CPU time is then the host's launch work). The `--warmup` steps are timed apart (with `--compile`
they hold the compile).

--mode parts (bench_step_parts.json): a whole CPU step is seconds, the joint path's own work a fraction of a
millisecond: invisible in step timings, measurable timed alone, many calls per round, pieces rotated. Each
figure is the median over rounds of the time per call (process CPU time on a CPU, wall time with a sync on a
GPU): `prepare_batch` with and without augmentation, its parts (upcast + join, SpecAugment, MixUp), the masked
losses of `SceneEventModel` against plain CE + BCE, against the bare arm's input cast and its whole step.

--mode profile (bench_step_profile.json): `torch.profiler` over `--steps` steps of every arm per round; an op's
figure is the median over rounds of its self time per step. Printed: each arm's top ops, the ops only an arm
calls and its largest differences from `bare` (where the extra time goes), and the ops that make a GPU wait.
"""

from __future__ import annotations

import functools
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.profiler import ProfilerActivity, profile
from transformers import HfArgumentParser

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import step_arms

from sceneevent.models.losses import event_loss, joint_loss, scene_loss
from sceneevent.training.augment import MixUp
from sceneevent.training.step import prepare_batch

NAMES = {"arms": "bench_step", "parts": "bench_step_parts", "profile": "bench_step_profile"}
# `.item()`, `bool(tensor)`, `torch.nonzero`: each reads a value back from the device, i.e. waits for the GPU;
# `aten::lift_fresh` is `torch.tensor(<Python value>)`, which with `device=cuda` is a blocking host-to-device copy.
SYNC_OPS = ("aten::_local_scalar_dense", "aten::item", "aten::is_nonzero", "aten::nonzero", "aten::lift_fresh")


def run_steps(step, count: int) -> None:
    for _ in range(count):
        step()


def time_steps(step, count: int, device: torch.device) -> tuple[float, float]:
    """Wall seconds and CPU seconds of this process per call, device work included in the wall time."""
    common.sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    run_steps(step, count)
    common.sync(device)
    return (time.perf_counter() - wall) / count, (time.process_time() - cpu) / count


def measure_arms(args: step_arms.StepArguments, arms: dict, device: torch.device) -> dict:
    names = list(arms)
    # With --compile the first steps hold the compile time: reported apart, never in the figure.
    warmup_seconds = {name: common.time_call(functools.partial(run_steps, step, args.warmup), device) for name, step in arms.items()}
    seconds = {name: [] for name in names}
    cpu_seconds = {name: [] for name in names}
    ratios = {name: [] for name in names if name != "bare"} if "bare" in arms else {}
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
        # With --threads 1 on a CPU the compute the step took, whatever share of the cores it got; on a GPU the
        # host's launch work only.
        "cpu_seconds_per_step": {name: common.spread(values) for name, values in cpu_seconds.items()},
        "cpu_seconds": cpu_seconds,
    }
    for name, values in ratios.items():
        figures[f"ratio_{name}_over_bare"] = common.spread(values)
        figures[f"ratios_{name}_over_bare"] = values
        figures[f"cpu_time_ratio_{name}_over_bare"] = common.spread(cpu_ratios[name])
        figures[f"cpu_time_ratios_{name}_over_bare"] = cpu_ratios[name]
    print("samples/s: " + ", ".join(f"{name} {value:.1f}" for name, value in figures["samples_per_second"].items())
          + f"; warm-up ({args.warmup} steps): " + ", ".join(f"{name} {value:.1f} s" for name, value in warmup_seconds.items()))
    for name in ratios:
        wall, cpu = figures[f"ratio_{name}_over_bare"], figures[f"cpu_time_ratio_{name}_over_bare"]
        verdict = f" → target <= 1.05 {'met' if wall['median'] <= 1.05 else 'NOT met'}" if name == "joint" else ""
        print(f"{name}/bare time ratio {wall['median']:.3f} (median; min {wall['min']:.3f}, max {wall['max']:.3f}){verdict}")
        print(f"{name}/bare process-CPU-time ratio {cpu['median']:.3f} (median; min {cpu['min']:.3f}, max {cpu['max']:.3f})"
              + ("" if device.type == "cpu" else " (host launch work only)"))
    if "joint" in ratios:
        figures["target_ratio"] = 1.05
        figures["meets_target"] = common.median(ratios["joint"]) <= 1.05
    return figures


def measure_parts(args: step_arms.StepArguments, device: torch.device) -> dict:
    host = step_arms.host_batch(args)
    batch = step_arms.place(host, args.placement, device)
    config = step_arms.joint_config(args)
    augment = common.paper_augmenters(True).to(device)
    no_augment = common.paper_augmenters(False)
    joined = torch.cat([batch["asc"]["input_features"], batch["aet"]["input_features"]])
    asc32, aet32 = (batch[task]["input_features"].to(device).float() for task in ("asc", "aet"))
    mixup, specaugment = MixUp(0.3).train(), augment["asc_specaugment"]
    scenes = args.asc_batch_size
    joined_inputs = prepare_batch({t: dict(s) for t, s in batch.items()}, no_augment, device, config)
    scene_labels, event_labels = joined_inputs["scene_labels"], joined_inputs["event_labels"]
    plain_scene, plain_event = batch["asc"]["scene_labels"].to(device), batch["aet"]["event_labels"].to(device)
    rows = scenes + args.aet_batch_size
    scene_logits = torch.randn(rows, config.num_scenes, device=device, requires_grad=True)
    event_logits = torch.randn(rows, config.num_events, device=device, requires_grad=True)

    def masked_losses():
        joint_loss(scene_loss(scene_logits, scene_labels), event_loss(event_logits, event_labels), 0.95).backward()

    def plain_losses():
        loss_asc = F.cross_entropy(scene_logits[:scenes].float(), plain_scene)
        loss_aet = F.binary_cross_entropy_with_logits(event_logits[scenes:].float(), plain_event)
        (0.95 * loss_aet + 0.05 * loss_asc).backward()

    pieces = {
        "bare_input": lambda: joined.to(device, non_blocking=True).float(),
        "prepare_batch": lambda: prepare_batch({t: dict(s) for t, s in batch.items()}, augment, device, config),
        "prepare_batch_noaug": lambda: prepare_batch({t: dict(s) for t, s in batch.items()}, no_augment, device, config),
        # what prepare_batch does to the features besides augmenting
        "upcast_and_join": lambda: torch.cat([batch[t]["input_features"].to(device).float() for t in ("asc", "aet")]),
        "specaugment": lambda: (specaugment(asc32), specaugment(aet32)),
        "mixup": lambda: (mixup(asc32, plain_scene, config.num_scenes), mixup(aet32, plain_event)),
        "masked_losses": masked_losses,
        "plain_losses": plain_losses,
    }
    clock = 1 if device.type == "cpu" else 0  # time_steps' (wall, CPU): other processes' load does not inflate CPU time
    for fn in pieces.values():
        run_steps(fn, args.warmup)  # allocator, lazy init
    times = {name: [] for name in pieces}
    for round_index in range(args.rounds):
        for name in common.rotated(list(pieces), round_index):
            times[name].append(time_steps(pieces[name], args.steps, device)[clock])
    bare_step = step_arms.bare_step_fn(args, device, host)
    run_steps(bare_step, args.warmup)
    step_seconds = common.median([time_steps(bare_step, 1, device)[clock] for _ in range(3)])
    medians = {name: common.median(values) for name, values in times.items()}
    print(f"{'process CPU' if clock else 'wall'} time per call, median of {args.rounds} rounds x {args.steps} calls:")
    for name, value in medians.items():
        print(f"  {name:<20} {value * 1e6:10.1f} us  ({value / step_seconds * 100:.3f} % of a bare step)")
    extra = medians["prepare_batch"] - medians["bare_input"] + medians["masked_losses"] - medians["plain_losses"]
    print(f"bare step: {step_seconds * 1e3:.1f} ms; the joint path's own extra (prepare_batch − bare_input + masked − "
          f"plain losses): {extra * 1e6:.0f} us = {extra / step_seconds * 100:.2f} % of the step")
    return {"clock": "process CPU" if clock else "wall", "seconds_per_call": medians, "all_seconds": times,
            "bare_step_seconds": step_seconds, "joint_extra_seconds": extra, "joint_extra_share_of_step": extra / step_seconds}


def profile_steps(step, steps: int, device: torch.device) -> tuple[dict, float]:
    """{op: (self CPU us, self device us, calls) per step}, and the wall seconds per step under the profiler."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        wall, _ = time_steps(step, steps, device)
    return {event.key: (event.self_cpu_time_total / steps, event.self_device_time_total / steps, event.count / steps)
            for event in prof.key_averages()}, wall


def table(title: str, rows: list[tuple], columns: tuple[str, ...], cuda: bool) -> None:
    """Rows of (op, CPU, device, calls) figures; the device column only on a GPU."""
    keep = [0, 1, 2, 3] if cuda else [0, 1, 3]
    columns, rows = [columns[i] for i in keep], [[row[i] for i in keep] for row in rows]
    width = min(70, max(len(row[0]) for row in rows) if rows else 10)
    print(f"\n{title}\n{columns[0]:<{width}}  " + "  ".join(f"{c:>12}" for c in columns[1:]))
    for name, *values in rows:
        name = name if len(name) <= width else name[: width - 3] + "..."
        print(f"{name:<{width}}  " + "  ".join(f"{v:>12.1f}" for v in values))


def measure_profile(args: step_arms.StepArguments, arms: dict, device: torch.device) -> dict:
    for step in arms.values():
        run_steps(step, args.warmup)
    rounds, walls = {name: [] for name in arms}, {name: [] for name in arms}
    for round_index in range(args.rounds):
        for name in common.rotated(list(arms), round_index):
            ops, wall = profile_steps(arms[name], args.steps, device)
            rounds[name].append(ops)
            walls[name].append(wall)
        print(f"  round {round_index + 1}: " + ", ".join(f"{n} {walls[n][-1] * 1e3:.1f} ms/step" for n in arms), flush=True)
    per_arm = {name: {op: tuple(statistics.median(r.get(op, (0.0, 0.0, 0.0))[i] for r in values) for i in range(3))
                      for op in set().union(*values)} for name, values in rounds.items()}
    cuda = device.type == "cuda"
    sort = 1 if cuda else 0  # on a GPU the device time is the figure, on a CPU the CPU time
    columns = ("op", "self CPU us", "self dev us", "calls")
    report = {"wall_ms_per_step_under_profiler": {n: statistics.median(w) * 1e3 for n, w in walls.items()},
              "self_cpu_ms_per_step": {n: sum(v[0] for v in ops.values()) / 1e3 for n, ops in per_arm.items()},
              "self_device_ms_per_step": {n: sum(v[1] for v in ops.values()) / 1e3 for n, ops in per_arm.items()},
              "top": {}, "own_ops": {}, "differences": {}}
    for name, ops in per_arm.items():
        ranked = sorted(ops.items(), key=lambda item: -item[1][sort])[: args.top]
        report["top"][name] = {op: dict(zip(columns[1:], values)) for op, values in ranked}
        table(f"== {name}: top ops (median of {args.rounds} rounds, per step) ==", [(op, *v) for op, v in ranked], columns, cuda)
    base = per_arm.get("bare")
    for name, ops in per_arm.items():
        if base is None or name == "bare":
            continue
        # The ops the bare step never calls: the joint path's own work, without the network's noise (its
        # convolutions vary by more than all of this from round to round).
        own = sorted(((op, *v) for op, v in ops.items() if op not in base), key=lambda row: -row[1 + sort])
        own_cpu = sum(row[1] for row in own)
        share = own_cpu / 1e3 / report["self_cpu_ms_per_step"]["bare"]
        report["own_ops"][name] = {"self_cpu_us_per_step": own_cpu, "share_of_bare_self_cpu": share,
                                   "ops": {row[0]: dict(zip(columns[1:], row[1:])) for row in own}}
        table(f"== ops only {name} calls: {own_cpu:.0f} us self CPU per step ({share * 100:.3f} % of bare's) ==",
              own[: args.top], columns, cuda)
        zero = (0.0, 0.0, 0.0)
        diffs = sorted(((op, *(a - b for a, b in zip(ops.get(op, zero), base.get(op, zero)))) for op in set(ops) | set(base)),
                       key=lambda row: -abs(row[1 + sort]))[: args.top]
        report["differences"][name] = {row[0]: dict(zip(columns[1:], row[1:])) for row in diffs}
        table(f"== {name} − bare: largest differences ==", diffs, ("op", "Δ self CPU", "Δ self dev", "Δ calls"), cuda)
    # On a CPU these cost nothing, but their count per step is the same as on a GPU, where each one stalls the step.
    report["sync_ops_per_step"] = {name: {op: ops[op][2] for op in SYNC_OPS if op in ops} for name, ops in per_arm.items()}
    print("\nops that make a GPU step wait (calls per step): "
          + "; ".join(f"{name}: {counts or 'none'}" for name, counts in report["sync_ops_per_step"].items()))
    for key in ("wall_ms_per_step_under_profiler", "self_cpu_ms_per_step") + (("self_device_ms_per_step",) if cuda else ()):
        print(f"{key}: " + ", ".join(f"{n} {v:.1f}" for n, v in report[key].items()))
    return report


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(step_arms.StepArguments).parse_args_into_dataclasses(args=argv)
    names = step_arms.check_arguments(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    accelerator = step_arms.make_accelerator(args)
    device = accelerator.device
    print(f"step benchmark, {args.mode}: {args.encoder}, input {args.num_mel_bins} mels x {args.frames} frames, batch "
          f"{args.asc_batch_size} ASC + {args.aet_batch_size} AET, {args.precision}, device {device}"
          f"{' (' + torch.cuda.get_device_name(0) + ')' if device.type == 'cuda' else ''}, placement {args.placement} "
          f"({args.feature_dtype} features), channels_last {args.channels_last}, compile {args.compile}, "
          f"{torch.get_num_threads()} threads, {args.rounds} rounds x {args.steps} "
          + ("calls" if args.mode == "parts" else f"steps, arms {names}"), flush=True)
    load_before, started = common.load_average(), time.perf_counter()
    torch.manual_seed(args.seed)
    if args.mode == "parts":
        figures = measure_parts(args, device)
    else:
        arms = step_arms.build_arms(args, accelerator, names)
        figures = (measure_arms if args.mode == "arms" else measure_profile)(args, arms, device)
    load_after = common.load_average()
    print(f"load average before / after: {load_before} / {load_after}")
    settings = {key: getattr(args, key) for key in (
        "mode", "encoder", "num_mel_bins", "frames", "asc_batch_size", "aet_batch_size", "precision", "device",
        "channels_last", "compile", "placement", "feature_dtype", "rounds", "steps", "warmup")}
    settings.update(compile_mode=args.compile_mode if args.compile else None, torch_threads=torch.get_num_threads(),
                    arms=None if args.mode == "parts" else names)
    common.write_results(NAMES[args.mode], {"settings": settings, "load_average": {"before": load_before, "after": load_after},
                                            "wall_seconds": time.perf_counter() - started, **figures}, args.output)
    return figures


if __name__ == "__main__":
    main()
