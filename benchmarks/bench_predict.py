"""Throughput of `sceneevent.inference.pipeline.predict` on CPU: clips (windows) per second.

    python benchmarks/bench_predict.py                    # both shapes, results in benchmarks/results/
    python benchmarks/bench_predict.py --shapes synthetic --repeats 7 --threads 2

Two model shapes, random weights (speed does not depend on them):
  paper:     ResNet-18, 10 s clips at 32 kHz, 128 mel bins (the default training shape)
  synthetic: ResNet-18, 2 s clips at 16 kHz, 64 mel bins (the embedded demo data)

Each run predicts one mono recording of `--windows` clips at the model's rate: log-mel features,
batched forward passes, softmax/sigmoid and aggregation, as `scripts/predict.py` does per file
(file decoding and resampling excluded). The figure is the median over `--repeats` runs after one
warm-up run.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import HfArgumentParser

import sceneevent
from sceneevent import LogMelFeatureExtractor, SceneEventConfig, SceneEventModel
from sceneevent.inference.pipeline import load_pipeline, predict
from sceneevent.io_utils import atomic_write_json

SHAPES = {
    "paper": {"encoder": "resnet18", "sampling_rate": 32000, "clip_seconds": 10.0, "num_mel_bins": 128},
    "synthetic": {"encoder": "resnet18", "sampling_rate": 16000, "clip_seconds": 2.0, "num_mel_bins": 64},
}
# The label sets of the paper's setting: 10 TUT scenes, and up to 115 AudioSet events.
NUM_SCENES, NUM_EVENTS = 10, 115


@dataclass
class BenchArguments:
    shapes: str = field(default="paper,synthetic", metadata={"help": f"Comma-separated shapes to measure: {', '.join(SHAPES)}."})
    windows: int = field(default=8, metadata={"help": "Clip-length windows in each recording."})
    batch_size: int = field(default=8, metadata={"help": "Windows per forward pass (predict's --batch_size)."})
    repeats: int = field(default=5, metadata={"help": "Timed runs per shape (after one warm-up); the median is reported."})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads. Default: torch's own choice."})
    output: str = field(default="benchmarks/results/bench_predict.json", metadata={"help": "JSON file for the results."})


def build_model(folder: Path, shape: dict) -> None:
    config = SceneEventConfig(
        scene_labels=[f"scene_{i}" for i in range(NUM_SCENES)],
        event_labels=[f"event_{i}" for i in range(NUM_EVENTS)],
        encoder=shape["encoder"],
        num_mel_bins=shape["num_mel_bins"],
    )
    SceneEventModel(config).save_pretrained(folder)
    LogMelFeatureExtractor(
        num_mel_bins=shape["num_mel_bins"], sampling_rate=shape["sampling_rate"], clip_seconds=shape["clip_seconds"]
    ).save_pretrained(folder)


def measure(name: str, shape: dict, args: BenchArguments) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench_{name}_") as folder:
        build_model(Path(folder), shape)
        classifier = load_pipeline(folder, device="cpu")
    samples = int(args.windows * shape["clip_seconds"] * shape["sampling_rate"])
    audio = (0.1 * np.random.default_rng(0).standard_normal(samples)).astype(np.float32)
    seconds = []
    for run in range(args.repeats + 1):
        started = time.perf_counter()
        prediction = predict(classifier, audio, sampling_rate=shape["sampling_rate"], batch_size=args.batch_size)
        if run:  # the first run warms up allocators and caches
            seconds.append(time.perf_counter() - started)
    assert prediction.num_windows == args.windows
    median = statistics.median(seconds)
    return {
        **shape,
        "num_scenes": NUM_SCENES,
        "num_events": NUM_EVENTS,
        "windows": args.windows,
        "batch_size": args.batch_size,
        "seconds": seconds,
        "median_seconds": median,
        "clips_per_second": args.windows / median,
        "audio_seconds_per_second": args.windows * shape["clip_seconds"] / median,
    }


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(BenchArguments).parse_args_into_dataclasses(args=argv)
    names = [name.strip() for name in args.shapes.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SHAPES))
    if unknown:
        raise ValueError(f"--shapes: unknown {unknown}; choose from {sorted(SHAPES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {
        "benchmark": "predict",
        "device": "cpu",
        "environment": {
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "sceneevent": sceneevent.__version__,
        },
        "shapes": {},
    }
    for name in names:
        results["shapes"][name] = figures = measure(name, SHAPES[name], args)
        print(
            f"{name:>9}: {figures['encoder']}, {figures['clip_seconds']:g} s at {figures['sampling_rate']} Hz, "
            f"{figures['num_mel_bins']} mels: {figures['clips_per_second']:.2f} clips/s "
            f"({figures['audio_seconds_per_second']:.1f} s of audio per s; median of {args.repeats}, "
            f"{torch.get_num_threads()} threads)",
            flush=True,
        )
    atomic_write_json(args.output, results)
    print(f"wrote {args.output}", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
