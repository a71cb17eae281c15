"""Reading fixed-shape feature rows out of Arrow cache files with `pread`, not through the memory map.

A read through the memory map leaves every page the kernel maps around it resident in the process
(fault-around maps up to 64 KiB per touched page), so random batches over a large cache end up
mapping most of the file: the trainer's RSS grows with the data set. `preadv` copies just the
batch's bytes out of the page cache (shared, and reclaimed by the OS) into a buffer the process
owns, so the process holds one batch whatever the cache size.

Fixed-shape `Array2D` rows of a record batch are contiguous in its values buffer, so a row's bytes
are at `record batch offset + row * row_nbytes`; the offsets are read once from the files' Arrow
metadata, without touching the values.
"""

from __future__ import annotations

import logging
import math
import os

import datasets
import numpy as np
import pyarrow as pa

logger = logging.getLogger(__name__)


class FileRows:
    """Where each row of a fixed-shape column lies in the dataset's Arrow files, and batch reads of them.

    Build it with `FileRows.locate(dataset, column)`, which returns None where rows cannot be read
    from the files (an in-memory dataset, an index mapping, columns changed after loading, or no
    `os.preadv` on this platform); the caller then reads through Arrow.
    """

    def __init__(self, paths: list[str], first_rows: np.ndarray, file_index: np.ndarray, offsets: np.ndarray,
                 shape: tuple[int, ...], dtype: np.dtype):
        self.paths, self.shape, self.dtype = paths, shape, np.dtype(dtype)
        self.first_rows, self.file_index, self.offsets = first_rows, file_index, offsets  # one entry per record batch
        self.row_nbytes = math.prod(shape) * self.dtype.itemsize
        self._fds: dict[int, list[int]] = {}  # per process id: DataLoader workers open their own

    @classmethod
    def locate(cls, dataset: datasets.Dataset, column: str) -> FileRows | None:
        feature = dataset.features.get(column)
        if not hasattr(os, "preadv") or dataset._indices is not None or not hasattr(feature, "shape"):
            return None
        if any(size is None for size in feature.shape):  # variable-length rows: no fixed stride
            return None
        paths = [entry["filename"] for entry in dataset.cache_files]
        if not paths or len(dataset) == 0:
            return None
        dtype = np.dtype(feature.dtype)
        per_file = [_record_batch_extents(path, column, math.prod(feature.shape), dtype) for path in paths]
        if any(extents is None for extents in per_file):
            return None
        first_rows, file_index, offsets, total = [], [], [], 0
        for index, extents in enumerate(per_file):
            for rows, offset in extents:
                first_rows.append(total)
                file_index.append(index)
                offsets.append(offset)
                total += rows
        if total != len(dataset):  # part of the table is not in these files (e.g. concatenated in memory)
            return None
        rows = cls(paths, np.asarray(first_rows, dtype=np.int64), np.asarray(file_index, dtype=np.int64),
                   np.asarray(offsets, dtype=np.int64), tuple(feature.shape), dtype)
        if not rows._matches_arrow(dataset, column):
            logger.warning("%s: rows of %r in %s differ from the loaded table (changed after loading?); reading "
                           "through Arrow instead", type(rows).__name__, column, paths)
            return None
        return rows

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Rows `rows` (sorted ascending) as one `(len(rows), *shape)` array."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.shape), dtype=self.dtype)
        if len(rows) == 0:
            return out
        record_batch = np.searchsorted(self.first_rows, rows, side="right") - 1
        files = self.file_index[record_batch]
        offsets = self.offsets[record_batch] + (rows - self.first_rows[record_batch]) * self.row_nbytes
        # Neighbouring rows of one file become one read.
        breaks = np.flatnonzero((np.diff(files) != 0) | (np.diff(offsets) != self.row_nbytes)) + 1
        buffer = out.reshape(-1).view(np.uint8)
        fds = self._open()
        for start, stop in zip(np.r_[0, breaks], np.r_[breaks, len(rows)]):
            target = memoryview(buffer[start * self.row_nbytes : stop * self.row_nbytes])
            self._read_exactly(fds[files[start]], target, int(offsets[start]), self.paths[files[start]])
        return out

    def _open(self) -> list[int]:
        pid = os.getpid()
        if pid not in self._fds:
            self._fds = {pid: [os.open(path, os.O_RDONLY) for path in self.paths]}  # a forked child drops the parent's
        return self._fds[pid]

    @staticmethod
    def _read_exactly(fd: int, target: memoryview, offset: int, path: str) -> None:
        while len(target):
            count = os.preadv(fd, [target], offset)
            if count == 0:
                raise OSError(f"{path} ends before byte {offset + len(target)}: the cache file is shorter than its "
                              "Arrow metadata says (truncated or rewritten since it was opened); rebuild the cache")
            target, offset = target[count:], offset + count

    def _matches_arrow(self, dataset: datasets.Dataset, column: str) -> bool:
        """First, middle and last rows read both ways agree (guards against tables changed after loading)."""
        probe = sorted({0, len(dataset) // 2, len(dataset) - 1})
        table = dataset.data.fast_gather(np.asarray(probe, dtype=np.int64))
        values = _values(table.column(column).combine_chunks())
        if values is None or values.type != pa.from_numpy_dtype(self.dtype) or len(values) != len(probe) * math.prod(self.shape):
            return False
        expected = values.to_numpy(zero_copy_only=False).reshape(len(probe), *self.shape)
        return np.array_equal(self.read(np.asarray(probe)), expected, equal_nan=True)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fds": {}}  # descriptors do not survive pickling (spawned workers reopen)

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", {}).get(os.getpid(), []):
            os.close(fd)


def _values(array: pa.Array) -> pa.Array | None:
    """The flat values of a (nested) list column, or None where rows have nulls (then not contiguous)."""
    if isinstance(array, pa.ExtensionArray):
        array = array.storage
    while pa.types.is_list(array.type) or pa.types.is_large_list(array.type) or pa.types.is_fixed_size_list(array.type):
        if array.null_count:
            return None
        array = array.flatten()
    return None if array.null_count else array


def _record_batch_extents(path: str, column: str, row_values: int, dtype: np.dtype) -> list[tuple[int, int]] | None:
    """`(rows, byte offset of the first row's values)` per record batch of one Arrow stream file."""
    try:
        with pa.memory_map(path) as mapped:
            base = mapped.read_buffer(1).address  # where the file starts in this mapping
            mapped.seek(0)
            extents = []
            for record_batch in pa.ipc.open_stream(mapped):
                if column not in record_batch.schema.names:
                    return None
                values = _values(record_batch.column(column))
                if values is None or values.type != pa.from_numpy_dtype(dtype) or len(values) != record_batch.num_rows * row_values:
                    return None
                start = values.buffers()[1].address + values.offset * dtype.itemsize - base
                extents.append((record_batch.num_rows, start))
            return extents
    except (OSError, pa.ArrowInvalid):  # not an Arrow stream file we can read: Arrow reads it instead
        return None
