"""What the floor of a scene reading (`sceneevent.training.floor.scene_floor`) costs at TUT 2018's size.

    python benchmarks/bench_floor.py                       # 8,640 clips of 128 x 1001, in a temporary folder
    python benchmarks/bench_floor.py --num_rows 1000 --frames 101

A generated store segment of `--num_rows` random fp16 log-mels (2.2 GB at the default shape; written once, not
timed) split as TUT 2018's fold 1 is (71 % train, of which 10 % validation, 29 % test); the figure is the
wall time of `scene_floor`: reading every clip, its per-mel statistics, the seven fits on train and their
validation readings, the test reading. Random labels make the fits work hardest (nothing to learn).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
from transformers import HfArgumentParser

from common import NUM_SCENES, build_synthetic_cache, disable_progress_bars, row_range, write_results
from sceneevent.training.floor import scene_floor


@dataclass
class Arguments:
    num_rows: int = field(default=8640, metadata={"help": "Clips (TUT 2018's development set: 8,640)."})
    num_mel_bins: int = field(default=128, metadata={"help": "Mel bins of each clip."})
    frames: int = field(default=1001, metadata={"help": "Frames of each clip (10 s at the paper's hop: 1001)."})
    repeats: int = field(default=3, metadata={"help": "Timed calls; the median is reported."})
    output: str | None = field(default=None, metadata={"help": "JSON path (default benchmarks/results/bench_floor.json)."})


def main() -> None:
    (args,) = HfArgumentParser(Arguments).parse_args_into_dataclasses()
    disable_progress_bars()
    train_end = int(0.709 * args.num_rows)
    validation_start = train_end - train_end // 10
    with tempfile.TemporaryDirectory() as folder:
        split = build_synthetic_cache(folder, args.num_rows, args.num_mel_bins, args.frames)
        parts = (row_range(split, 0, validation_start), row_range(split, validation_start, train_end),
                 row_range(split, train_end, args.num_rows))
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            floor = scene_floor(*parts, NUM_SCENES)
            seconds.append(time.perf_counter() - started)
    print(f"floor of {args.num_rows} clips ({len(parts[0])} train, {len(parts[1])} validation, {len(parts[2])} test) of "
          f"{args.num_mel_bins} x {args.frames}: median {np.median(seconds):.1f} s over {args.repeats} "
          f"({', '.join(f'{s:.1f}' for s in seconds)}); chosen C {floor.c:g}")
    write_results("bench_floor", {"settings": vars(args), "seconds": seconds, "median_seconds": float(np.median(seconds))},
                  args.output)


if __name__ == "__main__":
    main()
