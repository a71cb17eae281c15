"""Scene (ASC) sources: TUT Urban Acoustic Scenes 2018 (development set folder or its Hub mirror); the scene
class checks every scene source shares (audiofolders: `audiofolder.py`).

Every loader returns a `DatasetDict` with columns `audio` (undecoded `{"bytes", "path"}`) and `scene`
(`ClassLabel`); the TUT loaders add `identifier`, `city`, `source_label` (device), `filename`, `duration`.
"""

from __future__ import annotations

import csv
import logging
import os
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import soundfile as sf

from .audio import AUDIO_FEATURE
from ._columns import dataset_from_arrow, replace_column, with_plain_audio

TUT2018_SCENES = (
    "airport", "bus", "metro", "metro_station", "park",
    "public_square", "shopping_mall", "street_pedestrian", "street_traffic", "tram",
)  # fmt: skip
TUT2018_HUB_ID = "wetdog/TUT-urban-acoustic-scenes-2018-development"
_MAX_LISTED = 20  # problems listed per kind in a layout error; the rest are counted

logger = logging.getLogger(__name__)


class TUT2018LayoutError(ValueError):
    """A TUT 2018 development-set folder with missing or inconsistent files; lists every problem found."""

    def __init__(self, path: Path, problems: list[str]):
        self.problems = problems
        super().__init__(f"{path}: not a valid TUT Urban Acoustic Scenes 2018 development set ({len(problems)} problem(s)):\n  " + "\n  ".join(problems))


def tut2018_features() -> datasets.Features:
    return datasets.Features(
        {
            "audio": AUDIO_FEATURE,
            "scene": datasets.ClassLabel(names=list(TUT2018_SCENES)),
            "identifier": datasets.Value("string"),
            "city": datasets.Value("string"),
            "source_label": datasets.Value("string"),
            "filename": datasets.Value("string"),
            "duration": datasets.Value("float64"),
        }
    )


def is_tut2018_folder(path: str | os.PathLike) -> bool:
    path = Path(path)
    return (path / "meta.csv").is_file() and (path / "evaluation_setup").is_dir()


def load_tut2018(path: str | os.PathLike, *, fold: int = 1, read_durations: bool = True) -> datasets.DatasetDict:
    """TUT Urban Acoustic Scenes 2018 (DCASE2018 Task 1A development set) from its official layout.

    Reads `meta.csv` and `evaluation_setup/fold<fold>_{train,evaluate}` (`.txt` without header, as in
    the 2018 release, or `.csv` with a header, as in later TAU releases). `train` is the fold's train
    list, `test` its evaluate list.

    Args:
        path: the folder holding `audio/`, `meta.csv` and `evaluation_setup/`.
        fold: the evaluation-setup fold (the 2018 release has only fold 1).
        read_durations: read every file's header for `duration` (also catches unreadable files).

    Raises:
        TUT2018LayoutError: once, listing every missing file, malformed line and inconsistency.
    """
    root = Path(path)
    problems: list[str] = []
    if not root.is_dir():
        raise TUT2018LayoutError(root, ["folder does not exist"])
    meta = _read_table(root / "meta.csv", ("filename", "scene_label", "identifier", "source_label"), problems)
    folds = {}
    for split, name in (("train", "train"), ("test", "evaluate")):
        file = _fold_file(root, fold, name)
        if file is None:
            problems.append(f"evaluation_setup/fold{fold}_{name}.txt (or .csv): missing")
        else:
            folds[split] = _read_table(file, ("filename", "scene_label"), problems)
    if not (root / "audio").is_dir():
        problems.append("audio/: missing")
    if problems:
        raise TUT2018LayoutError(root, problems)

    by_file = {row["filename"]: row for row in meta}
    audio_files = _list_files(root / "audio")
    checks: dict[str, list[str]] = defaultdict(list)
    for row in meta:
        if row["scene_label"] not in TUT2018_SCENES:
            checks["unknown scene in meta.csv"].append(f"{row['filename']}: {row['scene_label']!r}")
    seen: dict[str, str] = {}
    for split, rows in folds.items():
        for row in rows:
            name = row["filename"]
            if name in seen:
                checks["listed in both train and evaluate"].append(name)
            seen[name] = split
            if name not in by_file:
                checks[f"{split} fold entry not in meta.csv"].append(name)
            elif row.get("scene_label") and row["scene_label"] != by_file[name]["scene_label"]:
                checks["scene differs between fold file and meta.csv"].append(f"{name}: {row['scene_label']!r} vs {by_file[name]['scene_label']!r}")
            if name not in audio_files:
                checks["audio file missing"].append(name)
    durations = {}
    if read_durations:
        for name in seen:
            if name in audio_files:
                try:
                    info = sf.info(str(root / name))
                    durations[name] = info.frames / info.samplerate
                except Exception as error:  # soundfile raises several types for unreadable files
                    checks["audio file unreadable"].append(f"{name} ({error})")
    for kind, items in checks.items():
        shown = "; ".join(items[:_MAX_LISTED]) + (f"; ... {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")
        problems.append(f"{kind} ({len(items)}): {shown}")
    if problems:
        raise TUT2018LayoutError(root, problems)

    splits = {}
    for split, rows in folds.items():
        records = [by_file[row["filename"]] for row in rows]
        names = [r["filename"] for r in records]
        table = pa.table(
            {
                "audio": pa.StructArray.from_arrays(
                    [pa.nulls(len(names), pa.binary()), pa.array([str((root / n).resolve()) for n in names], pa.string())],
                    names=["bytes", "path"],
                ),
                "scene": pa.array([TUT2018_SCENES.index(r["scene_label"]) for r in records], pa.int64()),
                "identifier": pa.array([r["identifier"] for r in records], pa.string()),
                "city": pa.array([city_of(r["identifier"]) for r in records], pa.string()),
                "source_label": pa.array([r["source_label"] for r in records], pa.string()),
                "filename": pa.array(names, pa.string()),
                "duration": pa.array([durations.get(n) for n in names], pa.float64()),
            }
        )
        splits[split] = dataset_from_arrow(table, tut2018_features(), split=split)
    data = datasets.DatasetDict(splits)
    warn_missing_classes(data, str(root))
    return data


def city_of(identifier: str) -> str:
    """`barcelona-0` -> `barcelona` (TUT identifiers are `<city>-<location number>`)."""
    return identifier.rsplit("-", 1)[0] if "-" in identifier else identifier


def _fold_file(root: Path, fold: int, name: str) -> Path | None:
    for ext in (".txt", ".csv"):
        file = root / "evaluation_setup" / f"fold{fold}_{name}{ext}"
        if file.is_file():
            return file
    return None


def _list_files(folder: Path) -> set[str]:
    """Relative names (`audio/x.wav`) as the meta and fold files write them."""
    return {f"{folder.name}/{entry.name}" for entry in os.scandir(folder) if entry.is_file()}


def _read_table(file: Path, columns: Sequence[str], problems: list[str]) -> list[dict]:
    """Rows of a TAB-separated TUT list, with or without a header line; problems are appended, not raised."""
    if not file.is_file():
        problems.append(f"{file.parent.name + '/' if file.parent.name == 'evaluation_setup' else ''}{file.name}: missing")
        return []
    with open(file, newline="", encoding="utf-8-sig") as handle:  # -sig: a byte-order mark (Excel, Notepad) is not text
        lines = [line for line in csv.reader(handle, delimiter="\t") if line and any(cell.strip() for cell in line)]
    if not lines:
        problems.append(f"{file.name}: empty")
        return []
    if lines[0][0].strip() == "filename":  # later TAU releases: header row names the columns
        header, body, first = [c.strip() for c in lines[0]], lines[1:], 2
        absent = [c for c in columns if c not in header]
        if file.name == "meta.csv" and absent or "filename" not in header:
            problems.append(f"{file.name}: header {header} lacks {absent}")
            return []
    else:  # 2018 release fold files: `audio/x.wav<TAB>scene`, no header
        header, body, first = list(columns), lines, 1
        if file.name == "meta.csv":
            problems.append(f"meta.csv: first line {lines[0]} is not a header naming {list(columns)}")
            return []
    rows, bad = [], []
    for number, line in enumerate(body, start=first):
        if len(line) < (len(columns) if file.name == "meta.csv" else 1):
            bad.append(str(number))
            continue
        rows.append({key: value.strip() for key, value in zip(header, line)})
    if bad:
        problems.append(f"{file.name}: {len(bad)} malformed line(s) (line {', '.join(bad[:_MAX_LISTED])}; expected {len(columns)} TAB-separated fields)")
    return rows


# -- the Hub mirror (one `train` split, no folds) ------------------------------------------------


def group_split(groups: Sequence[str], strata: Sequence[str] | None = None, test_size: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split rows so that no group (recording location) is on both sides; ~`test_size` of rows go to test.

    Groups are shuffled with `seed` inside each stratum (the group's most common stratum, e.g. scene)
    and assigned to test until that stratum's test share reaches `test_size`, so every stratum is
    represented on both sides. Returns sorted (train_indices, test_indices).
    """
    if not 0 < test_size < 1:
        raise ValueError(f"test_size={test_size}: expected a fraction strictly between 0 and 1")
    groups = np.asarray(groups, dtype=object)
    strata = np.asarray(strata if strata is not None else [""] * len(groups), dtype=object)
    members: dict[str, list[int]] = defaultdict(list)
    for i, group in enumerate(groups):
        members[group].append(i)
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for group in sorted(members):
        by_stratum[Counter(strata[members[group]]).most_common(1)[0][0]].append(group)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(groups), dtype=bool)
    for stratum in sorted(by_stratum):
        candidates = by_stratum[stratum]
        if len(candidates) < 2:  # a stratum with one location cannot be on both sides; keep it for training
            continue
        total = sum(len(members[g]) for g in candidates)
        taken = 0
        for position in rng.permutation(len(candidates))[:-1]:  # always leave one group for training
            group = candidates[position]
            # skip a group that would move the share further from the target than it is now
            if taken > 0 and abs(taken + len(members[group]) - test_size * total) > abs(taken - test_size * total):
                continue
            test[members[group]] = True
            taken += len(members[group])
    return np.flatnonzero(~test), np.flatnonzero(test)


def load_tut2018_hub(
    hub_id: str = TUT2018_HUB_ID, *, test_size: float = 0.3, seed: int = 0, **load_kwargs
) -> datasets.DatasetDict:
    """The Hub mirror of TUT 2018 (one `train` split of 8640 rows, no folds) split by recording location.

    The split is grouped by `identifier` and stratified by scene, reproducible from `seed`, so no
    location is on both sides (as in the official folds, which it does not reproduce exactly).
    """
    loaded = datasets.load_dataset(hub_id, **load_kwargs)
    dataset = loaded["train"] if isinstance(loaded, datasets.DatasetDict) else loaded
    missing = [c for c in ("audio", "scene_label", "identifier") if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{hub_id}: expected columns audio, scene_label, identifier, source_label; missing {missing}")
    dataset = to_scene_dataset(with_plain_audio(dataset), "scene_label", names=TUT2018_SCENES, source=hub_id)
    identifiers = list(dataset["identifier"])
    dataset = dataset.add_column("city", [city_of(i) for i in identifiers])
    train, test = group_split(identifiers, list(dataset["scene"]), test_size=test_size, seed=seed)
    data = datasets.DatasetDict({"train": dataset.select(train), "test": dataset.select(test)})
    warn_missing_classes(data, hub_id)
    return data


class SceneNamesError(ValueError):
    """Scene names that would split one scene into several classes."""


def check_scene_names(names: Sequence, source: str) -> None:
    """Refuse scene names that differ only in case, surrounding spaces or Unicode form (`Park`, `park`, `park `):
    they would be separate classes, each holding part of one scene. Which spelling is meant is for the data's
    owner to say, so this is an error, not a silent merge."""
    spellings: dict[str, list[str]] = defaultdict(list)
    for name in map(str, names):
        spellings[unicodedata.normalize("NFKC", name).strip().casefold()].append(name)
    clashes = [group for group in spellings.values() if len(group) > 1]
    if clashes:
        shown = "; ".join(", ".join(map(repr, group)) for group in clashes)
        raise SceneNamesError(f"{source}: scene names that differ only in case, surrounding spaces or Unicode form would be "
                         f"separate classes: {shown}; give each scene one spelling")


def warn_missing_classes(data: datasets.DatasetDict, source: str) -> None:
    """Warn, naming them and the split, about scene classes a split has no clip of: without training clips a class
    cannot be learnt; without clips in an evaluation split it scores 0 there (macro accuracy averages over every
    class)."""
    names = data["train"].features["scene"].names
    present = {split: set(dataset.unique("scene")) for split, dataset in data.items()}
    for split, found in present.items():
        missing = [index for index in range(len(names)) if index not in found]
        if not missing:
            continue
        if split == "train":
            where = "; ".join(f"{names[i]!r} (clips in: {', '.join(s for s in present if i in present[s]) or 'no split'})"
                              for i in missing)
            logger.warning("%s: scene class(es) with no clip in the train split, which the model cannot learn: %s", source, where)
        else:
            logger.warning("%s: scene class(es) %s have no clip in the %s split: each scores 0 in its macro accuracy, "
                           "which averages over all %d classes", source, [names[i] for i in missing], split, len(names))


def to_scene_dataset(
    dataset: datasets.Dataset, label_column: str, names: Sequence[str] | None = None, source: str = "dataset"
) -> datasets.Dataset:
    """Rename `label_column` to `scene` and make it a `ClassLabel` (of `names`, or the sorted values found)."""
    if label_column not in dataset.column_names:
        raise ValueError(f"{source}: no column {label_column!r} to use as the scene label (columns: {dataset.column_names})")
    feature = dataset.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        if names is not None and list(feature.names) != list(names):
            raise ValueError(f"{source}: {label_column!r} has classes {feature.names}, expected {list(names)}")
        check_scene_names(feature.names, f"{source} column {label_column!r}")
        return dataset.rename_column(label_column, "scene") if label_column != "scene" else dataset
    values = sorted(set(dataset.unique(label_column)))
    names = list(names) if names is not None else [str(v) for v in values]
    check_scene_names(names, f"{source} column {label_column!r}")
    unknown = [v for v in values if str(v) not in names]
    if unknown:
        raise ValueError(f"{source}: {label_column!r} holds values {unknown} outside the scene classes {names}")
    keys = pa.array(names, pa.string())
    return replace_column(dataset, label_column, "scene", _names_to_ids, datasets.ClassLabel(names=names), fn_kwargs={"keys": keys})


def _names_to_ids(column: pa.ChunkedArray, keys: pa.Array) -> pa.Array:
    return pa.compute.index_in(pa.compute.cast(column, pa.string()), value_set=keys).cast(pa.int64())
