"""Where the joint step's extra time goes: `torch.profiler` over the arms of bench_step.py, op by op.

    python benchmarks/profile_step.py --threads 1                      # CPU default shape, joint vs bare
    python benchmarks/profile_step.py --arms joint,noaug,bare          # SpecAugment + MixUp apart
    python benchmarks/profile_step.py --device cuda --num_mel_bins 128 --frames 1001 \
        --asc_batch_size 64 --aet_batch_size 128 --precision bf16 --channels_last --steps 10

Takes every option of bench_step.py (same arms, shape, placement, precision) plus the ones below.
Each round profiles `--steps` steps of every arm (order rotated per round, as the benchmark does);
an op's figure is the median over rounds of its self time per step. Printed: the top ops of each
arm by self CPU time (and self device time on a GPU), then the ops whose time differs most
between each arm and `bare` — that list is where the joint path's extra time goes. Writes
`benchmarks/results/bench_step_profile.json`.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import HfArgumentParser

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_step
import common

NAME = "bench_step_profile"
# `.item()`, `bool(tensor)`, `torch.nonzero`: each reads a value back from the device, i.e. waits for the GPU;
# `aten::lift_fresh` is `torch.tensor(<Python value>)`, which with `device=cuda` is a blocking host-to-device copy.
SYNC_OPS = ("aten::_local_scalar_dense", "aten::item", "aten::is_nonzero", "aten::nonzero", "aten::lift_fresh")


@dataclass
class ProfileArguments:
    profile_rounds: int = field(default=3, metadata={"help": "Profiled rounds; an op's figure is its median over rounds."})
    top: int = field(default=15, metadata={"help": "Rows per table."})
    profile_output: str | None = field(default=None, metadata={"help": "JSON path. Default: benchmarks/results/bench_step_profile.json."})


def self_device_us(event) -> float:
    for name in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(event, name):
            return float(getattr(event, name))
    return 0.0


def profile_steps(step, steps: int, device: torch.device) -> tuple[dict, float]:
    """{op: (self CPU us, self device us, calls) per step}, and the wall seconds per step under the profiler."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        started = time.perf_counter()
        bench_step.run_steps(step, steps)
        common.sync(device)
        wall = (time.perf_counter() - started) / steps
    ops = {event.key: (event.self_cpu_time_total / steps, self_device_us(event) / steps, event.count / steps,
                       event.cpu_time_total / steps)
           for event in prof.key_averages()}
    return ops, wall


def median_ops(rounds: list[dict]) -> dict:
    names = set().union(*rounds)
    return {name: tuple(statistics.median(r.get(name, (0.0, 0.0, 0.0, 0.0))[i] for r in rounds) for i in range(4)) for name in names}


def table(title: str, rows: list[tuple], columns: tuple[str, ...]) -> str:
    width = max([len(columns[0])] + [len(str(row[0])) for row in rows])
    width = min(width, 70)
    lines = [title, f"{columns[0]:<{width}}  " + "  ".join(f"{c:>12}" for c in columns[1:])]
    for row in rows:
        name = str(row[0])
        name = name if len(name) <= width else name[: width - 3] + "..."
        lines.append(f"{name:<{width}}  " + "  ".join(f"{v:>12.1f}" if isinstance(v, float) else f"{v:>12}" for v in row[1:]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    step_args, args = HfArgumentParser((bench_step.StepArguments, ProfileArguments)).parse_args_into_dataclasses(args=argv)
    names = bench_step.check_arguments(step_args)
    if step_args.threads:
        torch.set_num_threads(step_args.threads)
    device = torch.device(step_args.device)
    cuda = device.type == "cuda"
    print(f"profiling {names}: {step_args.num_mel_bins} x {step_args.frames}, {step_args.asc_batch_size} + "
          f"{step_args.aet_batch_size}, {step_args.precision}, device {step_args.device}, placement {step_args.placement}, "
          f"{torch.get_num_threads()} threads, {args.profile_rounds} rounds x {step_args.steps} steps; "
          f"load {bench_step.load_average()}", flush=True)
    arms = bench_step.build_arms(step_args, device, names)
    for step in arms.values():
        bench_step.run_steps(step, step_args.warmup)
    common.sync(device)
    rounds = {name: [] for name in names}
    walls = {name: [] for name in names}
    for round_index in range(args.profile_rounds):
        for name in common.rotated(names, round_index):
            ops, wall = profile_steps(arms[name], step_args.steps, device)
            rounds[name].append(ops)
            walls[name].append(wall)
        print(f"  round {round_index + 1}: " + ", ".join(f"{n} {walls[n][-1] * 1e3:.1f} ms/step" for n in names), flush=True)
    per_arm = {name: median_ops(values) for name, values in rounds.items()}
    report = {"wall_ms_per_step_under_profiler": {n: statistics.median(w) * 1e3 for n, w in walls.items()},
              "self_cpu_ms_per_step": {n: sum(v[0] for v in ops.values()) / 1e3 for n, ops in per_arm.items()},
              "top": {}, "differences": {}}
    if cuda:
        report["self_device_ms_per_step"] = {n: sum(v[1] for v in ops.values()) / 1e3 for n, ops in per_arm.items()}
    sort_index = 1 if cuda else 0
    unit = "self device us/step" if cuda else "self CPU us/step"
    for name, ops in per_arm.items():
        ranked = sorted(ops.items(), key=lambda item: -item[1][sort_index])[: args.top]
        report["top"][name] = [{"op": op, "self_cpu_us": v[0], "self_device_us": v[1], "calls": v[2]} for op, v in ranked]
        print()
        print(table(f"== {name}: top ops by {unit} (median of {args.profile_rounds} rounds) ==",
                    [(op, v[0], v[1], v[2]) if cuda else (op, v[0], v[2]) for op, v in ranked],
                    ("op", "self CPU us", "self dev us", "calls") if cuda else ("op", "self CPU us", "calls")))
    if "bare" in per_arm:
        base = per_arm["bare"]
        for name, ops in per_arm.items():
            if name == "bare":
                continue
            keys = set(ops) | set(base)
            diffs = []
            for op in keys:
                a, b = ops.get(op, (0.0, 0.0, 0.0, 0.0)), base.get(op, (0.0, 0.0, 0.0, 0.0))
                diffs.append((op, a[0] - b[0], a[1] - b[1], a[2] - b[2], a[0], b[0]))
            # The ops the bare step never calls, or calls less often: the joint path's own work, measured
            # without the network's noise (its convolutions vary by more than all of this from run to run).
            # Ops the bare step never calls: the joint path's own work, without the network's noise (its
            # convolutions vary by more than all of this from round to round). Ops both call, the joint
            # path more often (copy_, mul, fill_, ...), are listed apart: their time is mostly the network's.
            own = {op: ops[op] for op in ops if op not in base and not op.startswith("range: ")}
            more = {op: ops[op] for op in ops if op in base and ops[op][2] > base[op][2] + 1e-9}
            own_cpu = sum(v[0] for v in own.values())
            report.setdefault("own_ops", {})[name] = {
                "self_cpu_us_per_step": own_cpu, "self_device_us_per_step": sum(v[1] for v in own.values()),
                "share_of_bare_self_cpu": own_cpu / 1e3 / report["self_cpu_ms_per_step"]["bare"],
                "ops": {op: {"self_cpu_us": v[0], "self_device_us": v[1], "calls": v[2]} for op, v in own.items()},
                "more_calls_than_bare": {op: {"calls": v[2], "bare_calls": base[op][2]} for op, v in more.items()}}
            print()
            print(table(f"== ops only {name} calls: sum {own_cpu:.0f} us self CPU per step "
                        f"({own_cpu / 1e3 / report['self_cpu_ms_per_step']['bare'] * 100:.3f} % of bare's self CPU) ==",
                        sorted(((op, v[0], v[1], v[2]) for op, v in own.items()), key=lambda r: -r[1 + (1 if cuda else 0)])[: args.top],
                        ("op", "self CPU us", "self dev us", "calls")))
            print(f"ops {name} calls more often than bare: "
                  + ", ".join(f"{op} {v[2]:.0f} vs {base[op][2]:.0f}" for op, v in sorted(more.items(), key=lambda kv: -(kv[1][2] - base[kv[0]][2]))))
            diffs.sort(key=lambda row: -abs(row[1 + (1 if cuda else 0)]))
            diffs = diffs[: args.top]
            report["differences"][name] = [
                {"op": d[0], "self_cpu_us": d[1], "self_device_us": d[2], "calls": d[3], "arm_self_cpu_us": d[4], "bare_self_cpu_us": d[5]}
                for d in diffs]
            print()
            print(table(f"== {name} − bare: largest differences in {unit} ==",
                        [(d[0], d[1], d[2], d[3], d[4], d[5]) if cuda else (d[0], d[1], d[3], d[4], d[5]) for d in diffs],
                        ("op", "Δ self CPU", "Δ self dev", "Δ calls", f"{name} CPU", "bare CPU") if cuda
                        else ("op", "Δ self CPU us", "Δ calls", f"{name} us", "bare us")))
    ranges = {name: {op: {"cpu_total_us": v[3], "self_device_us": v[1]} for op, v in ops.items() if op.startswith("range: ")}
              for name, ops in per_arm.items()}
    report["ranges"] = ranges
    print()
    print("named ranges, CPU total per step (on a GPU it includes any wait for the device): "
          + "; ".join(f"{name}: " + ", ".join(f"{op[7:]} {v['cpu_total_us']:.0f} us" for op, v in r.items()) for name, r in ranges.items()))
    # Ops that make the host wait for a GPU (a device-to-host read): on a CPU they cost nothing, but their
    # count per step is the same on both, so the CPU profile shows where a GPU step would stall.
    syncs = {name: {op: ops[op][2] for op in SYNC_OPS if ops.get(op, (0, 0, 0, 0))[2]} for name, ops in per_arm.items()}
    report["sync_ops_per_step"] = syncs
    print()
    print("ops that make a GPU step wait (calls per step): "
          + "; ".join(f"{name}: {counts or 'none'}" for name, counts in syncs.items()))
    print()
    for key in ("wall_ms_per_step_under_profiler", "self_cpu_ms_per_step", "self_device_ms_per_step"):
        if key in report:
            print(f"{key}: " + ", ".join(f"{n} {v:.1f}" for n, v in report[key].items()))
    print(f"load {bench_step.load_average()}")
    settings = {key: getattr(step_args, key) for key in ("encoder", "num_mel_bins", "frames", "asc_batch_size", "aet_batch_size",
                                                          "precision", "device", "channels_last", "compile", "placement",
                                                          "feature_dtype", "steps", "warmup")}
    settings.update(arms=names, profile_rounds=args.profile_rounds, torch_threads=torch.get_num_threads())
    common.write_results(NAME, {"settings": settings, **report}, args.profile_output)
    return report


if __name__ == "__main__":
    main()
