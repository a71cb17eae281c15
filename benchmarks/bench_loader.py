"""Loader throughput alone (no model): generated fp16 stored split → BatchReader/MultiTaskLoader → join_task_batches.

    python benchmarks/bench_loader.py                          # 4096 clips of 64 x 101, batch 16 + 32, 0/1/2 reader threads
    python benchmarks/bench_loader.py --num_mel_bins 128 --frames 1001 --asc_batch_size 64 --aet_batch_size 128

The features are written as one segment file of the log-mel store's layout and the labels with `datasets`
(`save_to_disk`), and read back as the training loop reads a stored split; no audio is involved. Features are
read from the segment with one `pread` per row, as in training.
One epoch is one pass over the scene rows; the event stream cycles alongside, as in training. The
figure per reader-thread count (`--dataloader_num_workers` in training) is the median epoch.
`--step_ms` stands in for a training step after each batch: a sleep of the host on a CPU (as a GPU step
leaves the host free), and with `--copy_to cuda` a spin of the GPU on the training stream
(`torch.cuda._sleep`), so the figure shows whether the reads and the copies hide behind the step.

If `benchmarks/results/bench_step.json` (or `--step_results`) exists, the training step's samples/s from
it is reported next to the loader's, with the ratio loader/step at the default reader-thread count (target
>= 10 on a CPU, >= 1.5 on a GPU: the loader is never the bottleneck); a step measured on another device
than the one the loader delivers on gives no ratio. Compare like with like: run both with the same shape
and batch sizes.
"""

from __future__ import annotations

import functools
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from transformers import HfArgumentParser

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from sceneevent.data.loader import MultiTaskLoader, join_task_batches

NAME = "bench_loader"


@dataclass
class LoaderArguments:
    num_rows: int = field(default=4096, metadata={"help": "Clips in the generated split (both streams read it)."})
    num_mel_bins: int = field(default=64, metadata={"help": "Mel bins of the generated clips."})
    frames: int = field(default=101, metadata={"help": "Frames of the generated clips."})
    asc_batch_size: int = field(default=16, metadata={"help": "Scene clips per step."})
    aet_batch_size: int = field(default=32, metadata={"help": "Event clips per step."})
    workers: str = field(default="0,1,2", metadata={"help": "Comma-separated reader-thread counts to measure."})
    step_ms: float = field(
        default=0.0,
        metadata={"help": "A stand-in for an accelerator's training step: after each batch the loop sleeps this long, "
                  "leaving the host free as a GPU step does (no host sync); with --copy_to cuda the GPU spins this long on "
                  "the training stream instead. 0: read only. With e.g. 30, the figure shows whether reads (and copies) "
                  "are hidden behind the step or added to it."},
    )
    copy_to: str | None = field(
        default=None,
        metadata={"help": "Deliver the reader threads' batches on this device as training does (cuda: pinned and copied "
                  "as --gpu_batch_copy says, the copy included in the figure). Default: host batches."},
    )
    gpu_batch_copy: Literal["training_stream", "side_stream"] = field(
        default="training_stream",
        metadata={"help": "With --copy_to cuda: training_stream (the default in training) or side_stream."},
    )
    on_device: str | None = field(
        default="cpu",
        metadata={"help": "Also measure --cache_on_device: both caches held on this device (cpu, cuda) and indexed "
                  "there, no loader. Empty to skip."},
    )
    step_results: str | None = field(
        default=None, metadata={"help": "bench_step JSON whose joint step the loader is compared with. Default: "
                                "benchmarks/results/bench_step.json."})
    repeats: int = field(default=3, metadata={"help": "Timed epochs per worker count (after one warm-up epoch)."})
    output: str | None = field(default=None, metadata={"help": "JSON path. Default: benchmarks/results/bench_loader.json."})


def read_epoch(loader: MultiTaskLoader, epoch: int, step_seconds: float = 0.0) -> int:
    """Read and join one epoch of batches, a stand-in step of `step_seconds` after each; returns the samples read."""
    samples = 0
    for batch in loader.epoch(epoch):
        joined = join_task_batches(batch["asc"], batch["aet"], common.NUM_SCENES, common.NUM_EVENTS)
        samples += joined["input_features"].shape[0]
        if step_seconds and joined["input_features"].is_cuda:  # a step queued on the GPU: copies may overlap it
            torch.cuda._sleep(int(step_seconds * gpu_cycles_per_second()))
        else:
            time.sleep(step_seconds)
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # device batches are asynchronous: time their completion
    return samples


@functools.cache
def gpu_cycles_per_second() -> float:
    """How many `torch.cuda._sleep` cycles this GPU spins in a second (timed once with CUDA events)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(1_000_000)  # warm-up
    start.record()
    torch.cuda._sleep(100_000_000)
    end.record()
    end.synchronize()
    return 100_000_000 / (start.elapsed_time(end) / 1e3)


def measure_workers(split, args: LoaderArguments, num_workers: int, device: str | None = None) -> dict:
    loader = common.cache_loader(split, args.asc_batch_size, args.aet_batch_size, num_workers=num_workers, device=device,
                                 copy_to=None if device else args.copy_to, gpu_batch_copy=args.gpu_batch_copy)
    read_epoch(loader, 0)  # warm-up: page cache, thread start-up
    seconds, samples = [], 0
    for epoch in range(1, args.repeats + 1):
        started = time.perf_counter()
        samples = read_epoch(loader, epoch, args.step_ms / 1e3)
        seconds.append(time.perf_counter() - started)
    loader.close()  # its reader threads exit before the next count starts new ones
    return {"seconds_per_epoch": common.spread(seconds), "samples_per_epoch": samples,
            "steps_per_epoch": loader.steps_per_epoch, "samples_per_second": samples / common.median(seconds)}


def step_reference(path: str | None = None) -> dict | None:
    """The joint training step's figures from bench_step.json (or `path`), if that benchmark has been run."""
    step = json.loads(Path(path).read_text()) if path else common.read_results("bench_step")
    if not step:
        return None
    return {"samples_per_second": step["samples_per_second"]["joint"], "settings": step["settings"]}


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(LoaderArguments).parse_args_into_dataclasses(args=argv)
    common.disable_progress_bars()
    worker_counts = [int(value) for value in args.workers.split(",") if value.strip()]
    loader_on_gpu = (args.copy_to or "").startswith("cuda")
    for flag in ("copy_to", "on_device"):
        if (getattr(args, flag) or "").startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--{flag} {getattr(args, flag)}, but torch sees no CUDA device")
    if args.step_results and not Path(args.step_results).is_file():  # before the measuring, not after it
        raise FileNotFoundError(f"--step_results {args.step_results}: no such file (run benchmarks/bench_step.py --output ...)")
    print(f"loader benchmark: {args.num_rows} clips of {args.num_mel_bins} x {args.frames} fp16, batch "
          f"{args.asc_batch_size} ASC + {args.aet_batch_size} AET, reader threads {worker_counts}, "
          f"{args.step_ms:g} ms simulated step, batches delivered on {args.copy_to or 'the host'}, median of {args.repeats} epochs",
          flush=True)
    if args.step_ms and loader_on_gpu:
        gpu_cycles_per_second()  # calibrated before any timing
    figures = {}
    with tempfile.TemporaryDirectory(prefix="bench_loader_") as folder:
        split = common.build_synthetic_cache(Path(folder) / "cache", args.num_rows, args.num_mel_bins, args.frames)
        for workers in worker_counts:
            figures[str(workers)] = result = measure_workers(split, args, workers)
            print(f"  {workers} reader threads: {result['samples_per_second']:.0f} samples/s "
                  f"({result['seconds_per_epoch']['median'] * 1e3:.0f} ms per epoch of {result['steps_per_epoch']} steps)", flush=True)
        if args.on_device:
            figures[f"on_device_{args.on_device}"] = result = measure_workers(split, args, 0, args.on_device)
            print(f"  cache on {args.on_device}, no loader: {result['samples_per_second']:.0f} samples/s", flush=True)
        del split
    # The loader's figure is its best worker count; the on-device cache is beside it.
    best = max(figures[str(workers)]["samples_per_second"] for workers in worker_counts)
    payload = {"settings": {"num_rows": args.num_rows, "num_mel_bins": args.num_mel_bins, "frames": args.frames,
                            "asc_batch_size": args.asc_batch_size, "aet_batch_size": args.aet_batch_size,
                            "repeats": args.repeats, "step_ms": args.step_ms, "copy_to": args.copy_to,
                            "torch_threads": torch.get_num_threads()},
               "workers": figures, "best_samples_per_second": best}
    step = step_reference(args.step_results) if not args.step_ms else None  # behind a simulated step: read ms per step
    if step and step["settings"].get("device", "cpu").startswith("cuda") != loader_on_gpu:
        print(f"the step was measured on {step['settings'].get('device', 'cpu')}, the loader delivered batches on "
              f"{args.copy_to or 'the host'}: no ratio (pass --step_results of a step on the same device)")
        step = None
    if step:
        # Issue 13's targets: on a GPU the loader with its default reader thread >= 1.5x the step; on a CPU
        # (0 threads by default) >= 10x. The best count stands in when the default one was not measured.
        default = str(1 if loader_on_gpu else 0)  # the step's device, checked just above
        loader = figures[default]["samples_per_second"] if default in figures else best
        target = 1.5 if loader_on_gpu else 10.0
        payload["step"] = step
        payload["ratio_loader_over_step"] = ratio = loader / step["samples_per_second"]
        payload["ratio_reader_threads"] = default if default in figures else "best"
        payload["target_ratio"] = target
        payload["meets_target"] = ratio >= target
        same_shape = all(step["settings"].get(key) == getattr(args, key)
                         for key in ("num_mel_bins", "frames", "asc_batch_size", "aet_batch_size"))
        payload["step_has_same_shape"] = same_shape
        print(f"training step ({args.step_results or 'bench_step.json'}): {step['samples_per_second']:.1f} samples/s → "
              f"loader ({payload['ratio_reader_threads']} reader threads)/step = {ratio:.1f}x (target >= {target:g}x: "
              f"{'met' if ratio >= target else 'NOT met'}){'' if same_shape else '  [different shape or batch!]'}")
    elif not args.step_ms:
        print("no benchmarks/results/bench_step.json: run benchmarks/bench_step.py first for the loader/step ratio")
    common.write_results(NAME, payload, args.output)
    return payload


if __name__ == "__main__":
    main()
