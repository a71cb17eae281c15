"""Data sources. Every scene set has `audio` (undecoded `{"bytes", "path"}`) and `scene` (`ClassLabel`);
every event set has `audio` and `events` (`Sequence(ClassLabel)` of display names)."""

from .sources import load_event_source, load_scene_source
from .synthetic import load_synthetic_events, load_synthetic_scenes

__all__ = [
    "load_event_source",
    "load_scene_source",
    "load_synthetic_events",
    "load_synthetic_scenes",
]
