"""The data a training run uses: its splits loaded (the scene validation split carved out) and their log-mel
features in the store, with their fingerprints, label lists and bad-audio lists."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import datasets

from .arguments import DataArguments
from ..data.sources import load_event_source, load_scene_source
from ..data.splits import carve_validation
from ..data.feature_store import FeatureStore, StoredSplit, default_store_root, warn_shared_clips
from ..models.feature_extraction_sceneevent import LogMelFeatureExtractor


@dataclass
class PreparedData:
    """Stored splits ready for the loaders; `scene_validation` is None when selection is off."""

    scene_train: StoredSplit
    scene_validation: StoredSplit | None
    scene_test: StoredSplit
    event_train: StoredSplit | None
    event_validation: StoredSplit | None
    event_test: StoredSplit | None
    scene_labels: list[str]
    event_labels: list[str]
    bad_audio: dict[str, list[str]]
    fingerprints: dict[str, str]
    aet_subset: dict | None = None

    def splits(self) -> dict[str, StoredSplit]:
        names = ("scene_train", "scene_validation", "scene_test", "event_train", "event_validation", "event_test")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def summary(self) -> dict:
        """What results.json records of the data: labels, rows per split, fingerprints, bad audio, the event subset."""
        return {
            "scene_labels": self.scene_labels,
            "event_labels": self.event_labels,
            "rows": {name: len(split) for name, split in self.splits().items()},
            "fingerprints": self.fingerprints,
            "bad_audio": self.bad_audio,
            "aet_subset": self.aet_subset,
        }


def make_feature_extractor(data_args: DataArguments) -> LogMelFeatureExtractor:
    return LogMelFeatureExtractor(**data_args.resolved_features())


def load_splits(data_args: DataArguments, need_events: bool) -> tuple[dict[str, datasets.Dataset], list[str], list[str]]:
    """The raw (undecoded) splits a run uses, with the scene validation split carved out, and both label lists."""
    scenes = load_scene_source(
        data_args.asc_dataset, label_column=data_args.asc_label_column, seed=data_args.synthetic_seed,
        **_synthetic_kwargs(data_args, data_args.asc_dataset, scenes=True),
    )
    scene_train, scene_validation = scenes["train"], None
    if data_args.asc_validation_split > 0:
        scene_train, scene_validation = carve_validation(scene_train, data_args.asc_validation_split, data_args.validation_split_seed)
    splits = {"scene_train": _first(scene_train, data_args.max_asc_train_samples),
              "scene_validation": _first(scene_validation, data_args.max_eval_samples),
              "scene_test": _first(scenes["test"], data_args.max_eval_samples)}
    event_labels: list[str] = []
    if need_events:
        events = load_event_source(
            data_args.aet_dataset, seed=data_args.synthetic_seed, **_synthetic_kwargs(data_args, data_args.aet_dataset)
        )
        splits["event_train"] = _first(events["train"], data_args.max_aet_train_samples)
        splits["event_validation"] = _first(events["validation"], data_args.max_eval_samples)
        splits["event_test"] = _first(events["test"], data_args.max_eval_samples)
        event_labels = list(events["train"].features["events"].feature.names)
    splits = {name: split for name, split in splits.items() if split is not None}
    return splits, list(scenes["train"].features["scene"].names), event_labels


def cache_splits(splits: dict[str, datasets.Dataset], data_args: DataArguments, extractor, scene_labels, event_labels) -> PreparedData:
    """Every split's log-mel features from the store, its missing clips decoded and stored first."""
    store = FeatureStore(data_args.feature_store_dir or default_store_root(), extractor)
    cached, bad_audio = store.store_splits(splits, num_workers=data_args.preprocessing_num_workers or 0,
                                           skip_bad_audio=data_args.skip_bad_audio)
    warn_shared_clips(cached)
    return PreparedData(
        **{name: cached.get(name) for name in ("scene_train", "scene_validation", "scene_test", "event_train", "event_validation", "event_test")},
        scene_labels=scene_labels, event_labels=event_labels or ["none"],
        bad_audio={k: v for k, v in bad_audio.items() if v},
        fingerprints={name: split._fingerprint for name, split in splits.items()},
        aet_subset=read_subset_info(data_args.aet_dataset) if event_labels else None,
    )


def prepare_data(data_args: DataArguments, extractor: LogMelFeatureExtractor, need_events: bool) -> PreparedData:
    """Load both sources and their log-mel features."""
    splits, scene_labels, event_labels = load_splits(data_args, need_events)
    return cache_splits(splits, data_args, extractor, scene_labels, event_labels)


def read_subset_info(source: str) -> dict | None:
    """How an AET subset folder was built (k, hours, strategy, seed), if it is one."""
    path = Path(source) / "subset_info.json"
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    hours = info.get("hours_requested") or info.get("train_hours")
    return {"k": info.get("k"), "hours": hours, "strategy": info.get("strategy"), "seed": info.get("seed"),
            "source": info.get("source"), "train_clips": info.get("train_clips"), "events": info.get("events")}


def _synthetic_kwargs(data_args: DataArguments, source: str, scenes: bool = False) -> dict:
    if source != "synthetic":
        return {}
    features = data_args.resolved_features()
    kwargs = {"difficulty": data_args.synthetic_difficulty, "clip_seconds": features["clip_seconds"]}
    if scenes:  # the event set does not depend on these
        kwargs.update(event_informativeness=data_args.synthetic_event_informativeness,
                      swap_event_roles=data_args.synthetic_swap_event_roles,
                      train_clips_per_scene=data_args.synthetic_train_clips_per_scene,
                      test_clips_per_scene=data_args.synthetic_test_clips_per_scene)
    return kwargs


def _first(split: datasets.Dataset | None, limit: int | None) -> datasets.Dataset | None:
    return split.select(range(min(limit, len(split)))) if split is not None and limit is not None else split
