"""A clip's identity and its log-mel features: the key the store knows it by, and decoding batches of clips into
features in this process or in worker threads."""

from __future__ import annotations

import inspect
import json
import os
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import datasets
import numpy as np
import torch
import xxhash

from ..models.feature_extraction_sceneevent import LogMelFeatureExtractor
from .audio import AudioDecodeError, load_audio

_HASH_CHUNK = 16 << 20


# --- clip identity --------------------------------------------------------------------------------------


def clip_key(entry: dict) -> bytes:
    """What identifies a clip's audio: the hash of its bytes, or of a local file's real path, size and mtime."""
    if entry.get("bytes"):
        return xxhash.xxh3_128_hexdigest(entry["bytes"]).encode()
    path = entry.get("path") or ""
    try:
        stat = os.stat(path)
        identity = f"file\0{os.path.realpath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}"
    except OSError:  # missing: it fails to decode and is named; a file that appears later gets a new key
        identity = f"missing\0{path}"
    return xxhash.xxh3_128_hexdigest(identity.encode()).encode()


def file_checksum(path: Path) -> str:
    """xxh3-128 of the whole file (xxhash ships with `datasets`; it hashes far faster than a disk reads)."""
    digest = xxhash.xxh3_128()
    buffer = bytearray(_HASH_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            digest.update(view[:count])
    return digest.hexdigest()


# --- featurising ----------------------------------------------------------------------------------------


class Featurizer:
    """Decode clips and log-mel them as one batch; a clip that fails is a problem, never an exception."""

    def __init__(self, extractor: LogMelFeatureExtractor):
        self.extractor = extractor
        self.shape = (extractor.num_mel_bins, extractor.num_frames)

    def __call__(self, entries: list[dict]) -> tuple[np.ndarray, list[str]]:
        features = np.zeros((len(entries), *self.shape), dtype=np.float16)
        problems = [""] * len(entries)
        clips, rates, good = [], [], []
        for row, entry in enumerate(entries):
            try:
                decoded = load_audio(entry)
            except AudioDecodeError as error:
                problems[row] = str(error)
                continue
            clips.append(decoded.waveform)
            rates.append(decoded.sampling_rate)
            good.append(row)
        # Clips of one rate are featurised together; rates are rarely mixed within a data set.
        for rate in sorted(set(rates)):
            rows = [row for row, r in zip(good, rates) if r == rate]
            batch = [clip for clip, r in zip(clips, rates) if r == rate]
            values = self.extractor(batch, sampling_rate=rate, return_tensors="np")["input_features"]
            features[rows] = values.astype(np.float16)
        for row in good:  # finite samples can still overflow the power spectrum (or fp16): not a usable clip
            if not np.isfinite(features[row]).all():
                peak = float(np.abs(clips[good.index(row)]).max())
                problems[row] = (f"{entry_name(entries[row])}: gives non-finite log-mel features (peak sample "
                                 f"{peak:.3g}; audio is expected within about ±1)")
        return features, problems


def audio_entries(dataset: datasets.Dataset, with_bytes: bool = True, batch_rows: int = 256) -> Iterator[dict]:
    """The `audio` entries of `dataset`, a batch of rows in memory at a time (a set's embedded audio may not fit)."""
    for batch in dataset.select_columns(["audio"]).with_format("arrow").iter(batch_size=batch_rows):
        column = batch.column("audio").combine_chunks()
        paths = column.field("path").to_pylist()
        blobs = column.field("bytes").to_pylist() if with_bytes else [None] * len(paths)
        yield from ({"bytes": blob, "path": path} for blob, path in zip(blobs, paths))


def entry_name(entry: dict) -> str:
    return entry.get("path") or "<audio bytes>"


def _start_worker() -> None:
    torch.set_num_threads(1)  # the workers share the cores; each runs one clip batch at a time


@contextmanager
def featurizing(extractor: LogMelFeatureExtractor, num_workers: int) -> Iterator:
    """A function mapping clip batches to (features, problems) in order: in this process, or in `num_workers`
    threads of it, torch at one thread each. Threads, not processes: decoding (libsndfile), resampling and the
    STFT run outside the GIL, so 2 threads featurise 1.9x as fast as one at the same CPU time a clip; worker
    processes first import the package (4 s of CPU each, 11-60 s of wall on a loaded machine) and send every
    batch's features back through a pipe (1.2-1.4x; `benchmarks/bench_feature_cache.py`, docs/performance.md)."""
    # glibc maps each allocation above its mmap threshold afresh (a page fault per 4 KiB) until freeing such a
    # mapping raises the threshold; freeing one of 32 MiB raises it as far as it goes (the heap's trim threshold
    # to 64 MiB), so that the batches' temporaries (< 17 MB) are reused from the heap: 10-20 % less CPU a clip.
    np.empty((32 << 20) - (1 << 16), dtype=np.uint8)  # dropped at once; under other allocators, a no-op
    featurizer = Featurizer(extractor)
    if num_workers <= 1:
        yield lambda chunks: map(featurizer, chunks)
        return
    from concurrent.futures import ThreadPoolExecutor

    threads = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(num_workers, thread_name_prefix="log-mel", initializer=_start_worker) as pool:
            yield lambda chunks: _ordered_map(pool, featurizer, chunks, window=2 * num_workers)
    finally:
        torch.set_num_threads(threads)  # the workers' setting is the process's default for threads started later


def _ordered_map(pool, featurize, chunks: Iterable[list[dict]], window: int) -> Iterator[tuple[np.ndarray, list[str]]]:
    """`pool.map(featurize, chunks)` that submits at most `window` batches ahead (`Executor.map` submits every
    batch at once: all of a large set's audio in memory)."""
    pending = deque()
    for chunk in chunks:
        pending.append(pool.submit(featurize, chunk))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def extractor_settings(extractor: LogMelFeatureExtractor) -> dict:
    """The extractor's own settings (what its constructor takes), as JSON reads them back."""
    accepted = inspect.signature(LogMelFeatureExtractor.__init__).parameters
    return json.loads(json.dumps({k: v for k, v in extractor.to_dict().items() if k in accepted}))
