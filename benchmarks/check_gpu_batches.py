"""Check, on a GPU, that the loader's batches delivered on the GPU equal the host batches bit for bit.

    python benchmarks/check_gpu_batches.py              # exits 1 on any difference; prints what it compared

The CUDA paths of `loader.batch_loader` cannot run in the CPU test suite: the default (`--gpu_batch_copy
training_stream`: pinned where read, copied `non_blocking` on the training stream) and the side-stream copy
(`side_stream`: pin, copy on `loader.copy_stream`, the training stream waits for an event). For each, with 0, 1
and 2 reader threads, this check tries to provoke the races the path must prevent, for training batches and
(default path) for an evaluation pass:
- *late copy* (side stream): each batch's copy is held back by a spin queued on the copy stream before it
  (by the reader, just before the loader queues the copy), and the training stream reads the batch at once;
  without the wait it would read memory not yet copied;
- *busy training stream* (both): a long spin (150 spins) on the training stream at the start of each epoch, so
  the host runs far ahead of the copies and reads; on the side stream, without `record_stream` the memory of a
  batch the host has dropped would be refilled by a later copy before its read; on the training stream, a
  pinned host block freed before its queued copy ran would be refilled by a later batch.
Every read is a copy queued on the training stream, compared with the host batch only at the end (no sync
in between). Two negative controls then read the side-stream batches on a stream of their own, which the
loader's guards do not cover — the wait and `record_stream` are both for the training stream — and require
that the check sees the difference (if one sees none, the check could not provoke that race: inconclusive, and
it fails): *without the wait*, late copies read at once; *without record_stream*, the reading stream is the busy
one and waits for each copy (through the training stream) but nothing keeps the memory until it has read it.
`--device cpu` runs the script on the host (trivially equal; no negative control) to check it.
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

from sceneevent.data.loader import BatchReader, MultiTaskLoader, copy_stream, with_index
from sceneevent.training.evaluation import predict_split


@dataclass
class CheckArguments:
    device: str = field(default="cuda", metadata={"help": "The device the batches are delivered on."})
    num_rows: int = field(default=512, metadata={"help": "Clips in the generated cache."})
    num_mel_bins: int = field(default=128, metadata={"help": "Mel bins of the generated clips."})
    frames: int = field(default=1001, metadata={"help": "Frames of the generated clips."})
    epochs: int = field(default=2, metadata={"help": "Epochs read per reader-thread count and race."})
    spin_cycles: int = field(default=20_000_000, metadata={"help": "GPU cycles of each spin (about 10 ms on an H100)."})


def poison_cache(device: torch.device, copy: str) -> None:
    """Fill the copying stream's cached GPU memory with NaN (the allocator reuses a block on the stream it was made
    for): 1 GiB of large blocks and 32 MiB of small ones (labels) that the next copies are carved from, so memory
    read before its copy reached it holds NaN, not an identical batch left there by an earlier pass."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        with torch.cuda.stream(copy_stream(device) if copy == "side_stream" else torch.cuda.current_stream(device)):
            large = torch.full((2**29,), float("nan"), dtype=torch.float16, device=device)
            small = [torch.full((2**18,), float("nan"), dtype=torch.float16, device=device) for _ in range(64)]
            del large, small
        torch.cuda.synchronize(device)


def spin(stream: torch.cuda.Stream | None, cycles: int) -> None:
    if stream is not None and cycles:
        with torch.cuda.stream(stream):
            torch.cuda._sleep(cycles)


class LateCopyReader(BatchReader):
    """A BatchReader whose batches reach the GPU late: the loader queues a batch's side-stream copy right after
    reading it (in the same thread), so a spin queued on the copy stream here holds that copy back."""

    def __init__(self, dataset, label_column: str, num_classes: int, device: torch.device, spin_cycles: int):
        super().__init__(dataset, label_column, num_classes)
        self.copy_stream = copy_stream(device) if device.type == "cuda" else None
        self.spin_cycles = spin_cycles

    def __getitem__(self, indices):
        batch = super().__getitem__(indices)
        spin(self.copy_stream, self.spin_cycles)
        return batch


def training_differences(dataset, device: torch.device, args: CheckArguments, threads: int, race: str, copy: str,
                         control: str | None = None) -> int:
    """Tensors of the delivered epochs that differ from the host's. `control` ("no wait", "no record_stream"): read
    on a stream of the check's own instead of the training stream, which the loader's guards do not cover."""
    poison_cache(device, copy)
    late = args.spin_cycles if race == "late copy" else 0
    host = MultiTaskLoader(epoch_rows=len(dataset), asc=BatchReader(dataset, "scene", common.NUM_SCENES),
                           aet=BatchReader(dataset, "events", common.NUM_EVENTS), asc_batch_size=16, aet_batch_size=32, seed=0)
    delivered = MultiTaskLoader(epoch_rows=len(dataset), asc=LateCopyReader(dataset, "scene", common.NUM_SCENES, device, late),
                                aet=LateCopyReader(dataset, "events", common.NUM_EVENTS, device, late), asc_batch_size=16,
                                aet_batch_size=32, seed=0, num_workers=threads, device=device, gpu_batch_copy=copy)
    training_stream = torch.cuda.current_stream(device) if device.type == "cuda" else None
    read_stream = torch.cuda.Stream(device) if control else training_stream
    expected, read = [], []
    for epoch in range(args.epochs):
        if race == "busy training stream":
            spin(read_stream, 150 * args.spin_cycles)
        for host_batch, batch in zip(host.epoch(epoch), delivered.epoch(epoch), strict=True):
            if control == "no record_stream":  # after the copy (the training stream waits for it), not after its memory
                read_stream.wait_stream(training_stream)
            with torch.cuda.stream(read_stream):  # None (on the CPU): the current stream
                for task in ("asc", "aet"):
                    for key, value in batch[task].items():
                        read.append(value.clone())  # queued on the reading stream; compared after the epochs
                        expected.append(host_batch[task][key])
            # The loader drops this batch at its next step; from then on only record_stream keeps its memory from a
            # later copy until the (far behind) reading stream has read it.
    host.close()
    delivered.close()
    return sum(got.device.type != device.type or not torch.equal(got.cpu(), value) for got, value in zip(read, expected))


def evaluation_differences(dataset, device: torch.device, args: CheckArguments, threads: int) -> int:
    """An evaluation pass (the default copy) behind a busy training stream."""
    poison_cache(device, "training_stream")
    reader = BatchReader(dataset, "scene", common.NUM_SCENES)
    spin(torch.cuda.current_stream(device) if device.type == "cuda" else None, 150 * args.spin_cycles)

    def summary(features: torch.Tensor) -> torch.Tensor:  # exact and order-free: a stale or torn clip changes it
        return torch.stack([features.amax(dim=(1, 2)), features.amin(dim=(1, 2)), features[:, -1, -1]], dim=1).float()

    def network(input_features):
        return {"scene_logits": summary(input_features)}

    expected = summary(reader[list(range(len(reader)))]["input_features"]).numpy()
    accelerator = Accelerator(cpu=device.type == "cpu")
    logits, labels = predict_split(accelerator, network, reader, 64, "scene_logits", num_workers=threads)
    return int((logits != expected).any(axis=1).sum() + (labels != reader.labels).sum())


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(CheckArguments).parse_args_into_dataclasses(args=argv)
    common.disable_progress_bars()
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}, but torch sees no CUDA device")
        device = with_index(device)  # the key of the loader's copy stream
    failures = 0
    with tempfile.TemporaryDirectory(prefix="check_gpu_batches_") as folder:
        dataset = common.build_synthetic_cache(Path(folder) / "cache", args.num_rows, args.num_mel_bins, args.frames)
        for threads in (0, 1, 2):
            found = {f"{copy}, {race}": training_differences(dataset, device, args, threads, race, copy)
                     for copy, race in (("training_stream", "busy training stream"), ("side_stream", "late copy"),
                                        ("side_stream", "busy training stream"))}
            found["evaluation, busy training stream"] = evaluation_differences(dataset, device, args, threads)
            print(f"{threads} reader threads on {device}: tensors differing from the host's: "
                  + ", ".join(f"{race} {count}" for race, count in found.items()), flush=True)
            failures += sum(found.values())
        if device.type == "cuda":  # the negative controls: read where a guard does not reach, its race must show
            for control, race in (("no wait", "late copy"), ("no record_stream", "busy training stream")):
                seen = training_differences(dataset, device, args, 0, race, "side_stream", control)
                print(f"negative control, {control} (read on another stream): {seen} differing tensors"
                      + ("" if seen else " — NONE: this check cannot provoke that race (inconclusive)"), flush=True)
                failures += seen == 0
        del dataset
    print("identical" if not failures else "DIFFERENCES FOUND (or a negative control that saw none)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
