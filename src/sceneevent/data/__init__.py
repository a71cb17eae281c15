"""Data sources. Every scene set has `audio` (undecoded `{"bytes", "path"}`) and `scene` (`ClassLabel`);
every event set has `audio` and `events` (`Sequence(ClassLabel)` of display names)."""

from .audiofolder import load_scene_audiofolder
from .audioset import load_audioset
from .clips import cut_recordings
from .scenes import load_tut2018, load_tut2018_hub
from .sources import load_event_source, load_scene_source
from .subsets import build_aet_subset, save_aet_subset
from .synthetic import load_synthetic_events, load_synthetic_scenes

__all__ = [
    "build_aet_subset",
    "cut_recordings",
    "load_audioset",
    "load_event_source",
    "load_scene_audiofolder",
    "load_scene_source",
    "load_synthetic_events",
    "load_synthetic_scenes",
    "load_tut2018",
    "load_tut2018_hub",
    "save_aet_subset",
]
