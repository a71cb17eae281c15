"""The log-mel store: every clip decoded once and its features stored once, whatever sets and splits use it.

One store per feature settings (`<root>/v1-<settings hash>/`), shared by every audio source. A clip is known
by its identity, not by the data set it came in: a local file by its real path, size and modification time,
embedded audio by a hash of its bytes. The store is a list of append-only segments, each `segment-<id>.npy`
(fp16 `(rows, num_mel_bins, frames)`, the form the loader reads), `segment-<id>.keys.npy` (the clips' keys)
and `segment-<id>.json` (format, settings, and every file's size and xxh3-128), written last: a segment
without its record does not exist. A split is a view into the store (`StoredSplit`: its labels plus each
row's segment and row), so a new event set whose clips are stored builds in seconds.

Builds take the store's lock (one builder at a time, across processes; readers never wait), remove what a
killed build left, and add the clips not yet stored as one new segment. A segment is checked against its
record before a split uses it; one that differs is named in a warning, removed, and its clips decoded again.
Clips that cannot be decoded, or give non-finite features, are not stored: each run decodes them again and
names them (they are few).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import xxhash
from datasets.fingerprint import Hasher
from tqdm.auto import tqdm

from ..io_utils import atomic_write_json, remove_staging_leftovers, staged_folder
from ..models.feature_extraction_sceneevent import LogMelFeatureExtractor
from .featurizing import audio_entries, clip_key, entry_name, extractor_settings, featurizing, file_checksum

logger = logging.getLogger(__name__)

STORE_FORMAT = 1
KEY_DTYPE = "S32"  # a clip's key: 32 hex digits of an xxh3-128
# Per stored clip: its key, and the xxh3-128 of its features (the same audio under two names has one content).
ENTRY_DTYPE = np.dtype([("key", KEY_DTYPE), ("content", KEY_DTYPE)])
LOCK_FILE = ".lock"
# Clips featurised together. 4, not the old cache's 32: a batch of 32 paper-shape clips makes temporaries of
# 40-130 MB, past glibc's 32 MiB mmap limit, so each was mapped, faulted in a page at a time and unmapped
# (40 % of the CPU time); at 4 the heap reuses them: 1.7x the clips/s (docs/performance.md). The features
# are the same to the last bit at the paper's and the demo's settings, whatever the batch (measured).
_CHUNK_CLIPS = 4


class BadAudioError(ValueError):
    """Clips could not be decoded or gave non-finite features; the message lists every one, split by split."""

    def __init__(self, problems: dict[str, list[str]]):
        self.problems = problems
        count = sum(len(found) for found in problems.values())
        listing = "\n".join(f"{split}:\n  " + "\n  ".join(found) for split, found in problems.items())
        super().__init__(
            f"{count} bad audio file(s) in {', '.join(problems)}:\n{listing}\n"
            "Fix or remove them, or pass --skip_bad_audio to drop them (they are counted in results.json)."
        )


def default_store_root() -> Path:
    return Path(datasets.config.HF_DATASETS_CACHE) / "sceneevent_features"


# --- the store ------------------------------------------------------------------------------------------


@dataclass
class Segment:
    name: str
    folder: Path
    record: dict

    @property
    def features_path(self) -> Path:
        return self.folder / f"{self.name}.npy"

    @property
    def keys_path(self) -> Path:
        return self.folder / f"{self.name}.keys.npy"

    @property
    def record_path(self) -> Path:
        return self.folder / f"{self.name}.json"

    def problem(self) -> str | None:
        """What differs from the segment's record (size first: a truncation costs no read), or None."""
        for entry in self.record["files"]:
            path = self.folder / entry["name"]
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                return f"{path} is missing"
            if size != entry["size"]:
                return f"{path} has {size} bytes, {entry['size']} when it was built (truncated or rewritten)"
            if file_checksum(path) != entry["xxh3_128"]:
                return f"{path} differs from the content it was built with (xxh3-128 mismatch: overwritten or corrupted)"
        return None

    def remove(self) -> None:
        self.record_path.unlink(missing_ok=True)  # first: a half-removed segment never looks complete
        self.features_path.unlink(missing_ok=True)
        self.keys_path.unlink(missing_ok=True)


class FeatureStore:
    """The store of one feature setting under `root` (see the module's docstring)."""

    def __init__(self, root: str | os.PathLike, extractor: LogMelFeatureExtractor):
        self.extractor = extractor
        self.settings = extractor_settings(extractor)
        self.shape = (extractor.num_mel_bins, extractor.num_frames)
        self.folder = Path(root) / f"v{STORE_FORMAT}-{Hasher.hash(self.settings)}"
        self._checked: dict[str, tuple] = {}  # segments checked by this process: name → (size, mtime) of its files

    @contextmanager
    def locked(self) -> Iterator[None]:
        """The store's build lock: one builder at a time across processes (the kernel drops it on any exit)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / LOCK_FILE, "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.warning("log-mel store %s: waiting for another process's build to finish", self.folder)
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def segments(self) -> list[Segment]:
        """The complete segments of this format and settings, oldest first; a record of another version is
        refused with a warning (never read as this one)."""
        found = []
        for record_path in sorted(self.folder.glob("segment-*.json"), key=lambda p: p.stat().st_mtime_ns):
            try:
                record = json.loads(record_path.read_text())
            except (OSError, ValueError) as error:
                logger.warning("log-mel store: %s is unreadable (%s); its clips are decoded again", record_path, error)
                continue
            if record.get("format") != STORE_FORMAT or record.get("settings") != self.settings:
                logger.warning("log-mel store: %s was written by another version or settings; not used", record_path)
                continue
            found.append(Segment(record_path.stem, self.folder, record))
        return found

    def store_split(self, dataset: datasets.Dataset, *, split_name: str, num_workers: int = 0,
                    skip_bad_audio: bool = False) -> tuple[StoredSplit, list[str]]:
        """`dataset` (with an `audio` column) as a view into the store, storing the clips it lacks.

        Returns the split without `audio` and its bad clips' problems; with `skip_bad_audio` those rows are
        dropped, else BadAudioError is raised (for one split; `store_splits` names every split's at once).
        """
        stored, problems = self.store_splits({split_name: dataset}, num_workers=num_workers, skip_bad_audio=skip_bad_audio)
        return stored[split_name], problems[split_name]

    def store_splits(self, splits: dict[str, datasets.Dataset], *, num_workers: int = 0,
                     skip_bad_audio: bool = False) -> tuple[dict[str, StoredSplit], dict[str, list[str]]]:
        for name, dataset in splits.items():
            if "audio" not in dataset.column_names:
                raise ValueError(f"{name} has no `audio` column (columns: {dataset.column_names})")
            if len(dataset) == 0:
                raise ValueError(f"{name} is empty: there is nothing to train or evaluate on")
        keys = {name: np.array([clip_key(entry) for entry in audio_entries(dataset)], dtype=KEY_DTYPE)
                for name, dataset in splits.items()}
        with self.locked():
            self._remove_abandoned_builds()
            index = self._checked_index(np.concatenate(list(keys.values())))
            problems = self._add_missing(splits, keys, index, num_workers)
            index = self._checked_index(np.concatenate(list(keys.values())))
        bad = {name: [problems[key] for key in dict.fromkeys(keys[name].tolist()) if key in problems] for name in splits}
        if any(bad.values()) and not skip_bad_audio:
            raise BadAudioError({name: found for name, found in bad.items() if found})
        stored = {}
        for name, dataset in splits.items():
            locations = index.locate(keys[name])
            kept = np.flatnonzero(locations[:, 0] >= 0)
            if len(kept) == 0:
                raise ValueError(f"{name}: no clip is left after dropping bad audio")
            if bad[name]:
                logger.warning("dropping %d bad audio file(s) from %s", len(bad[name]), name)
                dataset = dataset.select(kept, keep_in_memory=True)  # in memory: no indices file to check
            sources = [entry_name(entry) for entry in audio_entries(dataset, with_bytes=False)]
            stored[name] = StoredSplit(dataset.remove_columns("audio"), index.paths, locations[kept],
                                       contents=index.content(keys[name][kept]), sources=sources)
        return stored, bad

    def _checked_index(self, wanted: np.ndarray) -> StoreIndex:
        """The index of the complete segments, after checking those holding `wanted` clips against their
        records (once per process); a damaged one is named, removed, and its clips count as missing."""
        while True:
            index = StoreIndex.of(self.segments())
            damaged = None
            for segment in index.segments_holding(wanted):
                stamp = tuple((p.stat().st_size, p.stat().st_mtime_ns) for p in (segment.features_path, segment.keys_path)
                              if p.exists())
                if self._checked.get(segment.name) == stamp:
                    continue
                damaged = segment.problem()
                if damaged:
                    logger.warning("log-mel store file %s; its clips are decoded again", damaged)
                    segment.remove()
                    break
                self._checked[segment.name] = stamp
            if not damaged:
                return index

    def _add_missing(self, splits: dict[str, datasets.Dataset], keys: dict[str, np.ndarray], index: StoreIndex,
                     num_workers: int) -> dict[bytes, str]:
        """Decode every clip not yet stored (once, however many splits hold it) into one new segment."""
        missing: dict[bytes, tuple[str, int]] = {}  # key → the first row holding it
        found = 0
        for name, split_keys in keys.items():
            absent = np.flatnonzero(index.locate(split_keys)[:, 0] < 0)
            found += len(split_keys) - len(absent)
            for row in absent.tolist():
                missing.setdefault(split_keys[row], (name, row))
        _say(f"log-mel store {self.folder}: {', '.join(splits)}: {found} clips found stored, {len(missing)} to decode")
        if not missing:
            return {}
        order = list(missing.items())
        # Chunks never span two splits, in dataset order, so that a split's batches do not depend on the others
        # (a batched STFT can round the last bit differently; README command 1 reads the same at 4 or 32 a chunk).
        bounds = []
        for name in splits:
            rows = [i for i, (_, (n, _)) in enumerate(order) if n == name]
            bounds += [rows[start : start + _CHUNK_CLIPS] for start in range(0, len(rows), _CHUNK_CLIPS)]
        chunks = ([splits[order[i][1][0]][order[i][1][1]]["audio"] for i in chunk] for chunk in bounds)
        name = f"segment-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}"
        problems, stored = {}, []
        with staged_folder(self.folder, merge=True) as staging:
            features_path, keys_path = staging / f"{name}.npy", staging / f"{name}.keys.npy"
            with open(features_path, "wb") as out, featurizing(self.extractor, num_workers) as featurize, \
                    tqdm(total=len(order), desc="log-mel store", unit="clip") as progress:
                out.write(_npy_header(self.shape, rows=0))  # rewritten with the row count at the end
                for chunk, (features, chunk_problems) in zip(bounds, featurize(chunks)):
                    for offset, problem in enumerate(chunk_problems):
                        key = order[chunk[offset]][0]
                        if problem:
                            problems[key] = problem
                        else:
                            row = features[offset].tobytes()
                            out.write(row)
                            stored.append((key, xxhash.xxh3_128_hexdigest(row).encode()))
                    progress.update(len(chunk_problems))
                out.seek(0)
                out.write(_npy_header(self.shape, rows=len(stored)))
            np.save(keys_path, np.array(stored, dtype=ENTRY_DTYPE))
            files = [{"name": path.name, "size": path.stat().st_size, "xxh3_128": file_checksum(path)}
                     for path in (features_path, keys_path)]
        # The staged files are in the store now; the record, written last, makes them a segment.
        atomic_write_json(self.folder / f"{name}.json",
                          {"format": STORE_FORMAT, "settings": self.settings, "clips": len(stored), "files": files})
        _say(f"log-mel store: decoded {len(order)} clips ({len(stored)} stored, {len(problems)} bad)")
        return problems

    def _remove_abandoned_builds(self) -> None:
        """What a killed build left: called with the lock held, so no build is in progress."""
        remove_staging_leftovers(self.folder)
        for path in self.folder.glob("segment-*.npy"):  # moved in by a build killed before it wrote the record
            if not (self.folder / f"{path.name.split('.')[0]}.json").exists():
                path.unlink(missing_ok=True)


_NPY_HEADER_BYTES = 128


def _npy_header(shape: tuple[int, int], rows: int) -> bytes:
    """A `.npy` (version 1.0) header of fixed length, so that it can be rewritten once the row count is known."""
    text = repr({"descr": "<f2", "fortran_order": False, "shape": (rows, *shape)})
    prefix = np.lib.format.magic(1, 0) + b"\0\0"
    padded = text.ljust(_NPY_HEADER_BYTES - len(prefix) - 1) + "\n"
    header = prefix[:-2] + len(padded).to_bytes(2, "little") + padded.encode("latin1")
    if len(header) != _NPY_HEADER_BYTES:
        raise ValueError(f"a features header for shape {shape} does not fit {_NPY_HEADER_BYTES} bytes")
    return header


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class StoreIndex:
    """Where each stored clip is: its segment (an index into `paths`) and its row there."""

    segments: list[Segment]
    keys: np.ndarray  # sorted
    contents: np.ndarray  # the features' hash of each key
    where: np.ndarray  # (clips, 2): segment, row; in `keys`' order

    @classmethod
    def of(cls, segments: list[Segment]) -> StoreIndex:
        entries, where = [np.zeros(0, dtype=ENTRY_DTYPE)], [np.zeros((0, 2), dtype=np.int64)]
        for number, segment in enumerate(segments):
            try:
                segment_entries = np.load(segment.keys_path).astype(ENTRY_DTYPE)
            except (OSError, ValueError, TypeError):  # damaged: its checksum names it when a split needs it
                segment_entries = np.zeros(0, dtype=ENTRY_DTYPE)
            entries.append(segment_entries)
            where.append(np.stack([np.full(len(segment_entries), number), np.arange(len(segment_entries))], axis=1))
        entries, where = np.concatenate(entries), np.concatenate(where).astype(np.int64)
        order = np.argsort(entries["key"], kind="stable")  # a clip stored twice: the oldest segment's copy
        return cls(segments, entries["key"][order], entries["content"][order], where[order])

    @property
    def paths(self) -> list[Path]:
        return [segment.features_path for segment in self.segments]

    def locate(self, keys: np.ndarray) -> np.ndarray:
        """(len(keys), 2): segment and row of each key; -1, -1 for a clip not stored."""
        position, found = self._find(keys)
        result = np.full((len(keys), 2), -1, dtype=np.int64)
        result[found] = self.where[position[found]]
        return result

    def content(self, keys: np.ndarray) -> np.ndarray:
        """The features hash of each key ('' for a clip not stored)."""
        position, found = self._find(keys)
        result = np.zeros(len(keys), dtype=KEY_DTYPE)
        result[found] = self.contents[position[found]]
        return result

    def _find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        position = np.searchsorted(self.keys, keys)
        found = position < len(self.keys)
        found[found] = self.keys[position[found]] == keys[found]
        return position, found

    def segments_holding(self, keys: np.ndarray) -> list[Segment]:
        used = np.unique(self.locate(keys)[:, 0])
        return [self.segments[number] for number in used.tolist() if number >= 0]


@dataclass
class StoredSplit:
    """A split as the loader reads it: its columns (labels, ids; no audio) and, per row, where its features
    are in the store (`segment_paths[locations[i, 0]]`, row `locations[i, 1]`)."""

    dataset: datasets.Dataset
    segment_paths: list[Path]
    locations: np.ndarray
    contents: np.ndarray  # each row's features hash: equal for the same audio under two names
    sources: list[str]  # each row's file (or "<audio bytes>"), for messages

    def __len__(self) -> int:
        return len(self.dataset)


def warn_shared_clips(splits: dict[str, StoredSplit]) -> list[str]:
    """Warn (and return the warnings) when an evaluation split holds clips of a training split: the same audio,
    under any name, gives the same features. Its readings would then measure memory, not generalisation."""
    warnings = []
    for train_name in [name for name in splits if name.endswith("_train")]:
        train = splits[train_name]
        seen = dict(zip(train.contents.tolist(), train.sources))
        for name in [n for n in splits if n.startswith(train_name[: -len("train")]) and n != train_name]:
            shared = [(source, seen[content]) for content, source in zip(splits[name].contents.tolist(), splits[name].sources)
                      if content in seen]
            if shared:
                examples = "; ".join(f"{a} = {b}" for a, b in shared[:3])
                warnings.append(f"{name} holds {len(shared)} of {len(splits[name])} clips whose audio is in {train_name} "
                                f"(e.g. {examples}): its metrics would not measure unseen audio")
    for warning in warnings:
        logger.warning(warning)  # on stderr even where logging is not set up (Python's last-resort handler)
    return warnings
