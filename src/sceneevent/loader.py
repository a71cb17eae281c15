"""Reading cached log-mels in whole batches, and the two-stream multi-task loader.

Every process builds its own loaders and takes its own share of each global batch (no batch is
dispatched from rank 0). Batch positions are pure functions of `(seed, epoch, step)`, so a resumed
run reads exactly the batches the interrupted one would have read.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import datasets
import numpy as np
import pyarrow as pa
import torch

from .file_rows import FileRows


class BatchReader(torch.utils.data.Dataset):
    """Indexing with a list of row indices returns a whole batch: one sorted read, not B row reads.

    Features stay fp16. Where the dataset's rows lie in its Arrow cache files they are read with
    `preadv` (`FileRows`), so the process holds one batch instead of the pages of the memory map
    it has touched (which grow with the cache); otherwise they are gathered from the Arrow buffers.
    Labels are small and read once into arrays: a class index per clip for scenes, flat class
    indices plus offsets for events (made multi-hot per batch).

    Args:
        dataset: a cached split with `input_features` and the label column.
        label_column: `"scene"` (class index) or `"events"` (list of class indices → multi-hot).
        num_classes: classes of the label column (multi-hot width for events).
        read_from_files: read features from the cache files where possible (False: always through
            Arrow; the benchmarks compare the two).
    """

    def __init__(self, dataset: datasets.Dataset, label_column: str, num_classes: int, read_from_files: bool = True):
        if dataset._indices is not None:  # a select/filter view: materialise it once so rows map to Arrow rows
            dataset = dataset.flatten_indices()
        self.dataset = dataset
        self.shape = tuple(dataset.features["input_features"].shape)
        self.label_column = label_column
        self.num_classes = num_classes
        self.file_rows = FileRows.locate(dataset, "input_features") if read_from_files else None
        self._read_labels()

    def _read_labels(self) -> None:
        column = self.dataset.data.column(self.label_column)
        if column.null_count:
            raise ValueError(f"column {self.label_column!r} has {column.null_count} clips without a label")
        if self.label_column == "scene":
            self.labels = np.asarray(column.to_numpy(), dtype=np.int64)
            self.label_offsets = None
        else:
            lists = column.combine_chunks() if column.num_chunks else pa.array([], type=column.type)
            if lists.values.null_count:
                raise ValueError(f"column {self.label_column!r} has null class indices inside its label lists")
            self.label_offsets = np.asarray(lists.offsets, dtype=np.int64)  # row i: labels[offsets[i]:offsets[i + 1]]
            self.label_counts = np.diff(self.label_offsets)
            self.labels = np.asarray(lists.values.to_numpy(zero_copy_only=False), dtype=np.int64)
        used = self.labels[self.label_offsets[0] : self.label_offsets[-1]] if self.label_offsets is not None else self.labels
        bad = used[(used < 0) | (used >= self.num_classes)]
        if len(bad):
            raise ValueError(
                f"column {self.label_column!r} has class indices outside 0..{self.num_classes - 1} "
                f"(e.g. {sorted(set(bad.tolist()))[:5]}): unlabelled clips or labels of another label set"
            )

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        rows = np.sort(np.asarray(indices, dtype=np.int64))
        if len(rows) and (rows[0] < 0 or rows[-1] >= len(self)):
            raise IndexError(f"rows {rows[0]}..{rows[-1]} asked of a split of {len(self)} clips")
        if self.file_rows is not None:
            features = self.file_rows.read(rows)
        else:
            table = self.dataset.data.fast_gather(rows)
            column = table.column("input_features").combine_chunks()
            features = column.storage.flatten().flatten().to_numpy(zero_copy_only=False).reshape(len(rows), *self.shape)
            features = np.require(features, requirements="W")  # Arrow's buffers are read-only; torch wants to own writable memory
        batch = {"input_features": torch.from_numpy(features)}  # (B, n_mels, frames)
        if self.label_offsets is None:
            batch["scene_labels"] = torch.from_numpy(self.labels[rows])
        else:
            starts, counts = self.label_offsets[rows], self.label_counts[rows]
            # the position of every label of the batch in the flat label array
            within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            multi_hot = np.zeros((len(rows), self.num_classes), dtype=np.float32)
            multi_hot[np.repeat(np.arange(len(rows)), counts), self.labels[np.repeat(starts, counts) + within]] = 1.0
            batch["event_labels"] = torch.from_numpy(multi_hot)
        return batch


class DeviceBatchReader:
    """A whole cached split held as tensors on the training device: a batch is one `index_select`.

    For caches that fit in accelerator memory (TUT 2018 at 128 x 1001 fp16 is about 2 GB): no loader
    process, no host-to-device copy per step. Filled chunk by chunk from a `BatchReader`.
    """

    def __init__(self, reader: BatchReader, device: torch.device | str, chunk_rows: int = 4096):
        self.label_column, self.num_classes, self.device = reader.label_column, reader.num_classes, torch.device(device)
        self.tensors: dict[str, torch.Tensor] = {}
        for start in range(0, len(reader), chunk_rows):
            part = reader[list(range(start, min(start + chunk_rows, len(reader))))]
            for key, value in part.items():
                if key not in self.tensors:  # allocated once: no concatenation doubling device memory
                    self.tensors[key] = torch.empty((len(reader), *value.shape[1:]), dtype=value.dtype, device=self.device)
                self.tensors[key][start : start + value.shape[0]] = value.to(self.device)

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def __getitem__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        # Sorted like BatchReader's rows, so that both readers give identical batches (and MixUp pairs).
        index = torch.as_tensor(sorted(indices), dtype=torch.long, device=self.device)
        return {key: value.index_select(0, index) for key, value in self.tensors.items()}


def iterate_batches(reader: BatchReader | DeviceBatchReader, batches, **loader_kwargs):
    """Batches of `reader` for the index batches: through a DataLoader, or directly for a device reader."""
    if isinstance(reader, DeviceBatchReader):
        return (reader[indices] for indices in batches)
    return iter(batch_loader(reader, batches, **loader_kwargs))


class BatchPlan:
    """Which rows each process reads at each step of an epoch.

    An epoch is a permutation of the rows (seeded by `seed + epoch`), cut into global batches of
    `batch_size * num_processes`; process `r` reads the `r`-th slice of each. Training drops the
    incomplete last batch; evaluation keeps it and gives each process a contiguous shard.
    """

    def __init__(self, num_rows: int, batch_size: int, *, seed: int, num_processes: int = 1, process_index: int = 0):
        if batch_size <= 0:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        self.num_rows, self.batch_size, self.seed = num_rows, batch_size, seed
        self.num_processes, self.process_index = num_processes, process_index

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.num_processes

    @property
    def steps_per_epoch(self) -> int:
        return self.num_rows // self.global_batch_size

    def epoch_batches(self, epoch: int, start_step: int = 0) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(self.num_rows, generator=generator).numpy()
        start = self.process_index * self.batch_size
        for step in range(start_step, self.steps_per_epoch):
            offset = step * self.global_batch_size + start
            yield order[offset : offset + self.batch_size].tolist()

    def eval_batches(self) -> Iterator[list[int]]:
        """This process's contiguous shard, in order, in batches (the last one may be short)."""
        shard = np.array_split(np.arange(self.num_rows), self.num_processes)[self.process_index]
        for offset in range(0, len(shard), self.batch_size):
            yield shard[offset : offset + self.batch_size].tolist()


class _Batches:
    """An iterable of index batches for a DataLoader (indices are drawn in the main process)."""

    def __init__(self, make_iterator):
        self.make_iterator = make_iterator

    def __iter__(self):
        return self.make_iterator()


def _endless_batches(plan: BatchPlan, epoch: int, step: int) -> Iterator[list[int]]:
    """`plan`'s batches from `(epoch, step)` on, epoch after epoch.

    A module function rather than a method: a sampler holding the loader would put the loader, its
    iterators and their worker processes in a reference cycle that only the garbage collector frees.
    """
    while True:
        yield from plan.epoch_batches(epoch, start_step=step)
        epoch, step = epoch + 1, 0


def batch_loader(reader: BatchReader, batches, *, num_workers: int = 0, pin_memory: bool = False):
    """A DataLoader whose every item is a whole batch read by `reader`."""
    return torch.utils.data.DataLoader(
        reader,
        sampler=batches,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None,
        # Its own generator: creating an iterator must not draw from the global RNG, or a resumed
        # run (which creates its iterators at other moments) would augment differently.
        generator=torch.Generator().manual_seed(0),
    )


class MultiTaskLoader:
    """Yields `{"asc": scene sub-batch, "aet": event sub-batch}` per training step.

    The scene set defines the epoch (`steps_per_epoch`); the event set cycles, reshuffled each
    time round. Either task may be absent (alpha = 0 or 1); the epoch length is still set by the
    scene set, so every alpha trains for the same number of steps.

    Each stream is one DataLoader iterator for the whole run, so its workers start once and keep
    prefetching across epoch boundaries (an epoch does not drain and refill the pipeline). The
    position is `(epoch, step)` plus the number of event batches consumed; `state_dict()` records
    it for checkpoints. `close()` stops the workers.
    """

    def __init__(
        self,
        *,
        epoch_rows: int,
        asc: BatchReader | DeviceBatchReader | None,
        aet: BatchReader | DeviceBatchReader | None,
        asc_batch_size: int,
        aet_batch_size: int,
        seed: int,
        num_processes: int = 1,
        process_index: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        shard = dict(num_processes=num_processes, process_index=process_index)
        self.asc, self.aet = asc, aet
        self.asc_plan = BatchPlan(epoch_rows, asc_batch_size, seed=seed, **shard)
        if self.asc_plan.steps_per_epoch == 0:
            raise ValueError(
                f"the scene training set has {epoch_rows} clips, fewer than one global batch of "
                f"{self.asc_plan.global_batch_size} (asc_batch_size x processes)"
            )
        self.aet_plan = None
        if aet is not None:
            # A different seed stream from the scene plan: the two orders must not be coupled.
            self.aet_plan = BatchPlan(len(aet), aet_batch_size, seed=seed + 7919 * 1000, **shard)
            if self.aet_plan.steps_per_epoch == 0:
                raise ValueError(
                    f"the event training set has {len(aet)} clips, fewer than one global batch of "
                    f"{self.aet_plan.global_batch_size} (aet_batch_size x processes)"
                )
        self.loader_kwargs = dict(num_workers=num_workers, pin_memory=pin_memory)
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
        self._aet_stream = None

    def close(self) -> None:
        """Drop both streams (their worker processes exit); the next `epoch()` starts new ones."""
        self._asc_stream = self._aet_stream = self._asc_next = None

    def _stream(self, reader, plan: BatchPlan, epoch: int, step: int):
        return iterate_batches(reader, _Batches(functools.partial(_endless_batches, plan, epoch, step)), **self.loader_kwargs)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[dict[str, dict[str, torch.Tensor] | None]]:
        """The batches of `epoch` from `start_step` on (host tensors; the caller moves them)."""
        if self.asc is not None and (self._asc_stream is None or self._asc_next != (epoch, start_step)):
            self._asc_stream = self._stream(self.asc, self.asc_plan, epoch, start_step)
        if self.aet is not None and self._aet_stream is None:
            self._aet_stream = self._stream(self.aet, self.aet_plan, *divmod(self.aet_consumed, self.aet_plan.steps_per_epoch))
        for step in range(start_step, self.steps_per_epoch):
            batch = {"asc": None, "aet": None}
            if self._asc_stream is not None:
                batch["asc"] = next(self._asc_stream)
                self._asc_next = (epoch, step + 1) if step + 1 < self.steps_per_epoch else (epoch + 1, 0)
            if self._aet_stream is not None:
                batch["aet"] = next(self._aet_stream)
                self.aet_consumed += 1
            yield batch
