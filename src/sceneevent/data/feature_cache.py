"""The log-mel cache: audio is decoded once, with `datasets.map`, into fixed-size fp16 arrays on disk.

The cache of a split is `cache-<key>.arrow` (or its `_0000i_of_0000n` shards) beside the source's Arrow
files, the key hashing the source's fingerprint and the extractor's settings, so a second run reuses it.
Beside them, `cache-<key>.npy` holds the same features as one plain `(rows, num_mel_bins, frames)` array:
the training loop reads its batches from there (`loader.BatchReader`). A cache is trusted only when it is
what was built: each build records every file's size and xxh3-128 hash in `cache-<key>.checksums.json`,
and a reuse checks both first; a file that differs (truncated, zero-filled, rewritten) is named in a
warning and the cache is rebuilt. A build writes into a private staging folder that is removed when it
ends, however it ends; one left by a killed build is removed by the next build.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import datasets
from datasets.fingerprint import Hasher
import numpy as np
import pyarrow as pa
import xxhash

from .audio import AudioDecodeError, load_audio
from ..models.feature_extraction_sceneevent import LogMelFeatureExtractor
from ..io_utils import atomic_write_json

logger = logging.getLogger(__name__)

BAD_AUDIO_COLUMN = "bad_audio"
CACHE_FORMAT = 3  # 2: checksummed, built in a staging folder; 3: with the features array (part of the cache key)
CHECKSUMS_SUFFIX = ".checksums.json"
FEATURES_SUFFIX = ".npy"
STAGING_PREFIX = ".sceneevent-build-"
STAGING_LOCK = ".lock"
ORPHAN_STAGING_SECONDS = 3600  # a staging folder without a lock is an old build's only after this long
_HASH_CHUNK = 16 << 20


class BadAudioError(ValueError):
    """One or more clips could not be decoded; the message lists every one of them."""

    def __init__(self, split_name: str, problems: list[str]):
        self.problems = problems
        listing = "\n  ".join(problems)
        super().__init__(
            f"{len(problems)} bad audio file(s) in {split_name}:\n  {listing}\n"
            "Fix or remove them, or pass --skip_bad_audio to drop them (they are counted in results.json)."
        )


class _Featurizer:
    """Batched map function: decode every clip, log-mel the batch, record failures instead of raising."""

    def __init__(self, extractor: LogMelFeatureExtractor):
        self.extractor = extractor
        self.shape = (extractor.num_mel_bins, extractor.num_frames)

    def __call__(self, audio_entries: list[dict]) -> dict:
        features = np.zeros((len(audio_entries), *self.shape), dtype=np.float16)
        problems = [""] * len(audio_entries)
        clips, rates, good = [], [], []
        for row, entry in enumerate(audio_entries):
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
        return {"input_features": features, BAD_AUDIO_COLUMN: problems}


def build_feature_cache(
    dataset: datasets.Dataset,
    extractor: LogMelFeatureExtractor,
    *,
    split_name: str = "dataset",
    num_proc: int | None = None,
    batch_size: int = 32,
    skip_bad_audio: bool = False,
) -> tuple[datasets.Dataset, list[str]]:
    """Add `input_features` (fp16 `(num_mel_bins, frames)`) to `dataset` and drop `audio`.

    Reuses the split's cache when its checksums match, else (re)builds it. Returns the cached data set
    and the list of bad files that were dropped (empty unless `skip_bad_audio`).

    Raises:
        BadAudioError: some clips could not be decoded and `skip_bad_audio` is False.
        ValueError: `dataset` is empty or has no `audio` column.
    """
    if "audio" not in dataset.column_names:
        raise ValueError(f"{split_name} has no `audio` column (columns: {dataset.column_names})")
    if len(dataset) == 0:
        raise ValueError(f"{split_name} is empty: there is nothing to train or evaluate on")
    featurizer = _Featurizer(extractor)
    features = dataset.features.copy()
    del features["audio"]
    features["input_features"] = datasets.Array2D(shape=featurizer.shape, dtype="float16")
    features[BAD_AUDIO_COLUMN] = datasets.Value("string")
    key = Hasher.hash((dataset._fingerprint, extractor.to_dict(), split_name, CACHE_FORMAT))
    cache_file = cache_folder(dataset) / f"cache-{key}.arrow"
    remove_abandoned_builds(cache_file.parent)
    cached = load_verified_cache(cache_file, dataset, features)
    if cached is None:
        num_proc = num_proc if num_proc and num_proc > 1 and len(dataset) >= 4 * batch_size else None
        cached = _build(dataset, featurizer, features, cache_file, key, num_proc=num_proc, batch_size=batch_size,
                        desc=f"log-mel cache ({split_name})")
    problems = [p for p in cached[BAD_AUDIO_COLUMN] if p]
    if problems and not skip_bad_audio:
        raise BadAudioError(split_name, problems)
    if problems:
        logger.warning("dropping %d bad audio file(s) from %s", len(problems), split_name)
        # In memory: an indices file beside the cache would be one more unchecked file.
        cached = cached.filter(lambda p: [not x for x in p], batched=True, input_columns=[BAD_AUDIO_COLUMN],
                               keep_in_memory=True)
    if len(cached) == 0:
        raise ValueError(f"{split_name}: no clip is left after dropping bad audio")
    # Fingerprinted with the key, so that `features_path` finds its array file; any later change to the
    # data set (select, map, cast, a column replaced) gives a new fingerprint, and no array file.
    return cached.remove_columns(BAD_AUDIO_COLUMN, new_fingerprint=key), problems


def cache_folder(dataset: datasets.Dataset) -> Path:
    """Beside the source's Arrow files; an in-memory source (e.g. relabelled Hub tables) gets a folder of
    ours in the datasets cache, so that its features are on disk, not in RAM."""
    if dataset.cache_files:
        return Path(dataset.cache_files[0]["filename"]).parent
    folder = Path(datasets.config.HF_DATASETS_CACHE) / "sceneevent_features"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def features_path(dataset: datasets.Dataset) -> Path | None:
    """Where the array file of `dataset`'s `input_features` is when it has one: `cache-<fingerprint>.npy` beside
    its Arrow files. The file holds the rows of the Arrow table in order; a select/filter view maps onto them."""
    if not dataset.cache_files:
        return None
    return Path(dataset.cache_files[0]["filename"]).parent / f"cache-{dataset._fingerprint}{FEATURES_SUFFIX}"


def write_features(dataset: datasets.Dataset, path: Path, chunk_rows: int = 1024) -> None:
    """Write the `input_features` of every row of `dataset`'s Arrow table to `path` as one `.npy` array."""
    table, feature = dataset.data, dataset.features["input_features"]
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(feature.dtype)), "fortran_order": False,
              "shape": (len(table), *feature.shape)}
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(file, header)
        for start in range(0, len(table), chunk_rows):  # chunks: a cache can be larger than memory
            file.write(table_features(table.slice(start, chunk_rows), feature.shape).tobytes())


def table_features(table: datasets.table.Table | pa.Table, shape: tuple[int, ...]) -> np.ndarray:
    """The `input_features` of an Arrow table as one `(rows, *shape)` array in the column's dtype (read-only)."""
    column = table.column("input_features").combine_chunks()
    return column.storage.flatten().flatten().to_numpy(zero_copy_only=False).reshape(len(table), *shape)


def checksums_path(cache_file: Path) -> Path:
    return cache_file.with_name(cache_file.stem + CHECKSUMS_SUFFIX)


def load_verified_cache(cache_file: Path, dataset: datasets.Dataset, features: datasets.Features) -> datasets.Dataset | None:
    """The cache of `cache_file` when every file matches its recorded size and hash; else None, with the
    cache's files removed (and a warning naming the file that differs) so that it is rebuilt."""
    record_path = checksums_path(cache_file)
    if not record_path.exists():
        if _built_files(cache_file):
            logger.info("log-mel cache %s has no checksum record (%s): rebuilding it", cache_file, record_path.name)
            _remove_cache(cache_file)
        return None
    try:
        files = json.loads(record_path.read_text())["files"]
        problem = first_problem(cache_file.parent, files)
    except (OSError, ValueError, KeyError, TypeError) as error:
        problem = f"{record_path}: unreadable checksum record ({error})"
    if problem:
        logger.warning("log-mel cache file %s; rebuilding the cache", problem)
        _remove_cache(cache_file)
        return None
    return _load(cache_file.parent, [entry["name"] for entry in files], dataset, features)


def first_problem(folder: Path, files: list[dict]) -> str | None:
    for entry in files:
        problem = file_problem(folder / entry["name"], entry)
        if problem:
            return problem
    return None


def file_problem(path: Path, expected: dict) -> str | None:
    """What is wrong with `path` against its record (size first: a truncation costs no read), or None."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return f"{path} is missing"
    if size != expected["size"]:
        return f"{path} has {size} bytes, {expected['size']} when it was built (truncated or rewritten)"
    if file_checksum(path) != expected["xxh3_128"]:
        return f"{path} differs from the content it was built with (xxh3-128 mismatch: overwritten or corrupted)"
    return None


def file_checksum(path: Path) -> str:
    """xxh3-128 of the whole file (xxhash ships with `datasets`; it hashes far faster than a disk reads)."""
    digest = xxhash.xxh3_128()
    buffer = bytearray(_HASH_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            digest.update(view[:count])
    return digest.hexdigest()


def _built_files(cache_file: Path) -> list[Path]:
    """The cache file, or its shards `<stem>_0000i_of_0000n.arrow` as `datasets.map` names them, and its features array."""
    shard = re.compile(re.escape(cache_file.stem) + r"_\d{5}_of_\d{5}" + re.escape(cache_file.suffix))
    arrow_files = [path for path in cache_file.parent.glob(cache_file.stem + "*" + cache_file.suffix)
                   if path == cache_file or shard.fullmatch(path.name)]
    array = cache_file.with_suffix(FEATURES_SUFFIX)
    return ([array] if array.exists() else []) + arrow_files


def _remove_cache(cache_file: Path) -> None:
    checksums_path(cache_file).unlink(missing_ok=True)  # first: a half-removed cache never looks complete
    for path in _built_files(cache_file):
        path.unlink(missing_ok=True)


def _load(folder: Path, names: list[str], dataset: datasets.Dataset, features: datasets.Features) -> datasets.Dataset:
    info = dataset.info.copy()
    info.features = features
    shards = [datasets.Dataset.from_file(str(folder / name), info=info, split=dataset.split)
              for name in names if not name.endswith(FEATURES_SUFFIX)]
    return shards[0] if len(shards) == 1 else datasets.concatenate_datasets(shards)


def _build(dataset: datasets.Dataset, featurizer: _Featurizer, features: datasets.Features, cache_file: Path, key: str,
           **map_options) -> datasets.Dataset:
    """Map into a staging folder, hash the files there, move them into place, and write their checksum
    record last: a cache is only ever complete or absent."""
    with staging_folder(cache_file.parent) as staging:
        built = dataset.map(
            featurizer, cache_file_name=str(staging / cache_file.name), new_fingerprint=key, batched=True,
            input_columns=["audio"], remove_columns=["audio"], features=features, **map_options,
        )
        array = features_path(built)  # its fingerprint is the key: cache-<key>.npy
        write_features(built, array)
        names = [Path(entry["filename"]).name for entry in built.cache_files] + [array.name]
        del built  # its memory maps point into the staging folder
        files = [{"name": name, "size": (staging / name).stat().st_size, "xxh3_128": file_checksum(staging / name)}
                 for name in names]
        for name in names:
            os.replace(staging / name, cache_file.parent / name)
        atomic_write_json(checksums_path(cache_file), {"format": CACHE_FORMAT, "algorithm": "xxh3_128", "files": files})
    return _load(cache_file.parent, names, dataset, features)


@contextmanager
def staging_folder(parent: Path) -> Iterator[Path]:
    """A private folder for one build, locked while the build runs and removed when it ends. A build that
    was killed leaves its folder unlocked, and the next build removes it (`remove_abandoned_builds`)."""
    path = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=parent))
    pending = path / (STAGING_LOCK + ".pending")
    lock = open(pending, "w")
    try:
        # Locked before it gets its name, so a lock file under that name is always held by a live build.
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.replace(pending, path / STAGING_LOCK)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        lock.close()


def remove_abandoned_builds(folder: Path) -> None:
    """Remove staging folders whose build is gone: its lock is free, or it never got one and is old."""
    for path in folder.glob(STAGING_PREFIX + "*"):
        lock_path = path / STAGING_LOCK
        try:
            with open(lock_path, "r") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(path, ignore_errors=True)
        except BlockingIOError:  # a build in progress
            continue
        except FileNotFoundError:
            try:
                if time.time() - path.stat().st_mtime > ORPHAN_STAGING_SECONDS:
                    shutil.rmtree(path, ignore_errors=True)
            except FileNotFoundError:
                pass
