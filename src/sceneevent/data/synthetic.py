"""The embedded default data: a synthetic scene set and a synthetic event set, generated from a seed.

Nothing is downloaded. Both sets have the columns of the real sources (`audio` as undecoded WAV
bytes, `scene` / `events` as `ClassLabel`s, `duration`), so they take the same path through the
subset builder, the feature cache and the trainer.

The world they are drawn from (classes, scenes, the planted scene-event link and its ground truth) is
`synthetic_world.py`, its audio `synthetic_render.py`; data_cards/synthetic.md describes both. The
world's names are also importable from here, as the data card and the mini study name them.

Generation is deterministic: clip `i` of a split draws from `numpy.random.default_rng((seed, split, kind, i, ...))`,
and `datasets.Dataset.from_generator` caches the result by its arguments (the world version and every
knob among them, so a changed knob or generator never reuses a stale cache).
"""

from __future__ import annotations

import datasets
import numpy as np

from .audio import AUDIO_FEATURE, encode_wav
from .synthetic_render import SAMPLING_RATE, render_event_clip, render_scene_clip
from .synthetic_world import (
    BACKGROUND_GROUPS,
    CORRELATED_EVENTS,
    COUNTERPARTS,
    DEFAULT_EVENT_INFORMATIVENESS,
    EVENT_NAMES,
    EVENTS,
    PARTNERS,
    PITCHED_FAMILIES,
    SCENE_EVENTS,
    SCENES,
    UNCORRELATED_EVENTS,
    WORLD_VERSION,
    check_unit,
    correlated_events,
    draw_scene_events,
    ground_truth_ranking,
    planted_event_probabilities,
    roles_matter,
    scene_events,
    uncorrelated_events,
)

__all__ = [
    "BACKGROUND_GROUPS", "CLIP_SECONDS", "CORRELATED_EVENTS", "COUNTERPARTS", "DEFAULT_DIFFICULTY",
    "DEFAULT_EVENT_INFORMATIVENESS", "EVENTS", "EVENT_NAMES", "LOCATIONS_PER_SCENE", "PARTNERS", "PITCHED_FAMILIES",
    "SAMPLING_RATE", "SCENES", "SCENE_EVENTS", "UNCORRELATED_EVENTS", "WORLD_VERSION", "correlated_events",
    "draw_scene_events", "ground_truth_ranking", "load_synthetic_events", "load_synthetic_scenes",
    "planted_event_probabilities", "roles_matter", "scene_clip_events", "scene_events", "uncorrelated_events",
]

CLIP_SECONDS = 2.0
DEFAULT_DIFFICULTY = 0.6
LOCATIONS_PER_SCENE = 8  # `identifier` values per scene and split, like TUT's recording locations
SPLIT_IDS = {"train": 0, "test": 1, "validation": 2}


def scene_clip_events(seed: int, split: str, index: int, difficulty: float = DEFAULT_DIFFICULTY,
                      event_informativeness: float = DEFAULT_EVENT_INFORMATIVENESS, swap_event_roles: bool = False) -> list[str]:
    """The events planted in clip `index` of scene split `split` (what `load_synthetic_scenes` renders)."""
    scene = SCENES[index % len(SCENES)]
    return draw_scene_events(_scene_rngs(seed, split, index)[0], scene, event_informativeness, swap_event_roles)


def load_synthetic_scenes(
    seed: int = 0,
    difficulty: float = DEFAULT_DIFFICULTY,
    train_clips_per_scene: int = 64,
    test_clips_per_scene: int = 30,
    clip_seconds: float = CLIP_SECONDS,
    event_informativeness: float = DEFAULT_EVENT_INFORMATIVENESS,
    swap_event_roles: bool = False,
) -> datasets.DatasetDict:
    """The synthetic scene set: `train` and `test`, columns `audio`, `scene`, `identifier`, `duration`.

    `identifier` names one of `LOCATIONS_PER_SCENE` "recording locations" per scene and split, so a
    validation split can be carved from `train` by location. `swap_event_roles` plants each class's
    counterpart instead (`scene_events`); the backgrounds and every random draw stay the same, and at
    `event_informativeness` 0 the clips are the default world's (`roles_matter`).
    """
    check_unit("difficulty", difficulty)
    check_unit("event_informativeness", event_informativeness)
    _check_count("train_clips_per_scene", train_clips_per_scene)
    _check_count("test_clips_per_scene", test_clips_per_scene)
    features = datasets.Features(
        {
            "audio": AUDIO_FEATURE,
            "scene": datasets.ClassLabel(names=SCENES),
            "identifier": datasets.Value("string"),
            "duration": datasets.Value("float32"),
        }
    )
    splits = {"train": train_clips_per_scene, "test": test_clips_per_scene}
    # Where the swap changes no clip, both role assignments share one cache.
    return _generate(_scene_rows, features, splits, seed=seed, difficulty=difficulty, clip_seconds=clip_seconds,
                     event_informativeness=float(event_informativeness),
                     swap_event_roles=roles_matter(event_informativeness, swap_event_roles))


def load_synthetic_events(
    seed: int = 0,
    difficulty: float = DEFAULT_DIFFICULTY,
    train_clips: int = 1280,
    validation_clips: int = 320,
    test_clips: int = 320,
    clip_seconds: float = CLIP_SECONDS,
) -> datasets.DatasetDict:
    """The synthetic event set: `train`, `validation` and `test`, columns `audio`, `events`, `duration`.

    It does not depend on `event_informativeness` (that knob only changes the scene set).
    """
    check_unit("difficulty", difficulty)
    features = datasets.Features(
        {
            "audio": AUDIO_FEATURE,
            "events": datasets.Sequence(datasets.ClassLabel(names=EVENT_NAMES)),
            "duration": datasets.Value("float32"),
        }
    )
    splits = {"train": train_clips, "validation": validation_clips, "test": test_clips}
    return _generate(_event_rows, features, splits, seed=seed, difficulty=difficulty, clip_seconds=clip_seconds)


def _generate(rows, features: datasets.Features, splits: dict[str, int], **kwargs) -> datasets.DatasetDict:
    """One `from_generator` split per entry of `splits` (name → count); datasets caches each by its arguments.

    `world_version` is among the arguments: the cache key covers the generator function but not the
    renderers it calls, so a new world must not be served from an old cache.
    """
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_generator(
                rows, features=features, split=datasets.NamedSplit(split),
                gen_kwargs=dict(split=split, count=count, world_version=WORLD_VERSION, **kwargs),
            )
            for split, count in splits.items()
        }
    )


def _check_count(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"synthetic `{name}` must be a whole number >= 1, got {value!r}")


def _scene_rngs(seed: int, split: str, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(events, audio): separate streams, so the planted events of a clip can be drawn without rendering it."""
    return (np.random.default_rng((seed, SPLIT_IDS[split], 1, index, 0)),
            np.random.default_rng((seed, SPLIT_IDS[split], 1, index, 1)))


def _scene_rows(seed: int, split: str, count: int, difficulty: float, clip_seconds: float,
                event_informativeness: float, swap_event_roles: bool, world_version: int):
    for index in range(count * len(SCENES)):  # count clips per scene
        scene = SCENES[index % len(SCENES)]
        event_rng, audio_rng = _scene_rngs(seed, split, index)
        planted = draw_scene_events(event_rng, scene, event_informativeness, swap_event_roles)
        waveform = render_scene_clip(audio_rng, scene, difficulty, clip_seconds, event_informativeness, planted)
        yield {
            "audio": {"bytes": encode_wav(waveform, SAMPLING_RATE), "path": f"synthetic/{split}/scene_{index:05d}.wav"},
            "scene": index % len(SCENES),
            "identifier": f"{scene}-{split}-{(index // len(SCENES)) % LOCATIONS_PER_SCENE}",
            "duration": clip_seconds,
        }


def _event_rows(seed: int, split: str, count: int, difficulty: float, clip_seconds: float, world_version: int):
    for index in range(count):
        rng = np.random.default_rng((seed, SPLIT_IDS[split], 2, index))
        waveform, labels = render_event_clip(rng, difficulty, clip_seconds)
        yield {
            "audio": {"bytes": encode_wav(waveform, SAMPLING_RATE), "path": f"synthetic/{split}/event_{index:05d}.wav"},
            "events": labels,
            "duration": clip_seconds,
        }
