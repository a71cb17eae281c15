"""AudioSet: the 527-class ontology and `load_audioset`, from the Hub, official segment CSVs + audio, or files.

Every source comes back as `DatasetDict(train, eval)` with columns `video_id`, `audio` (undecoded
`{"bytes", "path"}`), `events` (`Sequence(ClassLabel)` of the 527 display names) and, where the source
knows it, `duration` (seconds).
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .audio import AUDIO_FEATURE
from ._columns import dataset_from_arrow, replace_column, with_plain_audio

logger = logging.getLogger(__name__)

ONTOLOGY_DIR = Path(__file__).parent / "ontology"
HUB_ID = "agkphysics/AudioSet"
SEGMENT_FILES = {
    "balanced": "balanced_train_segments.csv",
    "unbalanced": "unbalanced_train_segments.csv",
    "eval": "eval_segments.csv",
}
# Which segment lists (or Hub splits) make up the training split of each config.
CONFIG_TRAIN_PARTS = {"balanced": ("balanced",), "unbalanced": ("unbalanced",), "full": ("balanced", "unbalanced")}
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
NOMINAL_CLIP_SECONDS = 10.0


class AudioSetSourceError(ValueError):
    """An AudioSet source that is missing, malformed, or does not match the expected layout."""


class UnknownEventError(ValueError):
    """Event class names that are not in the label set."""


@dataclass(frozen=True)
class Ontology:
    """The AudioSet label set: `mids[i]` and `names[i]` are class `i` of `class_labels_indices.csv`."""

    mids: tuple[str, ...]
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)

    @property
    def mid_to_index(self) -> dict[str, int]:
        return {mid: i for i, mid in enumerate(self.mids)}

    @property
    def name_to_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def class_label(self) -> datasets.ClassLabel:
        return datasets.ClassLabel(names=list(self.names))


@lru_cache(maxsize=1)
def audioset_ontology() -> Ontology:
    """The 527 AudioSet classes, read from the package's copy of `class_labels_indices.csv`."""
    table = pd.read_csv(ONTOLOGY_DIR / "class_labels_indices.csv", dtype={"index": int, "mid": str, "display_name": str})
    table = table.sort_values("index")
    return Ontology(mids=tuple(table["mid"]), names=tuple(table["display_name"]))


def events_feature(names: Sequence[str] | None = None) -> datasets.Sequence:
    """The `events` column type: `Sequence(ClassLabel(names))`, AudioSet's 527 names by default."""
    names = list(audioset_ontology().names) if names is None else list(names)
    return datasets.Sequence(datasets.ClassLabel(names=names))


def resolve_event_names(requested: Iterable[str], names: Sequence[str], what: str = "event class") -> list[int]:
    """Indices of `requested` in `names`; one error listing every unknown name with its close matches."""
    index = {name: i for i, name in enumerate(names)}
    folded = {name.casefold(): i for i, name in enumerate(names)}
    found, unknown = [], []
    for name in requested:
        if name in index:
            found.append(index[name])
        elif name.casefold() in folded:
            found.append(folded[name.casefold()])
        else:
            unknown.append(name)
    if unknown:
        lines = []
        for name in unknown:
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else "no close match"
            lines.append(f"  {name!r}: {hint}")
        raise UnknownEventError(f"unknown {what} name(s) (of {len(names)} known):\n" + "\n".join(lines))
    return found


def read_segments_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read an official AudioSet segment list: `#` comment lines, then `YTID, start, end, "mid,mid"`.

    Returns a DataFrame with columns `video_id`, `start_seconds`, `end_seconds`, `labels` (list of MIDs).
    """
    path = Path(path)
    try:
        table = pd.read_csv(
            path,
            comment="#",
            header=None,
            names=["video_id", "start_seconds", "end_seconds", "labels"],
            skipinitialspace=True,
            quotechar='"',
            dtype={"video_id": str, "start_seconds": float, "end_seconds": float, "labels": str},
            keep_default_na=False,
        )
    except (ValueError, pd.errors.ParserError) as error:
        raise AudioSetSourceError(f"{path}: not an AudioSet segment list (YTID, start_seconds, end_seconds, \"mid,...\"): {error}") from error
    if table["labels"].eq("").any():
        bad = table.index[table["labels"].eq("")][:5].tolist()
        raise AudioSetSourceError(f"{path}: rows {bad} have no labels")
    table["labels"] = table["labels"].str.split(",")
    return table


def mids_to_indices(labels: Iterable[list[str]], source: str = "labels") -> list[list[int]]:
    """Map lists of MIDs to ontology indices; one error listing every unknown MID."""
    lookup = audioset_ontology().mid_to_index
    out, unknown = [], set()
    for mids in labels:
        row = []
        for mid in mids:
            mid = mid.strip()
            if mid in lookup:
                row.append(lookup[mid])
            else:
                unknown.add(mid)
        out.append(row)
    if unknown:
        raise AudioSetSourceError(f"{source}: {len(unknown)} MID(s) not in the AudioSet ontology: {sorted(unknown)[:10]}")
    return out


@dataclass
class AudioSetLoadInfo:
    """What `load_audioset` found: rows per split and, for segment-list folders, rows dropped for missing audio."""

    source: str
    config: str
    rows: dict[str, int] = field(default_factory=dict)
    missing_audio: dict[str, int] = field(default_factory=dict)
    missing_examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def total_missing(self) -> int:
        return sum(self.missing_audio.values())

    def to_dict(self) -> dict:
        return {"source": self.source, "config": self.config, "rows": dict(self.rows), "missing_audio": dict(self.missing_audio)}


def load_audioset(
    source: str | os.PathLike | Sequence[str] | dict = HUB_ID,
    *,
    config: str = "balanced",
    audio_dir: str | os.PathLike | None = None,
    return_info: bool = False,
    **load_kwargs,
) -> datasets.DatasetDict | tuple[datasets.DatasetDict, AudioSetLoadInfo]:
    """AudioSet as `DatasetDict(train, eval)` with columns `video_id`, `audio`, `events` (+ `duration`).

    Args:
        source: a Hub id in the layout of `agkphysics/AudioSet`; a folder with the official segment CSVs
            and an `audio/` subfolder; a folder saved with `save_to_disk`; a folder, file, glob, list
            or `{split: files}` dict of parquet/arrow files (splits `train` and `eval` or `test`).
        config: which training list: `balanced`, `unbalanced` or `full` (both). Evaluation is always
            the official evaluation list.
        audio_dir: audio folder for a segment-CSV source (default `<source>/audio`).
        return_info: also return an `AudioSetLoadInfo` (row counts, rows dropped for missing audio).
        **load_kwargs: passed to `datasets.load_dataset` (e.g. `cache_dir`, `token`).
    """
    if config not in CONFIG_TRAIN_PARTS:
        raise AudioSetSourceError(f"config={config!r}: expected one of {sorted(CONFIG_TRAIN_PARTS)}")
    name = _describe(source)
    info = AudioSetLoadInfo(source=name, config=config)
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        folder = Path(source)
        if (folder / "dataset_dict.json").exists():
            data = _standardize(datasets.load_from_disk(str(folder)), name)
        elif any((folder / f).exists() for f in SEGMENT_FILES.values()):
            data = _load_segment_folder(folder, config, Path(audio_dir) if audio_dir else folder / "audio", info)
        else:
            data = _standardize(_load_with_config(str(folder), config, load_kwargs), name)
    elif isinstance(source, dict) or not isinstance(source, (str, os.PathLike)) or _looks_like_files(str(source)):
        data = _standardize(_load_files(source, load_kwargs), name)
    else:
        data = _standardize(_load_with_config(str(source), config, load_kwargs), name)
    info.rows = {split: data[split].num_rows for split in data}
    return (data, info) if return_info else data


def _describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in source.items()) + "}"
    return ", ".join(map(str, source))


def _looks_like_files(source: str) -> bool:
    return source.endswith((".parquet", ".arrow")) or any(c in source for c in "*?[")


def _load_files(source, load_kwargs: dict) -> datasets.DatasetDict:
    files = source if isinstance(source, dict) else ([source] if isinstance(source, (str, os.PathLike)) else list(source))
    every = [str(f) for f in (sum(map(_as_list, files.values()), []) if isinstance(files, dict) else files)]
    kinds = {"arrow" if f.endswith(".arrow") else "parquet" for f in every}
    if len(kinds) != 1:
        raise AudioSetSourceError(f"{_describe(source)}: mix parquet and arrow files in separate calls")
    if not isinstance(files, dict):
        raise AudioSetSourceError(
            f"{_describe(source)}: give a {{'train': files, 'eval': files}} dict, or a folder whose file names "
            "say the split (train-*.parquet, test-*.parquet)"
        )
    return datasets.load_dataset(kinds.pop(), data_files={k: [str(f) for f in _as_list(v)] for k, v in files.items()}, **load_kwargs)


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _load_with_config(path: str, config: str, load_kwargs: dict) -> datasets.DatasetDict:
    """Load a Hub id or local folder in the `agkphysics/AudioSet` layout (configs balanced/unbalanced/full)."""
    try:
        if config == "full":
            full = datasets.load_dataset(path, "full", **load_kwargs)
            train = datasets.concatenate_datasets([full["bal_train"], full["unbal_train"]])
            return datasets.DatasetDict({"train": train, "eval": full["eval"]})
        return datasets.load_dataset(path, config, **load_kwargs)
    except ValueError as error:
        if "BuilderConfig" not in str(error):
            raise
    # A plain parquet folder or Hub repo with no AudioSet configs: its own default config.
    if config != "balanced":
        raise AudioSetSourceError(f"{path}: has no {config!r} config (layout of {HUB_ID} expected)")
    return datasets.load_dataset(path, **load_kwargs)


def _standardize(data: datasets.DatasetDict, name: str) -> datasets.DatasetDict:
    """Rename splits to train/eval, audio to the plain struct, MIDs/names to `events` ClassLabels."""
    if not isinstance(data, datasets.DatasetDict):
        raise AudioSetSourceError(f"{name}: expected splits train and eval (or test), got a single split")
    splits = {}
    for wanted, aliases in {"train": ("train",), "eval": ("eval", "test", "validation")}.items():
        found = next((s for s in aliases if s in data), None)
        if found is None:
            raise AudioSetSourceError(f"{name}: no {wanted!r} split (looked for {list(aliases)}; found {list(data)})")
        splits[wanted] = _standardize_split(data[found], f"{name}[{found}]")
    return datasets.DatasetDict(splits)


def _standardize_split(dataset: datasets.Dataset, name: str) -> datasets.Dataset:
    columns = dataset.column_names
    if "audio" not in columns:
        raise AudioSetSourceError(f"{name}: no 'audio' column (columns: {columns})")
    dataset = with_plain_audio(dataset)
    ontology = audioset_ontology()
    if "events" in columns:
        feature = dataset.features["events"]
        if not isinstance(getattr(feature, "feature", None), datasets.ClassLabel):
            raise AudioSetSourceError(f"{name}: 'events' is {feature}, expected Sequence(ClassLabel)")
        drop = [c for c in ("labels", "human_labels") if c in columns]
        return dataset.remove_columns(drop) if drop else dataset
    if "labels" in columns:
        lookup, what = ontology.mid_to_index, "labels (MIDs)"
        source_column = "labels"
    elif "human_labels" in columns:
        lookup, what = ontology.name_to_index, "human_labels (display names)"
        source_column = "human_labels"
    else:
        raise AudioSetSourceError(f"{name}: no label column: expected 'events', 'labels' (MIDs) or 'human_labels' (columns: {columns})")
    if "human_labels" in columns and source_column != "human_labels":
        dataset = dataset.remove_columns(["human_labels"])
    keys = np.array(list(lookup), dtype=object)
    values = np.array(list(lookup.values()), dtype=np.int64)
    return replace_column(
        dataset,
        source_column,
        "events",
        _strings_to_indices,
        events_feature(),
        desc=f"Mapping {what} to class indices",
        fn_kwargs={"keys": pa.array(keys, type=pa.string()), "values": pa.array(values), "source": f"{name} {what}"},
    )


def _strings_to_indices(column: pa.ChunkedArray, keys: pa.Array, values: pa.Array, source: str) -> pa.Array:
    """(rows,) list<string> -> (rows,) list<int64> through the key->value lookup, vectorised in Arrow."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    flat = pc.utf8_trim_whitespace(pc.list_flatten(column))
    position = pc.index_in(flat, value_set=keys)
    if position.null_count:
        unknown = pc.unique(pc.filter(flat, pc.is_null(position))).to_pylist()
        raise AudioSetSourceError(f"{source}: {len(unknown)} value(s) not in the AudioSet ontology: {unknown[:10]}")
    indices = pc.take(values, position)
    offsets = _list_offsets(column)
    return pa.ListArray.from_arrays(offsets, indices)


def _list_offsets(column: pa.ListArray) -> pa.Array:
    """Offsets of a (possibly sliced) list array rebased to start at 0; nulls count as empty lists."""
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
    return pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))


# -- official segment lists + audio folder ---------------------------------------------------------

_START = r"\d+(?:\.\d+)?"
_SUFFIX = re.compile(rf"_({_START})(?:_{_START})?")


def index_audio_files(audio_dir: Path) -> dict[str, list[tuple[float | None, str]]]:
    """Map YouTube id -> [(start seconds or None, path)] for `<id>.ext`, `Y<id>.ext`, `<id>_<start>[_<end>].ext`.

    YouTube ids are 11 characters and may themselves contain `_`, `-` and a leading `Y`, so the id is
    taken by length, not by splitting on `_`.
    """
    found: dict[str, list[tuple[float | None, str]]] = {}
    for root, _, files in os.walk(audio_dir):
        for file in files:
            stem, ext = os.path.splitext(file)
            if ext.lower() not in AUDIO_EXTENSIONS:
                continue
            path = os.path.join(root, file)
            for head in (11, 12):
                video_id, rest = stem[:head], stem[head:]
                if head == 12:
                    if not video_id.startswith("Y"):
                        continue
                    video_id = video_id[1:]
                if rest == "":
                    found.setdefault(video_id, []).append((None, path))
                elif match := _SUFFIX.fullmatch(rest):
                    found.setdefault(video_id, []).append((float(match.group(1)), path))
    return found


def _match(candidates: list[tuple[float | None, str]] | None, start: float) -> str | None:
    if not candidates:
        return None
    for value, path in candidates:  # a start in the name must agree (seconds, or milliseconds)
        if value is not None and (abs(value - start) < 1e-3 or abs(value / 1000 - start) < 1e-3):
            return path
    return next((path for value, path in candidates if value is None), None)


def _load_segment_folder(folder: Path, config: str, audio_dir: Path, info: AudioSetLoadInfo) -> datasets.DatasetDict:
    needed = [SEGMENT_FILES[part] for part in CONFIG_TRAIN_PARTS[config]] + [SEGMENT_FILES["eval"]]
    missing = [f for f in needed if not (folder / f).exists()]
    if not audio_dir.is_dir():
        missing.append(f"{audio_dir.name}/ (audio folder)")
    if missing:
        raise AudioSetSourceError(f"{folder}: config {config!r} needs {missing} (missing)")
    audio = index_audio_files(audio_dir)
    splits = {}
    for split, parts in (("train", CONFIG_TRAIN_PARTS[config]), ("eval", ("eval",))):
        table = pd.concat([read_segments_csv(folder / SEGMENT_FILES[p]) for p in parts], ignore_index=True)
        paths = [_match(audio.get(v), s) for v, s in zip(table["video_id"], table["start_seconds"])]
        present = np.array([p is not None for p in paths], dtype=bool)
        info.missing_audio[split] = int((~present).sum())
        info.missing_examples[split] = table.loc[~present, "video_id"].head(10).tolist()
        if info.missing_audio[split]:
            logger.warning(
                "%s: %d of %d %s segments have no audio file in %s; dropped (e.g. %s)",
                folder, info.missing_audio[split], len(table), split, audio_dir, info.missing_examples[split][:3],
            )
        table = table[present].reset_index(drop=True)
        kept = [p for p in paths if p is not None]
        events = mids_to_indices(table["labels"], source=f"{folder}/{', '.join(SEGMENT_FILES[p] for p in parts)}")
        arrow = pa.table(
            {
                "video_id": pa.array(table["video_id"], type=pa.string()),
                "audio": pa.StructArray.from_arrays(
                    [pa.nulls(len(kept), type=pa.binary()), pa.array([os.path.abspath(p) for p in kept], type=pa.string())],
                    names=["bytes", "path"],
                ),
                "events": pa.array(events, type=pa.list_(pa.int64())),
                "duration": pa.array((table["end_seconds"] - table["start_seconds"]).round(3).to_numpy(), type=pa.float64()),  # CSV has ms precision
            }
        )
        features = datasets.Features(
            {"video_id": datasets.Value("string"), "audio": AUDIO_FEATURE, "events": events_feature(), "duration": datasets.Value("float64")}
        )
        splits[split] = dataset_from_arrow(arrow, features, split=split)
    return datasets.DatasetDict(splits)
