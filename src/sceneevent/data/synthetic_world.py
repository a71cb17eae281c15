"""The synthetic world: its scenes and event classes, and the planted scene-event link (the ground truth).

World version 7 (`WORLD_VERSION`), with a planted scene-event link:

- Events (40 classes, "Speech" and "Music" among them) are distinct spectro-temporal patterns, all
  tonal, in 20 pairs. The first of a pair is planted in scenes in the default world (the
  "correlated" classes, `CORRELATED_EVENTS`: harmonic stacks, speech-like and chord patterns, AM
  and FM tones, pure tones, a rising chirp, struck partials); the second, its counterpart
  (`COUNTERPARTS`), has the same frequency and harmonics and another temporal pattern (falling
  chirps, trills, dual tones, arpeggios) and occurs in no scene (`UNCORRELATED_EVENTS`).
- `swap_event_roles` trades the roles: every scene plants its classes' counterparts, and the default
  planted classes are in no scene's table. Two sets of classes never sound exactly alike, and what
  learning one set rather than the other does to the scene task has no fixed sign (pilots where nothing
  was planted: -0.05 to +0.03 of scene accuracy, by the classes chosen); a study that runs half its
  seeds in each world counterbalances it, so that only the link tells correlated from uncorrelated
  classes apart (`mini.py`). Where nothing is planted (`event_informativeness` 0) the swap is a pure
  relabelling: the clips are those of the default world, and only which classes are called correlated
  changes (`roles_matter`; version 6 — in version 5 the swapped world drew each clip's partner class).
  Version 7: the vehicles' counterparts are trills with harmonics, not sparse tone pips, which carried
  too little of the clip for the swapped-role link to be learnt (reports/mini/README.md).
- A scene clip is a background texture (coloured noise whose spectral envelope belongs to the
  scene) plus one planted event that is NOT annotated, quiet (-20 - 12 difficulty dB, +-3 dB).
  Each scene has its own two classes (`scene_events()`: a main one twice as frequent as the other),
  and the main classes of the scenes of a background group are one family at different
  frequencies (AM tones in halls, harmonic stacks in vehicles, FM tones outdoors; with roles swapped,
  trills, trills with harmonics, falling chirps), so telling
  those scenes apart takes a detector for each class: hard to learn from 20 scene labels per
  class, plain to learn from annotated event clips.
- `event_informativeness` in [0, 1] sets how much of a scene's identity the events carry. The
  planted event is drawn from the scene's own table with probability `event_informativeness`, else
  uniformly from all 40 classes; and each scene's background is blended, with the same weight,
  toward the background shared by its group (`BACKGROUND_GROUPS`). At 1 the scenes of a group sound
  alike and only their events tell them apart; at 0 every class is equally likely in every scene
  (the events say nothing about the scene, and correlated and uncorrelated classes occur alike) and
  only the backgrounds tell the scenes apart.
- `difficulty` in [0, 1] blends every background toward one texture shared by all scenes, adds
  per-clip "device" colouration and gain and lowers the event level. It does not change which
  events a scene holds.

`planted_event_probabilities` gives the ground truth (with one planted event per clip, it is also the
fraction of a scene's clips that hold each class); `draw_scene_events` draws from it.
"""

from __future__ import annotations

import functools

import numpy as np

WORLD_VERSION = 7
DEFAULT_EVENT_INFORMATIVENESS = 0.5

SCENES = [
    "airport",
    "bus",
    "metro",
    "metro_station",
    "park",
    "public_square",
    "shopping_mall",
    "street_pedestrian",
    "street_traffic",
    "tram",
]

# (name, pattern kind, centre frequency in Hz). Kinds are the spectro-temporal families; the centre
# frequency separates the classes within a family.
EVENTS = [
    # The 20 classes the default world's scenes plant: the main classes of each background group share a family.
    ("Speech", "speech", 160),
    ("Music", "chord", 262),
    ("Bird", "fm_tone", 3500),
    ("Car horn", "harmonic", 420),
    ("Siren", "fm_tone", 900),
    ("Bell", "harmonic_decay", 1200),
    ("Telephone", "am_tone", 1400),
    ("Whistle", "fm_tone", 2200),
    ("Train horn", "harmonic", 220),
    ("Brakes squeal", "tone", 4200),
    ("Alarm", "am_tone", 2800),
    ("Motorcycle", "harmonic", 110),
    ("Chainsaw", "harmonic", 180),
    ("Drill", "am_tone", 700),
    ("Cash register", "harmonic_decay", 2000),
    ("Beep", "tone", 1000),
    ("Buzzer", "harmonic", 330),
    ("Ringtone", "am_tone", 1750),
    ("Cat", "fm_tone", 650),
    ("Chirp up", "chirp_up", 1000),
    # Their counterparts, in the same order (`COUNTERPARTS`): never planted in the default world. Each has its planted
    # class's frequency and harmonics (`+harmonics`: seven, like a harmonic stack) and a temporal pattern of five
    # families no default scene uses; the counterparts of a group's main classes share a family, as those do.
    ("Didgeridoo", "dual_tone+harmonics", 160),
    ("Glockenspiel", "arpeggio+harmonics", 262),
    ("Sonar ping", "chirp_down", 3500),
    ("Truck beeper", "trill+harmonics", 420),
    ("Laser", "chirp_down", 900),
    ("Music box", "arpeggio", 1200),
    ("Warbler", "trill", 1400),
    ("Slide whistle", "chirp_down", 2200),
    ("Level crossing", "trill+harmonics", 220),
    ("Touch tone", "dual_tone", 4200),
    ("Canary", "trill", 2800),
    ("Harmonica", "trill+harmonics", 110),
    ("Foghorn", "dual_tone+harmonics", 180),
    ("Xylophone", "arpeggio", 700),
    ("Doorbell", "dual_tone", 2000),
    ("Phone line", "dual_tone", 1000),
    ("Reversing beeper", "trill+harmonics", 330),
    ("Nightingale", "trill", 1750),
    ("Swanee whistle", "chirp_down", 650),
    ("Wind chime", "arpeggio", 1000),
]
EVENT_NAMES = [name for name, _, _ in EVENTS]

# The events each scene produces (unannotated), with relative weights: at event_informativeness 1 a
# planted event of scene s is class c with probability SCENE_EVENTS[s][c] / sum(SCENE_EVENTS[s].values()).
# No class is shared: the scenes' main classes (weight 2) are the ten most planted, so a correlated subset
# at k = 10 is one discriminating class per scene. Main classes within a background group share a family.
SCENE_EVENTS = {
    "airport": {"Telephone": 2, "Beep": 1},
    "bus": {"Buzzer": 2, "Speech": 1},
    "metro": {"Train horn": 2, "Drill": 1},
    "metro_station": {"Alarm": 2, "Brakes squeal": 1},
    "park": {"Bird": 2, "Chirp up": 1},
    "public_square": {"Whistle": 2, "Cash register": 1},
    "shopping_mall": {"Ringtone": 2, "Music": 1},
    "street_pedestrian": {"Cat": 2, "Chainsaw": 1},
    "street_traffic": {"Siren": 2, "Motorcycle": 1},
    "tram": {"Car horn": 2, "Bell": 1},
}
# Each planted class's counterpart (the event table's second half, in the same order), and each class's partner
# either way.
COUNTERPARTS = dict(zip(EVENT_NAMES[:20], EVENT_NAMES[20:]))
PARTNERS = {**COUNTERPARTS, **{counterpart: name for name, counterpart in COUNTERPARTS.items()}}
PITCHED_FAMILIES = ("chirp_down", "trill", "dual_tone", "arpeggio")  # the counterparts' families


def scene_events(swap_event_roles: bool = False) -> dict[str, dict[str, int]]:
    """Each scene's event table; with `swap_event_roles` every class is replaced by its counterpart (the world
    whose planted and never-planted classes trade places, so that a study can counterbalance them)."""
    if not swap_event_roles:
        return SCENE_EVENTS
    return {scene: {COUNTERPARTS[name]: weight for name, weight in table.items()} for scene, table in SCENE_EVENTS.items()}


def correlated_events(swap_event_roles: bool = False) -> list[str]:
    """The 20 classes of the scenes' own tables ("correlated"), in table order."""
    planted = {name for table in scene_events(swap_event_roles).values() for name in table}
    return [name for name in EVENT_NAMES if name in planted]


def uncorrelated_events(swap_event_roles: bool = False) -> list[str]:
    """The 20 classes in no scene's table ("uncorrelated"): they occur in scenes only at the uniform rate of
    informativeness below 1, never at 1. In table order."""
    planted = set(correlated_events(swap_event_roles))
    return [name for name in EVENT_NAMES if name not in planted]


CORRELATED_EVENTS = correlated_events()  # of the default world
UNCORRELATED_EVENTS = uncorrelated_events()

# Scenes whose backgrounds become one as event_informativeness goes to 1.
BACKGROUND_GROUPS = [
    ("airport", "metro_station", "shopping_mall"),  # halls
    ("bus", "metro", "tram"),  # vehicles
    ("park", "public_square", "street_pedestrian", "street_traffic"),  # outdoors
]


def planted_event_probabilities(scene: str, event_informativeness: float = DEFAULT_EVENT_INFORMATIVENESS,
                                swap_event_roles: bool = False) -> dict[str, float]:
    """The distribution of one planted event in a clip of `scene` (class name → probability; sums to 1).

    `informativeness * own table + (1 - informativeness) / 40` over all 40 classes: at 1 only the scene's own
    classes occur; at 0 every class is equally likely in every scene, so the events say nothing about the
    scene and the correlated and uncorrelated classes are alike in how often scenes hold them.
    """
    check_unit("event_informativeness", event_informativeness)
    own = _normalised(scene_events(swap_event_roles)[scene])
    uniform = (1 - event_informativeness) / len(EVENT_NAMES)
    return {name: event_informativeness * own.get(name, 0.0) + uniform for name in _draw_order(swap_event_roles)}


def ground_truth_ranking(swap_event_roles: bool = False) -> list[str]:
    """Every event class, the classes scenes favour first, most favoured first (by the mean of the ten scenes'
    normalised tables, ties by name), then their counterparts, the counterpart of the most favoured class
    last: the bottom ten are the counterparts of the top ten (the scenes' main classes). The same at every
    `event_informativeness` (below 1 every class also occurs at one uniform rate): the "correlated" classes stay
    the same classes whether or not they tell the scenes apart. A ranking for `build_aet_subset(strategy=...)`."""
    mean = _mean_table(swap_event_roles)
    planted = sorted(mean, key=lambda name: (-mean[name], name))
    return planted + [PARTNERS[name] for name in reversed(planted)]


def draw_scene_events(rng: np.random.Generator, scene: str, event_informativeness: float,
                      swap_event_roles: bool = False) -> list[str]:
    """Draw the planted event of one scene clip: one class from `planted_event_probabilities` (a list, for the
    renderer). The same draw in the swapped world gives the counterpart of the default world's class."""
    swapped = roles_matter(event_informativeness, swap_event_roles)
    order = _draw_order(swapped)
    cdf = _cumulative(scene, float(event_informativeness), swapped)
    pick = np.searchsorted(cdf, rng.random(), side="right")  # inverse CDF
    return [order[min(int(pick), len(order) - 1)]]


def roles_matter(event_informativeness: float, swap_event_roles: bool) -> bool:
    """Whether the swapped roles change any clip: not at `event_informativeness` 0, where every class is equally
    likely in every scene, so the swapped world is the default one clip for clip (a relabelling: a study's
    unplanted comparison then differs between role assignments only in which classes it calls correlated)."""
    return bool(swap_event_roles) and float(event_informativeness) > 0


@functools.cache
def _draw_order(swap_event_roles: bool) -> tuple[str, ...]:
    """The classes in the order a draw indexes them: the swapped world's class `i` is the counterpart of the
    default world's, so the same random number plants a class in one world and its counterpart in the other."""
    return tuple(PARTNERS[name] for name in EVENT_NAMES) if swap_event_roles else tuple(EVENT_NAMES)


@functools.lru_cache(maxsize=256)
def _cumulative(scene: str, event_informativeness: float, swap_event_roles: bool) -> np.ndarray:
    p = np.array(list(planted_event_probabilities(scene, event_informativeness, swap_event_roles).values()))
    cdf = np.cumsum(p / p.sum())
    cdf.setflags(write=False)  # shared by every caller (cached)
    return cdf


def check_unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"synthetic `{name}` must be in [0, 1], got {value}")


def _normalised(table: dict[str, float]) -> dict[str, float]:
    total = sum(table.values())
    return {name: weight / total for name, weight in table.items()}


@functools.lru_cache(maxsize=2)
def _mean_table(swap_event_roles: bool = False) -> dict[str, float]:
    """The mean of the ten scenes' normalised tables: how strongly scenes favour each of their classes."""
    tables = scene_events(swap_event_roles)
    mean = dict.fromkeys(correlated_events(swap_event_roles), 0.0)
    for table in tables.values():
        for name, p in _normalised(table).items():
            mean[name] += p / len(tables)
    return mean
