"""Scenes from a folder of audio files in the `datasets` audiofolder convention, read without `datasets.Audio`
(its builder needs torchcodec to write the column; here the audio stays undecoded paths).

Two layouts:
- `<split>/<scene>/<file>` (splits `train`, and `test`, or `validation`/`eval` standing for it): the scene is
  the folder name.
- a `metadata.csv` beside the audio (in the root, or one per split folder): a `file_name` column (relative to
  the CSV's folder) and columns of its own, e.g. `scene` (else the file's folder names it) and `identifier`, the
  recording (or location) a clip comes from. Every split is then kept by recording: a folder without split
  folders has its `test` split drawn by `identifier` (stratified by scene, as the TUT 2018 Hub mirror's), and
  the validation split is carved from `train` the same way (`splits.carve_validation`), so no recording is on
  two sides. A split that could only be made by putting one recording on both sides is an error naming it.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import defaultdict
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa

from ._columns import dataset_from_arrow
from .audio import AUDIO_FEATURE
from .scenes import check_scene_names, group_split, warn_missing_classes

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
METADATA_FILE = "metadata.csv"
TEST_NAMES = ("test", "validation", "eval")  # a split folder standing for the test split (the first found)
TEST_SIZE = 0.3  # share of the clips a pooled folder's test split draws, by recording

logger = logging.getLogger(__name__)


class RecordingSplitError(ValueError):
    """The splits asked for cannot keep every recording on one side."""


def load_scene_audiofolder(path: str | os.PathLike, *, label_column: str = "scene", seed: int = 0) -> datasets.DatasetDict:
    """`train` and `test` splits with columns `audio` (undecoded path), `scene` (`ClassLabel`) and, from a
    `metadata.csv`, its other columns as strings (see the module's docstring). `seed` draws the test split of a
    folder without split folders."""
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder")
    metadata = sorted([root / METADATA_FILE] + [d / METADATA_FILE for d in root.iterdir() if d.is_dir()])
    metadata = [file for file in metadata if file.is_file()]
    rows = _metadata_rows(root, metadata, label_column) if metadata else _tree_rows(root)
    names = sorted({row["scene"] for row in rows})
    check_scene_names(names, str(root))
    splits = {row["split"] for row in rows}
    if splits == {None}:
        by_split = _draw_test(root, rows, seed)
    else:
        if None in splits or "train" not in splits:
            raise ValueError(f"{root}: expected audio under split folders train/ and test/ (or validation/, eval/), or "
                             f"all in one pool; found splits {sorted(s or '(root)' for s in splits)}")
        test = next((name for name in TEST_NAMES if name in splits), None)
        by_split = {"train": [r for r in rows if r["split"] == "train"]}
        if test is not None:
            by_split["test"] = [r for r in rows if r["split"] == test]
            _check_recordings_apart(root, by_split["train"], by_split["test"])
    columns = sorted({key for row in rows for key in row} - {"split", "path", "scene"})
    features = datasets.Features({"audio": AUDIO_FEATURE, "scene": datasets.ClassLabel(names=names),
                                  **{column: datasets.Value("string") for column in columns}})
    data = datasets.DatasetDict({split: _dataset(part, names, columns, features, split) for split, part in by_split.items() if part})
    warn_missing_classes(data, str(root))
    return data


def _tree_rows(root: Path) -> list[dict]:
    """`<split>/<scene>/<file>`: every audio file two levels down."""
    rows = [{"split": split.name, "scene": scene.name, "path": file}
            for split in sorted(root.iterdir()) if split.is_dir()
            for scene in sorted(split.iterdir()) if scene.is_dir()
            for file in sorted(scene.iterdir()) if file.name.lower().endswith(AUDIO_EXTENSIONS)]
    if not any(row["split"] == "train" for row in rows):
        found = sorted({row["split"] for row in rows})
        raise ValueError(f"{root}: expected an audiofolder tree <split>/<scene>/<file> with a non-empty 'train' split, or a "
                         f"{METADATA_FILE} (file_name, scene, identifier) beside the audio (found {found})")
    return rows


def _metadata_rows(root: Path, files: list[Path], label_column: str) -> list[dict]:
    """One row per line of every metadata.csv: its split (the first folder under `root`, if a split's), path,
    scene (the label column, else the file's folder) and its other columns."""
    rows, problems = [], []
    for file in files:
        with open(file, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if "file_name" not in (reader.fieldnames or []):
                raise ValueError(f"{file}: a {METADATA_FILE} needs a `file_name` column (found {reader.fieldnames})")
            for line, record in enumerate(reader, start=2):
                path = (file.parent / record.pop("file_name")).resolve()
                if not path.is_file():
                    problems.append(f"{file.name} line {line}: {path} does not exist")
                    continue
                relative = path.relative_to(root.resolve()).parts
                split = relative[0] if len(relative) > 1 and relative[0] in ("train", *TEST_NAMES) else None
                scene = record.pop(label_column, None) or (path.parent.name if path.parent != root.resolve() else None)
                if not scene:
                    problems.append(f"{file.name} line {line}: no `{label_column}` value and no scene folder for {path.name}")
                    continue
                rows.append({"split": split, "path": path, "scene": scene, **{k: v for k, v in record.items() if k and k != "audio"}})
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... {len(problems) - 20} more" if len(problems) > 20 else "")
        raise ValueError(f"{root}: {len(problems)} problem(s) in {METADATA_FILE}:\n  {shown}")
    if not rows:
        raise ValueError(f"{root}: the {METADATA_FILE} file(s) list no audio")
    return rows


def _recording(row: dict) -> str:
    return row.get("identifier") or str(row["path"])  # without `identifier` each file is its own recording


def _draw_test(root: Path, rows: list[dict], seed: int) -> dict[str, list[dict]]:
    """One pool of clips split into train and test by recording, stratified by scene."""
    if not any("identifier" in row for row in rows):
        logger.warning("%s: no `identifier` column in %s: the test split is drawn clip by clip, so clips of one recording "
                       "may be on both sides", root, METADATA_FILE)
    train, test = group_split([_recording(row) for row in rows], [row["scene"] for row in rows], test_size=TEST_SIZE, seed=seed)
    recordings = defaultdict(set)
    for row in rows:
        recordings[row["scene"]].add(_recording(row))
    held = {rows[i]["scene"] for i in test}
    alone = {scene: sorted(found) for scene, found in recordings.items() if scene not in held}
    if alone:
        listing = "; ".join(f"{scene!r}: {', '.join(found)}" for scene, found in sorted(alone.items()))
        raise RecordingSplitError(
            f"{root}: a test split by recording cannot hold scene(s) whose clips all come from one recording ({listing}): "
            "that recording would have to be on both sides. Add recordings of them, give train/ and test/ folders, or "
            "leave them out.")
    return {"train": [rows[i] for i in train], "test": [rows[i] for i in test]}


def _check_recordings_apart(root: Path, train: list[dict], test: list[dict]) -> None:
    shared = sorted({row["identifier"] for row in train if row.get("identifier")} & {row["identifier"] for row in test if row.get("identifier")})
    if shared:
        raise RecordingSplitError(
            f"{root}: {len(shared)} recording(s) have clips in both train and test ({', '.join(shared[:10])}"
            f"{' ...' if len(shared) > 10 else ''}): the test reading would measure recordings the model was trained on. "
            "Put each recording's clips under one split folder.")


def _dataset(rows: list[dict], names: list[str], columns: list[str], features: datasets.Features, split: str) -> datasets.Dataset:
    table = pa.table({
        "audio": pa.StructArray.from_arrays(
            [pa.nulls(len(rows), pa.binary()), pa.array([str(Path(row["path"]).resolve()) for row in rows], pa.string())],
            names=["bytes", "path"]),
        "scene": pa.array(np.array([names.index(row["scene"]) for row in rows], dtype=np.int64)),
        **{column: pa.array([row.get(column) for row in rows], pa.string()) for column in columns},
    })  # fmt: skip
    return dataset_from_arrow(table, features, split=split)
