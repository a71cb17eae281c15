"""Epoch time vs data size (1x, 2x, 4x): time per clip should stay constant, i.e. epochs grow linearly.

    python benchmarks/bench_epoch_scaling.py                    # 512 / 1024 / 2048 clips of 32 x 51, resnet10t
    python benchmarks/bench_epoch_scaling.py --base_rows 2048 --factors 1,2,4,8

One generated fp16 stored split (the largest size) holds both streams; each size takes its
first `base_rows * factor` rows (a contiguous `select`, no indices mapping) for the scene set and the
same for the event set, so both data sets grow together. An epoch is a real `MultiTaskLoader` epoch
(one pass over the scene rows, events cycling) through the training loop's augmentation/joining
path, a small `SceneEventModel`, backward and AdamW. Sizes are alternated within every round and
the median epoch time per size is reported, with seconds per scene clip and the ratio of the
largest size's per-clip time to the smallest's (1.0 = perfectly linear).
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from sceneevent.data.loader import MultiTaskLoader

NAME = "bench_epoch_scaling"


@dataclass
class ScalingArguments(common.SmallModelArguments):
    base_rows: int = field(default=512, metadata={"help": "Scene (and event) clips at 1x."})
    factors: str = field(default="1,2,4", metadata={"help": "Comma-separated size multiples."})
    num_workers: int = field(default=0, metadata={"help": "Reader threads per stream."})
    rounds: int = field(default=3, metadata={"help": "Rounds (one epoch per size each); the median is reported."})
    output: str | None = field(default=None, metadata={"help": "JSON path. Default: benchmarks/results/bench_epoch_scaling.json."})


def train_epoch(trainer: common.SmallTrainer, loader: MultiTaskLoader, epoch: int) -> int:
    """One epoch of `loader` (the trainer's state carries across sizes); returns its steps."""
    steps = 0
    for batch in loader.epoch(epoch):
        trainer.step(batch)
        steps += 1
    return steps


def make_loader(cache, rows: int, args: ScalingArguments) -> MultiTaskLoader:
    return common.cache_loader(common.row_range(cache, 0, rows), args.asc_batch_size, args.aet_batch_size, num_workers=args.num_workers)


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(ScalingArguments).parse_args_into_dataclasses(args=argv)
    common.disable_progress_bars()
    factors = [int(value) for value in args.factors.split(",") if value.strip()]
    sizes = {factor: args.base_rows * factor for factor in factors}
    print(f"epoch-scaling benchmark: {list(sizes.values())} clips of {args.num_mel_bins} x {args.frames}, {args.encoder}, "
          f"batch {args.asc_batch_size} + {args.aet_batch_size}, {torch.get_num_threads()} threads, median of {args.rounds} rounds",
          flush=True)
    seconds = {factor: [] for factor in factors}
    steps = {}
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as folder:
        cache = common.build_synthetic_cache(Path(folder) / "cache", max(sizes.values()), args.num_mel_bins, args.frames)
        loaders = {factor: make_loader(cache, rows, args) for factor, rows in sizes.items()}
        trainer = common.SmallTrainer(args)
        train_epoch(trainer, loaders[factors[0]], 0)  # warm-up: allocator, kernels, page cache
        for round_index in range(args.rounds):
            for factor in common.rotated(factors, round_index):
                started = time.perf_counter()
                steps[factor] = train_epoch(trainer, loaders[factor], round_index + 1)
                seconds[factor].append(time.perf_counter() - started)
            print(f"  round {round_index + 1}/{args.rounds}: "
                  + ", ".join(f"{f}x {seconds[f][-1]:.2f} s" for f in factors), flush=True)
    per_size = {}
    for factor in factors:
        epoch_seconds = common.median(seconds[factor])
        per_size[str(factor)] = {"rows": sizes[factor], "steps": steps[factor], "seconds_per_epoch": common.spread(seconds[factor]),
                                 "ms_per_clip": 1e3 * epoch_seconds / sizes[factor], "ms_per_step": 1e3 * epoch_seconds / steps[factor]}
        print(f"  {factor}x: {sizes[factor]:>6} clips, {steps[factor]:>4} steps: {epoch_seconds:.2f} s per epoch, "
              f"{per_size[str(factor)]['ms_per_clip']:.2f} ms per scene clip")
    first, last = str(factors[0]), str(factors[-1])
    ratio = per_size[last]["ms_per_clip"] / per_size[first]["ms_per_clip"]
    print(f"time per clip {last}x / {first}x = {ratio:.3f} (1.0 = linear growth)")
    payload = {"settings": {key: getattr(args, key) for key in ("base_rows", "num_mel_bins", "frames", "encoder",
                                                                 "asc_batch_size", "aet_batch_size", "num_workers", "rounds")},
               "sizes": per_size, "ratio_per_clip_largest_over_smallest": ratio}
    common.write_results(NAME, payload, args.output)
    return payload


if __name__ == "__main__":
    main()
