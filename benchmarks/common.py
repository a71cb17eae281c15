"""Helpers shared by the benchmarks: timing, environment, JSON results, generated stored splits, and
the small training set-up of the memory and epoch-scaling benchmarks.

The benchmarks are scripts, not a package: each puts this folder on `sys.path` (it is the script's
own folder, so `import common` works when run as `python benchmarks/bench_x.py`).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import datasets
import numpy as np
import torch
from accelerate import Accelerator

import sceneevent
from sceneevent import SceneEventConfig, SceneEventModel
from sceneevent.data.feature_store import StoredSplit
from sceneevent.data.loader import BatchReader, DeviceBatchReader, MultiTaskLoader
from sceneevent.io_utils import atomic_write_json, atomic_write_text
from sceneevent.study.design import SCALES, parse_seed_range
from sceneevent.study.mini import environment_threads
from sceneevent.training.arguments import JointTrainingArguments
from sceneevent.training.step import build_augmenters, training_step

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# The label sets of the paper's setting: 10 TUT scenes, up to 115 AudioSet events.
NUM_SCENES, NUM_EVENTS = 10, 115


# --- timing -----------------------------------------------------------------------------------------


def sync(device: torch.device | str) -> None:
    """Wait for queued device work, so that wall time measures it (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_call(fn: Callable[[], object], device: torch.device | str = "cpu") -> float:
    """Seconds one call of `fn` takes, device work included."""
    sync(device)
    started = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - started


def time_repeats(fn: Callable[[], object], repeats: int, warmup: int = 1, device: torch.device | str = "cpu") -> list[float]:
    """Seconds of `repeats` timed calls after `warmup` untimed ones (allocators, caches, lazy init)."""
    for _ in range(warmup):
        fn()
    return [time_call(fn, device) for _ in range(repeats)]


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max: the median is the figure, min/max show how noisy the machine was."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


# --- environment and results ----------------------------------------------------------------------


def environment() -> dict:
    """What the figures were measured on."""
    info = {
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "datasets": datasets.__version__,
        "sceneevent": sceneevent.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # psutil is optional for the benchmarks
        pass
    return info


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (Linux), to read a figure measured on a busy machine by."""
    try:
        with open("/proc/loadavg") as handle:
            return [float(value) for value in handle.read().split()[:3]]
    except OSError:
        return None


def results_path(name: str) -> Path:
    return RESULTS_DIR / f"{name}.json"


def write_results(name: str, payload: dict, path: str | os.PathLike | None = None) -> Path:
    """Write `payload` (plus command line, time and environment) to `benchmarks/results/<name>.json`."""
    target = Path(path) if path else results_path(name)
    record = {
        "benchmark": name,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": environment(),
        **payload,
    }
    atomic_write_json(target, record)
    print(f"wrote {target}", file=sys.stderr)
    return target


def read_results(name: str) -> dict | None:
    """A previous benchmark's JSON, or None if it has not been run."""
    import json

    path = results_path(name)
    return json.loads(path.read_text()) if path.is_file() else None


def study_parser(description: str, seeds_help: str = "Its link seeds, e.g. 0-15."):
    """The arguments of the benchmarks that read a finished reproduce_mini.py study: its scale, runs and link seeds,
    and an optional Markdown report."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--output_root", type=Path, required=True, help="A finished reproduce_mini.py study's runs.")
    parser.add_argument("--link_seeds", type=parse_seed_range, required=True, help=seeds_help)
    parser.add_argument("--report", type=Path, default=None, help="Also write the table to this Markdown file.")
    return parser


def parse_study(parser, args=None):
    """`parser`'s options (a `study_parser`), the scale with their link seeds, and the study's runs folder; the
    thread settings of the scale's runs go to the environment, for the runs this process starts."""
    options = parser.parse_args(args)
    scale = replace(SCALES[options.scale], link_seeds=options.link_seeds)
    os.environ.update(environment_threads(scale))
    return options, scale, options.output_root.resolve()


def print_report(lines: list[str], report: str | os.PathLike | None) -> None:
    """Print a benchmark's Markdown lines, and write them to `report` (atomically) when one is given."""
    text = "\n".join(lines) + "\n"
    print(text)
    if report:
        atomic_write_text(report, text)


# --- memory ----------------------------------------------------------------------------------------


def peak_rss_mib() -> float:
    """Peak resident set size of this process, in MiB (Linux: KiB units)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_breakdown_mib() -> dict[str, float]:
    """Current anonymous vs file-backed resident memory: memory-mapped Arrow pages count as file-backed."""
    fields = {}
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    fields[key] = int(value.split()[0]) / 1024
    except OSError:  # not Linux
        pass
    return fields


# --- generated stored splits ----------------------------------------------------------------------------

SYNTHETIC_SEGMENT = "segment-synthetic.npy"  # the features, as a segment of the log-mel store holds them
SYNTHETIC_LABELS = "labels"  # the label columns, saved with `datasets`


def label_features(num_scenes: int = NUM_SCENES, num_events: int = NUM_EVENTS) -> datasets.Features:
    """The label columns of a stored split: `scene`, `events`."""
    return datasets.Features(
        {
            "scene": datasets.ClassLabel(names=[f"scene_{i}" for i in range(num_scenes)]),
            "events": datasets.Sequence(datasets.ClassLabel(names=[f"event_{i}" for i in range(num_events)])),
        }
    )


def build_synthetic_cache(
    folder: str | os.PathLike,
    num_rows: int,
    num_mel_bins: int,
    frames: int,
    *,
    seed: int = 0,
    chunk_rows: int = 4096,
) -> StoredSplit:
    """Write `num_rows` random fp16 log-mel clips with labels to `folder` and read them back as a stored split.

    The features go to one `.npy` file laid out as a segment of the log-mel store (`(rows, mels, frames)`
    fp16, the file the loader reads), the labels are saved with `datasets` (`save_to_disk`); no audio is
    involved. Rows are written in chunks so that generating 100k clips stays small in RAM.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    scenes, events = [], []
    with open(folder / SYNTHETIC_SEGMENT, "wb") as out:
        shape = (num_rows, num_mel_bins, frames)
        np.lib.format.write_array_header_1_0(out, {"descr": "<f2", "fortran_order": False, "shape": shape})
        for start in range(0, num_rows, chunk_rows):
            rows = min(chunk_rows, num_rows - start)
            out.write(rng.standard_normal((rows, num_mel_bins, frames), dtype=np.float32).astype(np.float16).tobytes())
            events += [rng.choice(NUM_EVENTS, size=rng.integers(1, 4), replace=False).tolist() for _ in range(rows)]
            scenes += rng.integers(0, NUM_SCENES, rows).tolist()
    labels = datasets.Dataset.from_dict({"scene": scenes, "events": events}, features=label_features())
    labels.save_to_disk(str(folder / SYNTHETIC_LABELS))
    return load_synthetic_cache(folder)


def load_synthetic_cache(folder: str | os.PathLike) -> StoredSplit:
    """The split `build_synthetic_cache` wrote to `folder`: row i is the segment's row i, its labels memory-mapped."""
    folder = Path(folder)
    labels = datasets.load_from_disk(str(folder / SYNTHETIC_LABELS))
    rows = len(labels)
    locations = np.stack([np.zeros(rows, dtype=np.int64), np.arange(rows, dtype=np.int64)], axis=1)
    return StoredSplit(labels, [folder / SYNTHETIC_SEGMENT], locations, contents=np.zeros(rows, dtype="S32"),
                       sources=[f"synthetic clip {row}" for row in range(rows)])


def row_range(split: StoredSplit, start: int, stop: int) -> StoredSplit:
    """Rows `start` to `stop` of `split` (a contiguous `select`: no indices mapping)."""
    return StoredSplit(split.dataset.select(range(start, stop)), split.segment_paths, split.locations[start:stop],
                       contents=split.contents[start:stop], sources=split.sources[start:stop])


def disable_progress_bars() -> None:
    datasets.utils.logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()


# --- the small training set-up ---------------------------------------------------------------------------


def cache_loader(split: StoredSplit, asc_batch_size: int, aet_batch_size: int, *, num_workers: int = 0,
                 device: str | None = None, copy_to: str | None = None, gpu_batch_copy: str = "training_stream") -> MultiTaskLoader:
    """Both task streams over one generated split, as training builds them (the scene stream sets the epoch):
    held on `device` (`--cache_on_device`), or read from the segment file and delivered on `copy_to` (a GPU) or the host."""
    asc = BatchReader(split, "scene", NUM_SCENES)
    aet = BatchReader(split, "events", NUM_EVENTS)
    if device:
        asc, aet = DeviceBatchReader(asc, device), DeviceBatchReader(aet, device)
    return MultiTaskLoader(epoch_rows=len(split), asc=asc, aet=aet, asc_batch_size=asc_batch_size,
                           aet_batch_size=aet_batch_size, seed=0, num_workers=num_workers, device=copy_to,
                           gpu_batch_copy=gpu_batch_copy)


@dataclass
class SmallModelArguments:
    """The clips and model of the memory and epoch-scaling benchmarks."""

    num_mel_bins: int = field(default=32, metadata={"help": "Mel bins of the generated clips."})
    frames: int = field(default=51, metadata={"help": "Frames of the generated clips."})
    encoder: str = field(default="resnet10t", metadata={"help": "timm encoder of the small model."})
    asc_batch_size: int = field(default=16, metadata={"help": "Scene clips per step."})
    aet_batch_size: int = field(default=32, metadata={"help": "Event clips per step."})


def rotated(names: list[str], round_index: int) -> list[str]:
    """`names` started at a different one each round: a slow phase of the machine must not always hit the same arm."""
    start = round_index % len(names)
    return names[start:] + names[:start]


def paper_augmenters(augmentation: bool = True) -> torch.nn.ModuleDict:
    """The paper's augmentation: SpecAugment + MixUp on both tasks (or none), named explicitly because the
    event-side defaults depend on the data (`arguments.resolve_defaults`)."""
    flags = dict(specaugment=augmentation, aet_specaugment=augmentation, mixup=augmentation, aet_mixup=augmentation)
    return build_augmenters(JointTrainingArguments(**flags))


class SmallTrainer:
    """A small `SceneEventModel` trained on the CPU by the loop's own `training_step` (AdamW, the paper's augmentation)."""

    def __init__(self, args: SmallModelArguments):
        self.config = SceneEventConfig(
            scene_labels=[f"scene_{i}" for i in range(NUM_SCENES)],
            event_labels=[f"event_{i}" for i in range(NUM_EVENTS)],
            encoder=args.encoder, num_mel_bins=args.num_mel_bins,
        )
        self.accelerator = Accelerator(cpu=True)
        model = SceneEventModel(self.config).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.augment = paper_augmenters()

    def step(self, batch: dict) -> None:
        training_step(self.accelerator, self.model, self.config, batch, self.augment, self.optimizer)
