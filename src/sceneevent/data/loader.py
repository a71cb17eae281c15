"""From the log-mel store to training batches. Every process reads its own share of each global batch
(nothing is dispatched from rank 0), at positions that are pure functions of `(seed, epoch, step)`:
a resumed run reads exactly the batches the interrupted one would have read."""

from __future__ import annotations

import functools
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import KW_ONLY, dataclass

import numpy as np
import pyarrow as pa
import torch

from .feature_store import StoredSplit
from ..models.losses import IGNORE_INDEX

Batch = dict[str, torch.Tensor]


class BatchReader(torch.utils.data.Dataset):
    """Indexing with a list of row indices returns a whole batch, rows sorted: fp16 features and labels.

    Features come from the store's segment files (`feature_store.StoredSplit`), one `pread` per row into
    memory the process owns, so RSS stays one batch whatever the store's size (a memory map, even one per
    batch as nanoGPT makes, maps up to a 2 MiB page-cache folio around each row read, and reads 1.5-2x
    slower). Labels are read once: a class per clip for scenes, flat classes plus offsets for events.

    Args:
        split: a stored split (its label column, and where each row's features are).
        label_column: `"scene"` (class index) or `"events"` (list of class indices → multi-hot).
        num_classes: classes of the label column (multi-hot width for events).
    """

    def __init__(self, split: StoredSplit, label_column: str, num_classes: int):
        self.label_column, self.num_classes = label_column, num_classes
        self.paths, self.locations = split.segment_paths, split.locations
        headers = [np.load(path, mmap_mode="r") for path in self.paths]  # dtype, shape and where row 0 starts
        self.shape, self.file_dtype = headers[0].shape[1:], headers[0].dtype
        self.file_offsets = [header.offset for header in headers]
        self.rows_in_file = [len(header) for header in headers]
        del headers
        self._read_labels(split.dataset.with_format("arrow")[label_column])

    def _read_labels(self, column: pa.ChunkedArray) -> None:
        if column.null_count:
            raise ValueError(f"column {self.label_column!r} has {column.null_count} clips without a label")
        self.label_offsets = None
        if self.label_column != "scene":
            lists = column.combine_chunks()
            column = lists.flatten()
            if column.null_count:
                raise ValueError(f"column {self.label_column!r} has null class indices inside its label lists")
            offsets = np.asarray(lists.offsets, dtype=np.int64)
            self.label_offsets = offsets - offsets[0]  # row i: labels[offsets[i]:offsets[i + 1]] (a slice starts past 0)
        self.labels = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64)
        bad = self.labels[(self.labels < 0) | (self.labels >= self.num_classes)]
        if len(bad):
            raise ValueError(f"column {self.label_column!r} has class indices outside 0..{self.num_classes - 1} (e.g. "
                             f"{sorted(set(bad.tolist()))[:5]}): unlabelled clips or labels of another label set")

    def __len__(self) -> int:
        return len(self.locations)

    def __getitem__(self, indices: list[int]) -> Batch:
        rows = np.sort(np.asarray(indices, dtype=np.int64))
        if len(rows) and (rows[0] < 0 or rows[-1] >= len(self)):
            raise IndexError(f"rows {rows[0]}..{rows[-1]} asked of a split of {len(self)} clips")
        features = np.empty((len(rows), *self.shape), dtype=self.file_dtype)
        locations = self.locations[rows]
        for segment in np.unique(locations[:, 0]).tolist():
            path, offset = self.paths[segment], self.file_offsets[segment]
            with open(path, "rb", buffering=0) as file:  # per batch: reader threads share no descriptor
                for target in np.flatnonzero(locations[:, 0] == segment).tolist():
                    row, buffer = int(locations[target, 1]), features[target]
                    if os.preadv(file.fileno(), [buffer], offset + row * buffer.nbytes) != buffer.nbytes:
                        raise OSError(f"{path} ends before row {row}: the store's segment was truncated or rewritten "
                                      "since it was checked; run again to rebuild it")
        batch = {"input_features": torch.from_numpy(features)}  # (B, n_mels, frames)
        if self.label_offsets is None:
            batch["scene_labels"] = torch.from_numpy(self.labels[rows])
        else:
            batch["event_labels"] = torch.from_numpy(self._multi_hot(rows))
        return batch

    def _multi_hot(self, rows: np.ndarray) -> np.ndarray:
        starts, counts = self.label_offsets[rows], self.label_offsets[rows + 1] - self.label_offsets[rows]
        # the position of every label of the batch in the flat label array
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        multi_hot = np.zeros((len(rows), self.num_classes), dtype=np.float32)
        multi_hot[np.repeat(np.arange(len(rows)), counts), self.labels[np.repeat(starts, counts) + within]] = 1.0
        return multi_hot


class DeviceBatchReader:
    """A whole cached split held on the training device, filled chunk by chunk from a `BatchReader`: a batch
    is one `index_select`, with no loader and no copy per step (TUT 2018 at 128 x 1001 fp16 is about 2 GB)."""

    def __init__(self, reader: BatchReader, device: torch.device | str, chunk_rows: int = 4096):
        self.label_column, self.num_classes, self.device = reader.label_column, reader.num_classes, torch.device(device)
        self.tensors: Batch = {}
        for start in range(0, len(reader), chunk_rows):
            part = reader[list(range(start, min(start + chunk_rows, len(reader))))]
            for key, value in part.items():
                if key not in self.tensors:  # allocated once: no concatenation doubling device memory
                    self.tensors[key] = torch.empty((len(reader), *value.shape[1:]), dtype=value.dtype, device=self.device)
                self.tensors[key][start : start + value.shape[0]] = value.to(self.device)

    def __len__(self) -> int:
        return len(self.tensors["input_features"])

    def __getitem__(self, indices: list[int]) -> Batch:
        # Sorted like BatchReader's rows, so that both readers give identical batches (and MixUp pairs).
        index = torch.as_tensor(sorted(indices), dtype=torch.long, device=self.device)
        return {key: value.index_select(0, index) for key, value in self.tensors.items()}


@dataclass
class BatchPlan:
    """Which rows one process reads at each step. An epoch is a permutation of the rows seeded by `seed + epoch`,
    cut into global batches of `batch_size * num_processes`; process `r` reads the `r`-th slice of each. Training
    drops the incomplete last batch; evaluation keeps it and gives each process a contiguous shard."""

    num_rows: int
    batch_size: int
    _: KW_ONLY
    seed: int
    num_processes: int = 1
    process_index: int = 0

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise ValueError(f"batch size must be positive, got {self.batch_size}")
        self.global_batch_size = self.batch_size * self.num_processes
        self.steps_per_epoch = self.num_rows // self.global_batch_size

    def epoch_batches(self, epoch: int, start_step: int = 0) -> Iterator[list[int]]:
        order = torch.randperm(self.num_rows, generator=torch.Generator().manual_seed(self.seed + epoch)).numpy()
        for step in range(start_step, self.steps_per_epoch):
            start = step * self.global_batch_size + self.process_index * self.batch_size
            yield order[start : start + self.batch_size].tolist()

    def endless_batches(self, epoch: int, start_step: int = 0) -> Iterator[list[int]]:
        """The batches from `(epoch, start_step)` on, epoch after epoch: one stream serves a whole run."""
        while True:
            yield from self.epoch_batches(epoch, start_step)
            epoch, start_step = epoch + 1, 0

    def eval_batches(self) -> Iterator[list[int]]:
        """This process's contiguous shard, in order, in batches (the last one may be short)."""
        shard = np.array_split(np.arange(self.num_rows), self.num_processes)[self.process_index]
        for offset in range(0, len(shard), self.batch_size):
            yield shard[offset : offset + self.batch_size].tolist()


GPU_BATCH_COPIES = ("training_stream", "side_stream")


def batch_loader(reader, batches: Iterable[list[int]], *, num_workers: int = 0, device: torch.device | str | None = None,
                 gpu_batch_copy: str = "training_stream") -> Iterator[Batch]:
    """`reader`'s batch for each index batch, in order: indexed in place for a `DeviceBatchReader`; else read
    in this thread (`num_workers=0`) or by `num_workers` threads that keep `2 * num_workers` batches read ahead.

    Threads, not DataLoader worker processes: `preadv` releases the GIL, and a batch read in this process
    needs no trip through shared memory (on 2 cores worker processes read at 0.08-0.13x the speed of none,
    1-2 threads at 0.6-1.2x; behind a step that leaves the host free, threads hide the reads). `close()` on
    the returned generator stops its threads. With a CUDA `device` the batches arrive there: pinned where they
    are read and copied with `non_blocking=True` on the training stream, as DataLoader's `pin_memory` and
    every PyTorch example do (`gpu_batch_copy="training_stream"`), or copied where they are read on a stream
    of their own (`"side_stream"`, `_SideStreamCopy`); with any other device they stay on the host."""
    if gpu_batch_copy not in GPU_BATCH_COPIES:
        raise ValueError(f"gpu_batch_copy must be one of {', '.join(GPU_BATCH_COPIES)}, got {gpu_batch_copy!r}")
    if isinstance(reader, DeviceBatchReader):
        return (reader[indices] for indices in batches)
    if device is None or torch.device(device).type != "cuda":
        copy = _StayOnHost()
    else:
        copy = (_SideStreamCopy if gpu_batch_copy == "side_stream" else _TrainingStreamCopy)(with_index(torch.device(device)))

    def read(indices: list[int]):
        return copy.start(reader[indices])

    if num_workers == 0:
        return (copy.finish(read(indices)) for indices in batches)
    # A new thread starts on GPU 0, where pinning would open a second context: each starts on this process's GPU.
    on_gpu = {"initializer": torch.cuda.set_device, "initargs": (copy.device,)} if copy.device is not None else {}
    return _read_ahead(read, copy.finish, batches, num_workers, **on_gpu)


class _StayOnHost:
    device = None

    def start(self, batch: Batch) -> Batch:
        return batch

    def finish(self, batch: Batch) -> Batch:
        return batch


class _TrainingStreamCopy:
    """Pinned where the batch is read; copied in the loop, `non_blocking`, on the training stream. PyTorch's
    host allocator keeps a pinned block until the copy queued from it has ended."""

    def __init__(self, device: torch.device):
        self.device = device

    def start(self, batch: Batch) -> Batch:
        return {key: value.pin_memory() for key, value in batch.items()}

    def finish(self, batch: Batch) -> Batch:
        return {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}


class _SideStreamCopy:
    """Host batches to a GPU on a CUDA stream of their own (`copy_stream`): the copy of the next batch runs while
    the GPU computes the current step, instead of queueing behind it on the training stream. On one H200 (bf16, the
    paper's shape) it was ~1.7 % faster behind a 54 ms step: 54.1 vs 55.0 ms with one reader thread. That is a
    single run, so the plain training-stream copy stays the default and this one is `--gpu_batch_copy side_stream`."""

    def __init__(self, device: torch.device):
        self.device = device  # indexed by batch_loader
        self.stream = copy_stream(device)
        self.consumer = torch.cuda.current_stream(self.device)  # the training loop's stream (this is its thread)

    def start(self, batch: Batch) -> tuple[Batch, torch.cuda.Event]:
        """Queue the copy (in a reader thread, or the loop). Pinned first, so that the copy is asynchronous; the
        pinned block is not reused before the copy ends (PyTorch's host allocator records the stream)."""
        with torch.cuda.stream(self.stream):
            copied = {key: value.pin_memory().to(self.device, non_blocking=True) for key, value in batch.items()}
        for value in copied.values():
            value.record_stream(self.consumer)  # its memory, once freed, waits for the loop's kernels too
        return copied, self.stream.record_event()

    def finish(self, started: tuple[Batch, torch.cuda.Event]) -> Batch:
        """In the loop: its next kernels wait for the copy on the GPU; the host does not wait."""
        batch, copied = started
        self.consumer.wait_event(copied)
        return batch


def with_index(device: torch.device) -> torch.device:
    """A CUDA device with its index: Accelerate's single-GPU device is plain "cuda", which the reader threads'
    `set_device` refuses, and `copy_stream` keys its streams by the indexed device."""
    return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())


@functools.cache
def copy_stream(device: torch.device) -> torch.cuda.Stream:
    """The stream `gpu_batch_copy="side_stream"` copies batches to `device` (an indexed GPU, `with_index`) on,
    public for code that must order its own work against those copies (e.g. to synchronise with them, or
    `benchmarks/check_gpu_batches.py`, which delays them). One per GPU for the whole process: a new
    `torch.cuda.Stream` per loader would cycle through torch's shared pool of 32 and sooner or later share
    NCCL's; the high-priority pool is one NCCL does not draw from by default."""
    return torch.cuda.Stream(device, priority=-1)


def _read_ahead(read, finish, batches: Iterable[list[int]], num_threads: int, **pool_options) -> Iterator[Batch]:
    pool = ThreadPoolExecutor(num_threads, thread_name_prefix="sceneevent-reader", **pool_options)
    pending: deque[Future] = deque()
    try:
        for indices in batches:
            pending.append(pool.submit(read, indices))
            if len(pending) > 2 * num_threads:
                yield finish(pending.popleft().result())
        while pending:
            yield finish(pending.popleft().result())
    finally:  # closed early (an endless stream always is): drop what was read ahead, finish the read in hand
        pool.shutdown(cancel_futures=True)


class MultiTaskLoader:
    """Yields `{"asc": scene sub-batch, "aet": event sub-batch}` per training step. The scene set defines the
    epoch, even when absent (alpha = 1: every alpha trains the same steps); the event set cycles, reshuffled
    each time round. Each stream is one `batch_loader` for the whole run: its reader threads start once and
    read ahead across epochs. The position is `(epoch, step)` plus the event batches consumed, which
    `state_dict()` records for checkpoints. `close()` stops the threads."""

    def __init__(self, *, epoch_rows: int, asc: BatchReader | DeviceBatchReader | None, aet: BatchReader | DeviceBatchReader | None,
                 asc_batch_size: int, aet_batch_size: int, seed: int, num_processes: int = 1, process_index: int = 0,
                 num_workers: int = 0, device: torch.device | str | None = None, gpu_batch_copy: str = "training_stream"):
        shard = dict(num_processes=num_processes, process_index=process_index)
        self.asc, self.aet = asc, aet
        self.asc_plan = BatchPlan(epoch_rows, asc_batch_size, seed=seed, **shard)
        # A different seed stream from the scene plan: the two orders must not be coupled.
        self.aet_plan = BatchPlan(len(aet), aet_batch_size, seed=seed + 7919 * 1000, **shard) if aet is not None else None
        for task, flag, plan in (("scene", "asc", self.asc_plan), ("event", "aet", self.aet_plan)):
            if plan is not None and plan.steps_per_epoch == 0:
                raise ValueError(f"the {task} training set has {plan.num_rows} clips, fewer than one global batch of "
                                 f"{plan.global_batch_size} ({flag}_batch_size x processes)")
        self.loader_kwargs = dict(num_workers=num_workers, device=device, gpu_batch_copy=gpu_batch_copy)
        self.aet_consumed = 0
        self._asc_stream = self._aet_stream = None
        self._asc_next: tuple[int, int] | None = None  # the (epoch, step) the scene stream yields next

    @property
    def steps_per_epoch(self) -> int:
        return self.asc_plan.steps_per_epoch

    def state_dict(self) -> dict:
        return {"aet_consumed": self.aet_consumed}

    def load_state_dict(self, state: dict) -> None:
        self.aet_consumed = int(state["aet_consumed"])
        self._aet_stream = _stopped(self._aet_stream)

    def close(self) -> None:
        """Stop both streams (and their reader threads); the next `epoch()` starts new ones."""
        self._asc_stream, self._aet_stream = _stopped(self._asc_stream), _stopped(self._aet_stream)
        self._asc_next = None

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[dict[str, Batch | None]]:
        """The batches of `epoch` from `start_step` on: on the `device` if it is a GPU, else host tensors."""
        if self.asc is not None and self._asc_next != (epoch, start_step):
            _stopped(self._asc_stream)
            self._asc_stream = batch_loader(self.asc, self.asc_plan.endless_batches(epoch, start_step), **self.loader_kwargs)
        if self.aet is not None and self._aet_stream is None:
            position = divmod(self.aet_consumed, self.aet_plan.steps_per_epoch)
            self._aet_stream = batch_loader(self.aet, self.aet_plan.endless_batches(*position), **self.loader_kwargs)
        for step in range(start_step, self.steps_per_epoch):
            batch = {"asc": None, "aet": None}
            if self.asc is not None:
                batch["asc"] = next(self._asc_stream)
                self._asc_next = (epoch, step + 1) if step + 1 < self.steps_per_epoch else (epoch + 1, 0)
            if self.aet is not None:
                batch["aet"] = next(self._aet_stream)
                self.aet_consumed += 1
            yield batch


def _stopped(stream: Iterator[Batch] | None) -> None:
    if stream is not None:
        stream.close()  # its reader threads finish the read in hand and exit


def join_task_batches(asc: Batch | None, aet: Batch | None, num_scenes: int, num_events: int) -> Batch:
    """One model input: the scene rows, then the event rows. Each task's labels give the other task's rows
    `IGNORE_INDEX`, so that a row counts only in its own task's loss; an absent task has no labels.

    Args:
        asc: `{"input_features": (B, n_mels, frames), "scene_labels": (B,) or soft (B, num_scenes)}`, or None.
        aet: `{"input_features": (B', n_mels, frames), "event_labels": (B', num_events)}`, or None.
        num_scenes, num_events: label widths.
    """
    if asc is None and aet is None:
        raise ValueError("join_task_batches needs a scene or an event sub-batch")
    scene_rows, event_rows = (0 if part is None else part["input_features"].shape[0] for part in (asc, aet))
    batch = {"input_features": torch.cat([part["input_features"] for part in (asc, aet) if part is not None])}
    if asc is not None:
        labels = asc["scene_labels"]
        shape = (event_rows, num_scenes) if labels.ndim == 2 else (event_rows,)
        batch["scene_labels"] = torch.cat([labels, torch.full(shape, IGNORE_INDEX, dtype=labels.dtype, device=labels.device)])
    if aet is not None:
        labels = aet["event_labels"].float()
        ignored = torch.full((scene_rows, num_events), IGNORE_INDEX, dtype=labels.dtype, device=labels.device)
        batch["event_labels"] = torch.cat([ignored, labels])
    return batch
