"""Resolve a `--asc_dataset` / `--aet_dataset` value to a `DatasetDict` with the standard columns.

Scene sources: `synthetic`, a TUT 2018 development-set folder, a folder saved with `save_to_disk`, an
audiofolder (`<split>/<scene>/<file>`, or audio with a `metadata.csv`: split by recording), or a Hub id (the
TUT 2018 mirror is split by location).
Event sources: `synthetic`, a folder saved by `build_aet_subset.py`, or anything `load_audioset` takes.
"""

from __future__ import annotations

import os
from pathlib import Path

import datasets

from ._columns import with_plain_audio
from .audiofolder import RecordingSplitError, load_scene_audiofolder
from .audioset import load_audioset
from .scenes import (
    TUT2018_HUB_ID,
    SceneNamesError,
    is_tut2018_folder,
    load_tut2018,
    load_tut2018_hub,
    to_scene_dataset,
    warn_missing_classes,
)
from .subsets import with_held_out_splits
from .synthetic import load_synthetic_events, load_synthetic_scenes

SYNTHETIC = "synthetic"


def load_scene_source(source: str = SYNTHETIC, label_column: str = "scene", seed: int = 0, **synthetic_kwargs) -> datasets.DatasetDict:
    """A scene `DatasetDict` with `train` and `test` splits and columns `audio`, `scene`.

    `label_column` names the scene column of a saved dataset or Hub id; it is renamed to `scene` and
    made a `ClassLabel` (in an audiofolder's metadata.csv too). `seed` also seeds the location split of the TUT 2018
    Hub mirror and the recording split of an audiofolder without split folders.
    """
    if source == SYNTHETIC:
        return load_synthetic_scenes(seed=seed, **synthetic_kwargs)
    path = Path(source)
    if path.is_dir():
        if is_tut2018_folder(path):
            return load_tut2018(path)
        if (path / "dataset_dict.json").exists():
            return _standard_scene_splits(datasets.load_from_disk(str(path)), label_column, str(source))
        try:
            return load_scene_audiofolder(path, label_column=label_column, seed=seed)
        except (SceneNamesError, RecordingSplitError):
            raise  # an audiofolder whose names or recordings are the problem, not the layout
        except ValueError as error:
            raise ValueError(
                f"--asc_dataset {source!r}: a folder, but not a TUT 2018 development set (meta.csv + evaluation_setup/), "
                f"a `save_to_disk` folder (dataset_dict.json) or an audiofolder ({error})"
            ) from error
    if os.path.exists(source) or source.startswith((".", "/", "~")):
        raise ValueError(f"--asc_dataset {source!r}: expected 'synthetic', a folder, or a Hub id; this path is not a folder")
    if source == TUT2018_HUB_ID:
        return load_tut2018_hub(source, seed=seed)
    return _standard_scene_splits(datasets.load_dataset(source), label_column, source)


def _standard_scene_splits(data: datasets.DatasetDict, label_column: str, source: str) -> datasets.DatasetDict:
    """Splits `train` + `test` (from test/eval/validation), plain audio struct, `scene` ClassLabel."""
    if not isinstance(data, datasets.DatasetDict) or "train" not in data:
        raise ValueError(f"--asc_dataset {source!r}: expected a DatasetDict with a 'train' split, got {type(data).__name__} {list(data) if isinstance(data, dict) else ''}")
    test = next((s for s in ("test", "eval", "evaluation", "validation") if s in data), None)
    if test is None:
        raise ValueError(f"--asc_dataset {source!r}: no test split (looked for test/eval/evaluation/validation; found {list(data)})")
    columns = data["train"].column_names
    if label_column == "scene" and "scene" not in columns:  # the default: accept the usual Hub names too
        label_column = next((c for c in ("scene_label", "label") if c in columns), label_column)
    if label_column not in columns:
        raise ValueError(f"--asc_dataset {source!r}: no column {label_column!r}; set `--asc_label_column` to one of {data['train'].column_names}")
    out = {}
    names = None
    feature = data["train"].features[label_column]
    if not isinstance(feature, datasets.ClassLabel):  # one class list for both splits
        names = sorted({str(v) for split in ("train", test) for v in data[split].unique(label_column)})
    for split, name in (("train", "train"), ("test", test)):
        dataset = data[name]
        if "audio" in dataset.column_names:
            dataset = with_plain_audio(dataset)
        out[split] = to_scene_dataset(dataset, label_column, names=names, source=f"{source}[{name}]")
    out = datasets.DatasetDict(out)
    warn_missing_classes(out, source)
    return out


def load_event_source(source: str = SYNTHETIC, seed: int = 0, **synthetic_kwargs) -> datasets.DatasetDict:
    """An event `DatasetDict` with `train`, `validation` and `test` splits and columns `audio`, `events`.

    A folder saved by `build_aet_subset.py` is loaded as is; any other AudioSet source goes through
    `load_audioset` and its `eval` split is cut into `validation` and `test` by video id.
    """
    if source == SYNTHETIC:
        return load_synthetic_events(seed=seed, **synthetic_kwargs)
    path = Path(source)
    if path.is_dir() and (path / "dataset_dict.json").exists():
        data = datasets.load_from_disk(str(path))
        if isinstance(data, datasets.DatasetDict) and {"train", "validation", "test"} <= set(data):
            return data
        if isinstance(data, datasets.DatasetDict) and {"train", "validation"} <= set(data):
            raise ValueError(
                f"--aet_dataset {source!r}: this event set has no `test` split (it was built before event sets carried "
                "separate validation and test splits); rebuild it with scripts/build_aet_subset.py"
            )
    try:
        data = load_audioset(source)
    except ValueError as error:
        raise ValueError(f"--aet_dataset {source!r}: expected 'synthetic', a folder saved by build_aet_subset.py, or an AudioSet source ({error})") from error
    return with_held_out_splits(data, str(source))
