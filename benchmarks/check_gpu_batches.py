"""Check, on a GPU, that the loader's batches copied on a side stream equal the host batches bit for bit.

    python benchmarks/check_gpu_batches.py              # exits 1 on any difference; prints what it compared

The CUDA path of `loader.batch_loader` (pin, copy on a stream of its own, the training stream waits for an
event) cannot run in the CPU test suite. This check makes a race visible if there is one: before it reads
each delivered batch, the training stream is kept busy with matrix products, so a batch used before its
copy ended, or memory reused while still in use, would show as a difference. It reads both task streams,
then an evaluation pass, with 0, 1 and 2 reader threads. `--device cpu` runs it on the host (trivially equal)
to check the script.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from transformers import HfArgumentParser

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from sceneevent.evaluation import predict_split
from sceneevent.loader import BatchReader


@dataclass
class CheckArguments:
    device: str = field(default="cuda", metadata={"help": "The device the batches are delivered on."})
    num_rows: int = field(default=512, metadata={"help": "Clips in the generated cache."})
    num_mel_bins: int = field(default=128, metadata={"help": "Mel bins of the generated clips."})
    frames: int = field(default=1001, metadata={"help": "Frames of the generated clips."})
    epochs: int = field(default=2, metadata={"help": "Epochs read per reader-thread count."})
    busy: int = field(default=8, metadata={"help": "4096 x 4096 matrix products queued before each batch is read."})


def keep_busy(device: torch.device, products: int) -> None:
    if device.type == "cuda" and products:
        a = torch.randn(4096, 4096, device=device)
        for _ in range(products):
            a = a @ a / 64.0


def compare_training_batches(dataset, args: CheckArguments, threads: int) -> int:
    host = common.cache_loader(dataset, 16, 32)
    gpu = common.cache_loader(dataset, 16, 32, num_workers=threads, copy_to=args.device)
    device, differences = torch.device(args.device), 0
    for epoch in range(args.epochs):
        for expected, delivered in zip(host.epoch(epoch), gpu.epoch(epoch), strict=True):
            keep_busy(device, args.busy)
            for task in ("asc", "aet"):
                for key, value in expected[task].items():
                    got = delivered[task][key]
                    differences += got.device.type != device.type or not torch.equal((got * 1).cpu(), value)
    host.close()
    gpu.close()
    return differences


def compare_evaluation(dataset, args: CheckArguments, threads: int) -> int:
    reader = BatchReader(dataset, "scene", common.NUM_SCENES)
    device = torch.device(args.device)
    accelerator = Accelerator(cpu=device.type == "cpu")

    def summary(features: torch.Tensor) -> torch.Tensor:  # exact, order-free: a stale or torn clip changes it
        return torch.stack([features.amax(dim=(1, 2)), features.amin(dim=(1, 2)), features[:, -1, -1]], dim=1).float()

    def network(input_features):
        keep_busy(device, args.busy)
        return {"scene_logits": summary(input_features)}

    expected = summary(reader[list(range(len(reader)))]["input_features"]).numpy()
    logits, labels = predict_split(accelerator, network, reader, 64, "scene_logits", num_workers=threads)
    return int((logits != expected).any(axis=1).sum() + (labels != reader.labels).sum())


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(CheckArguments).parse_args_into_dataclasses(args=argv)
    common.disable_progress_bars()
    failures = 0
    with tempfile.TemporaryDirectory(prefix="check_gpu_batches_") as folder:
        dataset = common.build_synthetic_cache(Path(folder) / "cache", args.num_rows, args.num_mel_bins, args.frames)
        for threads in (0, 1, 2):
            training, evaluation = compare_training_batches(dataset, args, threads), compare_evaluation(dataset, args, threads)
            print(f"{threads} reader threads on {args.device}: {training} training tensors and {evaluation} evaluation "
                  f"clips differ from the host's", flush=True)
            failures += training + evaluation
        del dataset
    print("identical" if not failures else "DIFFERENCES FOUND")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
