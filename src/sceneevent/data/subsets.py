"""AET subsets (Parikh et al. 2022): `k` event classes chosen by a strategy, `T` hours of training audio.

`build_aet_subset` keeps the clips carrying any chosen class, restricts their labels to those classes,
draws `hours` of training audio with the seed, and takes fixed `validation` and `test` splits from the
evaluation split (cut in two by clip identity: `splits.split_held_out`), so both depend only on the event
set, never on `hours` or the seed. `save_aet_subset` writes it atomically with its data card
(`subset_card.py`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..io_utils import staged_folder
from ._columns import replace_column
from .audioset import NOMINAL_CLIP_SECONDS, events_feature, load_audioset, resolve_event_names
from .ranking import read_ranking
from .splits import split_held_out
from .subset_card import subset_card

logger = logging.getLogger(__name__)

STRATEGIES = ("random", "correlated", "uncorrelated", "speech_music")
SPEECH_MUSIC = ("Speech", "Music")


class SubsetError(ValueError):
    """A subset request that the source cannot satisfy (too many classes or hours, bad strategy, ...)."""


@dataclass
class SubsetInfo:
    """How a subset was built; written next to it as `subset_info.json` and into its data card."""

    source: str
    strategy: str
    seed: int
    events: list[str]
    hours_requested: float | None
    train_hours: float
    validation_hours: float
    train_clips: int
    validation_clips: int
    train_clips_per_class: dict[str, int]
    validation_clips_per_class: dict[str, int]
    available_classes: int
    ranking: str | None = None
    skipped_from_ranking: list[str] = field(default_factory=list)
    missing_audio: dict[str, int] = field(default_factory=dict)
    test_hours: float = 0.0
    test_clips: int = 0
    test_clips_per_class: dict[str, int] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return len(self.events)

    def to_dict(self) -> dict:
        return {"k": self.k, **asdict(self)}


def build_aet_subset(
    source,
    *,
    k: int | None = None,
    events: Sequence[str] | None = None,
    hours: float | None = None,
    strategy: str = "random",
    ranking: str | os.PathLike | Sequence[str] | None = None,
    seed: int = 0,
    num_proc: int | None = None,
    return_info: bool = False,
    **load_kwargs,
) -> datasets.DatasetDict | tuple[datasets.DatasetDict, SubsetInfo]:
    """Build an AET subset: `DatasetDict(train, validation, test)` whose `events` names are the chosen classes.

    Args:
        source: anything `load_audioset` takes, "synthetic", or a `DatasetDict` with `train` and either
            `validation` + `test` or one evaluation split (`eval`, `validation` or `test`), which is cut into
            validation and test by `video_id` (columns `audio`, `events`, optional `duration`).
        k: number of classes (not needed with `events`; must be 2 or unset for `speech_music`).
        events: explicit class names (overrides `strategy`).
        hours: hours of training audio to draw (`duration` column, else 10 s a clip); None keeps all.
        strategy: `random`, `correlated` (top k of `ranking`), `uncorrelated` (bottom k), `speech_music`.
        ranking: a ranking JSON file from `scripts/rank_events.py`, or a list of names, best first.
        seed: draws the random classes and the training clips.
        num_proc: processes for `datasets` filter/map.
        return_info: also return a `SubsetInfo`.
        **load_kwargs: passed to `load_audioset` (e.g. `config="unbalanced"`, `cache_dir`), or with
            `source="synthetic"` to `load_synthetic_events` (e.g. `difficulty=0.9`).
    """
    data, source_name, missing_audio = _load(source, seed, load_kwargs)
    train = data["train"]
    feature = train.features["events"]
    if not isinstance(getattr(feature, "feature", None), datasets.ClassLabel):
        raise SubsetError(f"{source_name}: 'events' is {feature}, expected Sequence(ClassLabel)")
    names = list(feature.feature.names)
    for split in ("validation", "test"):
        if list(data[split].features["events"].feature.names) != names:
            raise SubsetError(f"{source_name}: train and {split} splits have different event classes")

    train_counts = class_counts(train, len(names))
    eval_counts = class_counts(data["validation"], len(names)) + class_counts(data["test"], len(names))
    available = [i for i in range(len(names)) if train_counts[i] > 0 and eval_counts[i] > 0]
    chosen, skipped, ranking_name = _choose(names, available, train_counts, eval_counts, k, events, strategy, ranking, seed)
    chosen_names = [names[i] for i in chosen]
    logger.info("Chosen %d classes (%s): %s", len(chosen), strategy if events is None else "explicit", chosen_names)

    train = restrict_events(train, chosen, names, num_proc=num_proc)
    validation = restrict_events(data["validation"], chosen, names, num_proc=num_proc)
    test = restrict_events(data["test"], chosen, names, num_proc=num_proc)
    available_hours = float(_durations(train).sum()) / 3600
    if hours is not None:
        train = draw_hours(train, hours, seed)
    train_hours, validation_hours = float(_durations(train).sum()) / 3600, float(_durations(validation).sum()) / 3600
    test_hours = float(_durations(test).sum()) / 3600
    logger.info("Subset: %d train clips (%.2f h of %.2f h available), %d validation clips (%.2f h), %d test clips (%.2f h)",
                train.num_rows, train_hours, available_hours, validation.num_rows, validation_hours, test.num_rows, test_hours)
    result = datasets.DatasetDict({"train": train, "validation": validation, "test": test})
    if not return_info:
        return result
    info = SubsetInfo(
        source=source_name,
        strategy="explicit" if events is not None else strategy,
        seed=seed,
        events=chosen_names,
        hours_requested=hours,
        train_hours=train_hours,
        validation_hours=validation_hours,
        train_clips=train.num_rows,
        validation_clips=validation.num_rows,
        train_clips_per_class=dict(zip(chosen_names, class_counts(train, len(chosen)).tolist())),
        validation_clips_per_class=dict(zip(chosen_names, class_counts(validation, len(chosen)).tolist())),
        available_classes=len(available),
        ranking=ranking_name,
        skipped_from_ranking=skipped,
        missing_audio=missing_audio,
        test_hours=test_hours,
        test_clips=test.num_rows,
        test_clips_per_class=dict(zip(chosen_names, class_counts(test, len(chosen)).tolist())),
    )
    return result, info


def _load(source, seed: int, load_kwargs: dict) -> tuple[datasets.DatasetDict, str, dict]:
    """Any accepted source as DatasetDict(train, validation, test), a printable name, missing-audio counts."""
    if isinstance(source, datasets.DatasetDict):
        data, name, missing = with_held_out_splits(source, "DatasetDict"), "DatasetDict", {}
    elif isinstance(source, str) and source == "synthetic":
        from .synthetic import load_synthetic_events  # the generator is only needed for this source

        data, missing = load_synthetic_events(seed=seed, **load_kwargs), {}
        name = "synthetic" + "".join(f", {key}={value}" for key, value in sorted(load_kwargs.items()))
    else:
        loaded, report = load_audioset(source, return_info=True, **load_kwargs)
        data = with_held_out_splits(loaded, report.source)
        name, missing = report.source, dict(report.missing_audio)
    for split, dataset in data.items():
        if "events" not in dataset.column_names:
            raise SubsetError(f"{name}[{split}]: no 'events' column (columns: {dataset.column_names})")
    return data, name, missing


def with_held_out_splits(data: datasets.DatasetDict, name: str) -> datasets.DatasetDict:
    """`train`, `validation`, `test`: kept when the source has both held-out splits, else its one evaluation
    split (`eval`, `validation` or `test`) cut in two by `split_held_out`."""
    if "train" in data and {"validation", "test"} <= set(data):
        return datasets.DatasetDict({split: data[split] for split in ("train", "validation", "test")})
    held_out = next((s for s in ("eval", "validation", "test") if s in data), None)
    if "train" not in data or held_out is None:
        raise SubsetError(f"{name} has splits {list(data)}: expected 'train' and an evaluation split ('eval', 'validation' or 'test')")
    validation, test = split_held_out(data[held_out])
    return datasets.DatasetDict({"train": data["train"], "validation": validation, "test": test})


def _events_column(dataset: datasets.Dataset) -> pa.ChunkedArray:
    """The `events` column as Arrow, through any indices mapping (no Python lists)."""
    return dataset.select_columns(["events"]).with_format("arrow")[:]["events"]


def class_counts(dataset: datasets.Dataset, num_classes: int) -> np.ndarray:
    """(num_classes,) number of clips carrying each class."""
    column = _events_column(dataset)
    if len(column) == 0:
        return np.zeros(num_classes, dtype=np.int64)
    flat = pc.list_flatten(column).to_numpy()
    return np.bincount(flat, minlength=num_classes)[:num_classes]


def _choose(names, available, train_counts, eval_counts, k, events, strategy, ranking, seed) -> tuple[list[int], list[str], str | None]:
    """(chosen class indices, ranked names skipped for lack of clips, ranking description)."""
    def lacking(i: int) -> str:
        return f"{names[i]!r} (train {train_counts[i]}, eval {eval_counts[i]} clips)"

    if events is not None:
        if strategy not in ("random", "explicit"):
            raise SubsetError(f"give either `events` or `strategy={strategy!r}`, not both")
        if isinstance(events, str):
            events = [events]
        chosen = resolve_event_names(events, names)
        if len(set(chosen)) != len(chosen):
            raise SubsetError(f"events {list(events)}: names repeat")
        if k is not None and k != len(chosen):
            raise SubsetError(f"k={k} but {len(chosen)} events were given")
        empty = [lacking(i) for i in chosen if i not in set(available)]
        if empty:
            raise SubsetError(f"events without clips in both training and evaluation splits: {', '.join(empty)}")
        return chosen, [], None
    if strategy not in STRATEGIES:
        raise SubsetError(f"strategy={strategy!r}: expected one of {list(STRATEGIES)} (or give `events`)")
    if strategy == "speech_music":
        if k not in (None, 2):
            raise SubsetError(f"strategy 'speech_music' has k = 2 classes ({', '.join(SPEECH_MUSIC)}); got k={k}")
        return _choose(names, available, train_counts, eval_counts, None, list(SPEECH_MUSIC), "random", None, seed)
    if k is None or k < 1:
        raise SubsetError(f"strategy {strategy!r} needs k >= 1 classes (got k={k})")
    if strategy == "random":
        if k > len(available):
            raise SubsetError(f"k={k} classes requested, but only {len(available)} of {len(names)} classes have clips in both training and evaluation splits")
        rng = np.random.default_rng(seed)
        return sorted(int(i) for i in rng.choice(available, size=k, replace=False)), [], None
    if ranking is None:
        raise SubsetError(f"strategy {strategy!r} needs `ranking` (a JSON file from scripts/rank_events.py, or a list of names)")
    ranked_names = read_ranking(ranking)
    ranked = resolve_event_names(ranked_names, names, what="ranked class")
    usable = set(available)
    kept = [i for i in ranked if i in usable]
    skipped = [names[i] for i in ranked if i not in usable]
    if k > len(kept):
        raise SubsetError(
            f"k={k} classes requested, but only {len(kept)} of the {len(ranked)} ranked classes have clips in both "
            f"training and evaluation splits (skipped: {skipped[:10]}{' ...' if len(skipped) > 10 else ''})"
        )
    chosen = kept[:k] if strategy == "correlated" else kept[-k:]
    description = os.fspath(ranking) if isinstance(ranking, (str, os.PathLike)) else "list"
    return chosen, skipped, description


def restrict_events(dataset: datasets.Dataset, chosen: Sequence[int], names: Sequence[str], num_proc: int | None = None) -> datasets.Dataset:
    """Keep the clips carrying any `chosen` class; relabel `events` to `ClassLabel([names[i] for i in chosen])`."""
    lookup = np.full(len(names), -1, dtype=np.int64)
    lookup[np.asarray(chosen, dtype=np.int64)] = np.arange(len(chosen))
    # Relabel only the small `events` column and join it back, then filter (indices only): the
    # `audio` column, which may hold the bytes of a Hub data set, is never rewritten here.
    relabelled = replace_column(
        dataset, "events", "events", _relabel, events_feature([names[i] for i in chosen]),
        num_proc=num_proc, desc="Restricting labels to the chosen classes", fn_kwargs={"lookup": lookup},
    )  # fmt: skip
    kept = relabelled.with_format("arrow").filter(
        _not_empty, batched=True, input_columns=["events"], num_proc=num_proc, desc="Keeping clips with the chosen classes"
    )
    return kept.with_format(None).select_columns(dataset.column_names)


def _not_empty(events: pa.ChunkedArray) -> pa.Array:
    return pc.greater(pc.fill_null(pc.list_value_length(events), 0), 0)


def _relabel(events: pa.ChunkedArray, lookup: np.ndarray) -> pa.Array:
    """(rows,) list<int64> old ids -> new ids through `lookup`, dropping classes mapped to -1."""
    events = events.combine_chunks() if isinstance(events, pa.ChunkedArray) else events
    new = lookup[pc.list_flatten(events).to_numpy()]
    rows = pc.list_parent_indices(events).to_numpy()
    keep = new >= 0
    counts = np.bincount(rows[keep], minlength=len(events))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(new[keep], pa.int64()))


def _durations(dataset: datasets.Dataset) -> np.ndarray:
    """(rows,) seconds per clip: the `duration` column, else the nominal 10 s of an AudioSet clip."""
    if "duration" not in dataset.column_names:
        return np.full(dataset.num_rows, NOMINAL_CLIP_SECONDS)
    column = dataset.select_columns(["duration"]).with_format("arrow")[:]["duration"]
    values = pc.fill_null(column, NOMINAL_CLIP_SECONDS).to_numpy()
    return values.astype(np.float64)


def draw_hours(dataset: datasets.Dataset, hours: float, seed: int) -> datasets.Dataset:
    """Draw clips in a seeded random order until their total is nearest `hours` (within one clip).

    The order depends only on the seed and the clips, so for one seed a smaller `hours` is a prefix
    of a larger one (nested subsets). Selected rows keep their original order.
    """
    if hours <= 0:
        raise SubsetError(f"hours={hours}: expected a positive number of hours")
    seconds = _durations(dataset)
    total = float(seconds.sum())
    target = hours * 3600
    if target > total + 1e-6:
        raise SubsetError(f"hours={hours:g} requested, but the chosen classes have only {total / 3600:.2f} h ({dataset.num_rows} clips) of training audio")
    order = np.random.default_rng([seed, 1]).permutation(dataset.num_rows)  # its own stream: independent of the class draw
    cumulative = np.cumsum(seconds[order])
    first_over = int(np.searchsorted(cumulative, target))  # cumulative[first_over] >= target
    count = first_over + 1
    if first_over > 0 and target - cumulative[first_over - 1] <= cumulative[first_over] - target:
        count = first_over
    return dataset.select(np.sort(order[:count]))


# -- saving ---------------------------------------------------------------------------------------


def save_aet_subset(
    dataset_dict: datasets.DatasetDict, out_dir: str | os.PathLike, info: SubsetInfo | dict, *, overwrite: bool = False
) -> Path:
    """`save_to_disk` with `README.md` (the data card) and `subset_info.json`, atomically: `out_dir` is
    never half-written, and an old `out_dir` is replaced whole."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass overwrite=True (--overwrite_output_dir) to replace it")
    info_dict = info.to_dict() if isinstance(info, SubsetInfo) else dict(info)
    with staged_folder(out_dir) as staging:
        dataset_dict.save_to_disk(str(staging))
        (staging / "subset_info.json").write_text(json.dumps(info_dict, indent=2) + "\n", encoding="utf-8")
        (staging / "README.md").write_text(subset_card(dataset_dict, info_dict), encoding="utf-8")
    return out_dir
