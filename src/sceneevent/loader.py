"""Reading cached log-mels in whole batches, and the two-stream multi-task loader.

Every process builds its own loaders and takes its own share of each global batch (no batch is
dispatched from rank 0). Batch positions are pure functions of `(seed, epoch, step)`, so a resumed
run reads exactly the batches the interrupted one would have read.
"""

from __future__ import annotations

from collections.abc import Iterator

import datasets
import numpy as np
import torch


class BatchReader(torch.utils.data.Dataset):
    """Indexing with a list of row indices returns a whole batch: one sorted Arrow read, not B row reads.

    The features are taken straight from the Arrow buffers, so they stay fp16 (datasets' numpy
    formatter would return float32: twice the host memory and twice the bytes to the device).

    Args:
        dataset: a cached split with `input_features` and the label column.
        label_column: `"scene"` (class index) or `"events"` (list of class indices → multi-hot).
        num_classes: classes of the label column (multi-hot width for events).
    """

    def __init__(self, dataset: datasets.Dataset, label_column: str, num_classes: int):
        if dataset._indices is not None:  # a select/filter view: materialise it once so rows map to Arrow rows
            dataset = dataset.flatten_indices()
        self.dataset = dataset
        self.shape = tuple(dataset.features["input_features"].shape)
        self.label_column = label_column
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        table = self.dataset.data.fast_gather(np.asarray(sorted(indices), dtype=np.int64))
        column = table.column("input_features").combine_chunks()
        values = column.storage.flatten().flatten().to_numpy(zero_copy_only=False)
        batch = {"input_features": torch.from_numpy(values.reshape(len(indices), *self.shape))}  # (B, n_mels, frames)
        if self.label_column == "scene":
            batch["scene_labels"] = torch.from_numpy(table.column("scene").to_numpy().astype(np.int64))
        else:
            labels = table.column(self.label_column).to_pylist()
            multi_hot = np.zeros((len(labels), self.num_classes), dtype=np.float32)
            for row, classes in enumerate(labels):
                multi_hot[row, np.asarray(classes, dtype=np.int64)] = 1.0
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


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    # Non-blocking: with pinned host memory the copy overlaps the previous step.
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


class MultiTaskLoader:
    """Yields `{"asc": scene sub-batch, "aet": event sub-batch}` per training step.

    The scene set defines the epoch (`steps_per_epoch`); the event set cycles, reshuffled each
    time round. Either task may be absent (alpha = 0 or 1); the epoch length is still set by the
    scene set, so every alpha trains for the same number of steps.

    The position is `(epoch, step)` plus the number of event batches consumed; `state_dict()`
    records it for checkpoints.
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
        self._aet_iterator = None

    @property
    def steps_per_epoch(self) -> int:
        return self.asc_plan.steps_per_epoch

    def state_dict(self) -> dict:
        return {"aet_consumed": self.aet_consumed}

    def load_state_dict(self, state: dict) -> None:
        self.aet_consumed = int(state["aet_consumed"])
        self._aet_iterator = None

    def _aet_batches(self, start: int) -> Iterator[list[int]]:
        per_epoch = self.aet_plan.steps_per_epoch
        cycle, step = divmod(start, per_epoch)
        while True:
            yield from self.aet_plan.epoch_batches(cycle, start_step=step)
            cycle, step = cycle + 1, 0

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[dict[str, dict[str, torch.Tensor] | None]]:
        """The batches of `epoch` from `start_step` on (host tensors; the caller moves them)."""
        asc_iterator = None
        if self.asc is not None:
            asc_iterator = iterate_batches(
                self.asc, _Batches(lambda: self.asc_plan.epoch_batches(epoch, start_step)), **self.loader_kwargs
            )
        if self.aet is not None and self._aet_iterator is None:
            start = self.aet_consumed
            self._aet_iterator = iterate_batches(self.aet, _Batches(lambda: self._aet_batches(start)), **self.loader_kwargs)
        for _ in range(start_step, self.steps_per_epoch):
            batch = {"asc": next(asc_iterator) if asc_iterator is not None else None, "aet": None}
            if self._aet_iterator is not None:
                batch["aet"] = next(self._aet_iterator)
                self.aet_consumed += 1
            yield batch
