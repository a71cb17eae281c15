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
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa

logger = logging.getLogger(__name__)


class FileRows:
    """Where each row of a fixed-shape column lies in the dataset's Arrow files, and batch reads of them.

    Build it with `FileRows.locate(dataset, column)`, which returns None where rows cannot be read
    from the files (an in-memory dataset, an index mapping, a column changed after loading, a dtype
    that is not a plain number, or a platform without `os.preadv` and `/proc/self/maps`); the caller
    then reads through Arrow.
    """

    def __init__(self, paths: list[str], counts: np.ndarray, file_index: np.ndarray, offsets: np.ndarray,
                 buffer_offsets: np.ndarray, shape: tuple[int, ...], dtype: np.dtype):
        self.paths, self.shape, self.dtype = paths, shape, np.dtype(dtype)
        # One entry per record batch: its rows, its file, the byte offset there of its first row's values
        # and of its values buffer, and its first row in the dataset.
        self.counts, self.file_index, self.offsets, self.buffer_offsets = counts, file_index, offsets, buffer_offsets
        self.first_rows = np.cumsum(counts) - counts
        self.num_rows = int(counts.sum())
        self.row_nbytes = math.prod(shape) * self.dtype.itemsize
        self._fds: dict[int, list[int]] = {}  # per process id: DataLoader workers open their own

    @classmethod
    def locate(cls, dataset: datasets.Dataset, column: str) -> FileRows | None:
        feature = dataset.features.get(column)
        if not hasattr(os, "preadv") or dataset._indices is not None or not hasattr(feature, "shape"):
            return None
        if any(size is None for size in feature.shape):  # variable-length rows: no fixed stride
            return None
        try:
            dtype = np.dtype(feature.dtype)
        except TypeError:
            return None
        paths = [entry["filename"] for entry in dataset.cache_files]
        if dtype.kind not in "fiu" or not paths or len(dataset) == 0 or not _MAPS.exists():  # bools are bit-packed
            return None
        per_file = [_record_batch_extents(path, column, math.prod(feature.shape), dtype) for path in paths]
        if any(extents is None for extents in per_file):
            return None
        extents = [(index, *extent) for index, file_extents in enumerate(per_file) for extent in file_extents]
        file_index, counts, offsets, buffer_offsets = (np.asarray(values, dtype=np.int64) for values in zip(*extents))
        rows = cls(paths, counts, file_index, offsets, buffer_offsets, tuple(feature.shape), dtype)
        if not rows._is_the_loaded_table(dataset, column):
            logger.info("%r of this dataset is not the %s column as written (changed after loading?): reading it "
                        "through Arrow", column, paths)
            return None
        return rows

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Rows `rows` (sorted ascending) as one `(len(rows), *shape)` array."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.shape), dtype=self.dtype)
        if len(rows) == 0:
            return out
        if rows[0] < 0 or rows[-1] >= self.num_rows:
            raise IndexError(f"rows {rows[0]}..{rows[-1]} asked of a cache of {self.num_rows} rows")
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

    def _is_the_loaded_table(self, dataset: datasets.Dataset, column: str) -> bool:
        """The loaded table's `column` is these files' record batches, in place: each of its chunks is
        unsliced and its values buffer sits in the file's memory mapping where the file has it. A column
        replaced in memory, renamed from another column, or sliced fails this, so it is read through
        Arrow. Only buffer addresses are compared: reading the table's offsets would map their pages."""
        chunks = [chunk for chunk in dataset.data.column(column).chunks if len(chunk)]
        batches = np.flatnonzero(self.counts)
        if len(chunks) != len(batches) or len(dataset) != self.num_rows:
            return False
        mappings = _file_mappings()
        for chunk, batch in zip(chunks, batches):
            storage = chunk.storage if isinstance(chunk, pa.ExtensionArray) else chunk
            if storage.offset != 0 or len(chunk) != self.counts[batch]:
                return False
            address = storage.buffers()[-1].address  # the leaf values
            path = os.path.realpath(self.paths[self.file_index[batch]])
            if not any(start <= address < end and address - start + file_offset == self.buffer_offsets[batch]
                       for start, end, file_offset in mappings.get(path, [])):
                return False
        return True

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fds": {}}  # descriptors do not survive pickling (spawned workers reopen)

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", {}).get(os.getpid(), []):
            os.close(fd)


_MAPS = Path("/proc/self/maps")


def _file_mappings() -> dict[str, list[tuple[int, int, int]]]:
    """This process's memory-mapped files: path → (start address, end address, file offset) per mapping."""
    mappings: dict[str, list[tuple[int, int, int]]] = {}
    for line in _MAPS.read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/"):
            start, end = (int(address, 16) for address in fields[0].split("-"))
            mappings.setdefault(fields[5], []).append((start, end, int(fields[2], 16)))
    return mappings


def _values(array: pa.Array) -> pa.Array | None:
    """The flat values of a (nested) list column, or None where rows have nulls (then not contiguous)."""
    if isinstance(array, pa.ExtensionArray):
        array = array.storage
    while pa.types.is_list(array.type) or pa.types.is_large_list(array.type) or pa.types.is_fixed_size_list(array.type):
        if array.null_count:
            return None
        array = array.flatten()
    return None if array.null_count else array


def _record_batch_extents(path: str, column: str, row_values: int, dtype: np.dtype) -> list[tuple[int, int, int]] | None:
    """`(rows, byte offset of the first row's values, byte offset of the values buffer)` per record
    batch of one Arrow stream file."""
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
                buffer_start = values.buffers()[1].address - base
                extents.append((record_batch.num_rows, buffer_start + values.offset * dtype.itemsize, buffer_start))
            return extents
    except (OSError, pa.ArrowInvalid):  # not an Arrow stream file we can read: Arrow reads it instead
        return None
