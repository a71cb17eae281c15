"""The embedded default data: a synthetic scene set and a synthetic event set, generated from a seed.

Nothing is downloaded. Both sets have the columns of the real sources (`audio` as undecoded WAV
bytes, `scene` / `events` as `ClassLabel`s, `duration`), so they take the same path through the
subset builder, the feature cache and the trainer.

World version 5 (`WORLD_VERSION`), with a planted scene-event link:

- Events (40 classes, "Speech" and "Music" among them) are distinct spectro-temporal patterns, all
  tonal, in 20 pairs. The first of a pair is planted in scenes in the default world (the
  "correlated" classes, `CORRELATED_EVENTS`: harmonic stacks, speech-like and chord patterns, AM
  and FM tones, pure tones, a rising chirp, struck partials); the second, its counterpart
  (`COUNTERPARTS`), has the same frequency and harmonics and another temporal pattern (falling
  chirps, trills, tone pips, dual tones, arpeggios) and occurs in no scene (`UNCORRELATED_EVENTS`).
- `swap_event_roles` trades the roles: every scene plants its classes' counterparts, and the default
  planted classes are in no scene's table. Two sets of classes never sound exactly alike, and what
  learning one set rather than the other does to the scene task has no fixed sign (pilots where nothing
  was planted: -0.05 to +0.03 of scene accuracy, by the classes chosen); a study that runs half its
  seeds in each world counterbalances it, so that only the link tells correlated from uncorrelated
  classes apart (`mini.py`).
- A scene clip is a background texture (coloured noise whose spectral envelope belongs to the
  scene) plus one planted event that is NOT annotated, quiet (-20 - 12 difficulty dB, +-3 dB).
  Each scene has its own two classes (`scene_events()`: a main one twice as frequent as the other),
  and the main classes of the scenes of a background group are one family at different
  frequencies (AM tones in halls, harmonic stacks in vehicles, FM tones outdoors; with roles swapped,
  trills, tone pips with harmonics, falling chirps), so telling
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
fraction of a scene's clips that hold each class); `scene_clip_events` returns the event planted in one
clip of a generated split, without rendering audio.

Generation is deterministic: clip `i` of a split draws from `numpy.random.default_rng((seed, split, kind, i, ...))`,
and `datasets.Dataset.from_generator` caches the result by its arguments (the world version and every
knob among them, so a changed knob or generator never reuses a stale cache).
"""

from __future__ import annotations

import functools

import datasets
import numpy as np

from .audio import AUDIO_FEATURE, encode_wav

WORLD_VERSION = 5
SAMPLING_RATE = 16000
CLIP_SECONDS = 2.0
DEFAULT_DIFFICULTY = 0.6
DEFAULT_EVENT_INFORMATIVENESS = 0.5
LOCATIONS_PER_SCENE = 8  # `identifier` values per scene and split, like TUT's recording locations

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
    ("Truck beeper", "tone_pips+harmonics", 420),
    ("Laser", "chirp_down", 900),
    ("Music box", "arpeggio", 1200),
    ("Warbler", "trill", 1400),
    ("Slide whistle", "chirp_down", 2200),
    ("Level crossing", "tone_pips+harmonics", 220),
    ("Touch tone", "dual_tone", 4200),
    ("Canary", "trill", 2800),
    ("Harmonica", "trill+harmonics", 110),
    ("Foghorn", "dual_tone+harmonics", 180),
    ("Xylophone", "arpeggio", 700),
    ("Doorbell", "dual_tone", 2000),
    ("Phone line", "dual_tone", 1000),
    ("Reversing beeper", "tone_pips+harmonics", 330),
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
PITCHED_FAMILIES = ("chirp_down", "trill", "tone_pips", "dual_tone", "arpeggio")  # the counterparts' families


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
_GROUP_OF = {scene: index for index, group in enumerate(BACKGROUND_GROUPS) for scene in group}

SPLIT_IDS = {"train": 0, "test": 1, "validation": 2}


def planted_event_probabilities(scene: str, event_informativeness: float = DEFAULT_EVENT_INFORMATIVENESS,
                                swap_event_roles: bool = False) -> dict[str, float]:
    """The distribution of one planted event in a clip of `scene` (class name → probability; sums to 1).

    `informativeness * own table + (1 - informativeness) / 40` over all 40 classes: at 1 only the scene's own
    classes occur; at 0 every class is equally likely in every scene, so the events say nothing about the
    scene and the correlated and uncorrelated classes are alike in how often scenes hold them.
    """
    _check_unit("event_informativeness", event_informativeness)
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


def scene_clip_events(seed: int, split: str, index: int, difficulty: float = DEFAULT_DIFFICULTY,
                      event_informativeness: float = DEFAULT_EVENT_INFORMATIVENESS, swap_event_roles: bool = False) -> list[str]:
    """The events planted in clip `index` of scene split `split` (what `load_synthetic_scenes` renders)."""
    scene = SCENES[index % len(SCENES)]
    return draw_scene_events(_scene_rngs(seed, split, index)[0], scene, event_informativeness, swap_event_roles)


def draw_scene_events(rng: np.random.Generator, scene: str, event_informativeness: float,
                      swap_event_roles: bool = False) -> list[str]:
    """Draw the planted event of one scene clip: one class from `planted_event_probabilities` (a list, for the
    renderer). The same draw in the swapped world gives the counterpart of the default world's class."""
    order = _draw_order(swap_event_roles)
    cdf = _cumulative(scene, float(event_informativeness), bool(swap_event_roles))
    pick = np.searchsorted(cdf, rng.random(), side="right")  # inverse CDF
    return [order[min(int(pick), len(order) - 1)]]


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
    counterpart instead (`scene_events`); the backgrounds and every random draw stay the same.
    """
    _check_unit("difficulty", difficulty)
    _check_unit("event_informativeness", event_informativeness)
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
    return _generate(_scene_rows, features, splits, seed=seed, difficulty=difficulty, clip_seconds=clip_seconds,
                     event_informativeness=float(event_informativeness), swap_event_roles=bool(swap_event_roles))


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
    _check_unit("difficulty", difficulty)
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


def _check_unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"synthetic `{name}` must be in [0, 1], got {value}")


def _check_count(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"synthetic `{name}` must be a whole number >= 1, got {value!r}")


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


# --- rendering -------------------------------------------------------------------------------------


def render_scene_clip(rng: np.random.Generator, scene: str, difficulty: float, clip_seconds: float,
                      event_informativeness: float, events: list[str]) -> np.ndarray:
    """A scene clip: the scene's background texture + the unannotated planted `events`. Returns (samples,) float32."""
    num_samples = int(clip_seconds * SAMPLING_RATE)
    envelope = _scene_envelope(scene, difficulty, rng, event_informativeness)
    clip = _coloured_noise(rng, num_samples, envelope) * 0.05
    event_gain = 10 ** ((-20.0 - 12.0 * difficulty + rng.uniform(-3, 3)) / 20)
    for name in events:
        clip += event_gain * _place(rng, render_event(rng, name), num_samples)
    return _device(rng, clip, difficulty)


def render_event_clip(rng: np.random.Generator, difficulty: float, clip_seconds: float):
    """An event clip: 1-3 annotated events over neutral noise. Returns ((samples,) float32, label ids)."""
    num_samples = int(clip_seconds * SAMPLING_RATE)
    envelope = _tilt_envelope(rng.uniform(-1.0, 0.0))
    clip = _coloured_noise(rng, num_samples, envelope) * 0.03
    # Speech and Music are the most frequent tags, as in AudioSet.
    weights = np.ones(len(EVENTS))
    weights[:2] = 6.0
    count = 1 + rng.binomial(2, 0.35)
    labels = sorted(rng.choice(len(EVENTS), size=count, replace=False, p=weights / weights.sum()).tolist())
    for label in labels:
        gain = 10 ** ((-4.0 - 6.0 * difficulty + rng.uniform(-4, 4)) / 20)
        clip += gain * _place(rng, render_event(rng, EVENT_NAMES[label]), num_samples)
    return _device(rng, clip, difficulty * 0.5), labels


def render_event(rng: np.random.Generator, name: str) -> np.ndarray:
    """One occurrence of event class `name` (0.3-1.2 s, peak about 1). Returns (samples,) float32."""
    _, kind, freq = EVENTS[EVENT_NAMES.index(name)]
    family, _, rich = kind.partition("+")  # "trill+harmonics": a trill of harmonic stacks
    duration = rng.uniform(0.3, 1.2)
    t = np.arange(int(duration * SAMPLING_RATE)) / SAMPLING_RATE
    freq = freq * rng.uniform(0.95, 1.05)
    if kind == "speech":  # voiced harmonics with a wandering pitch and syllable-rate AM
        f0 = freq * (1 + 0.15 * np.sin(2 * np.pi * 3 * t + rng.uniform(0, 6)))
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLING_RATE
        signal = sum(np.sin(h * phase) / h for h in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4.5 * t) ** 2)
    elif kind == "chord":  # a major triad with harmonics, note changes every 0.25 s
        root = freq * 2 ** (rng.integers(0, 5, size=int(duration / 0.25) + 1)[(t / 0.25).astype(int)] / 12)
        phase = 2 * np.pi * np.cumsum(root) / SAMPLING_RATE
        signal = sum(np.sin(r * h * phase) / h for r in (1, 1.26, 1.5) for h in range(1, 4))
    elif kind == "harmonic":
        signal = sum(np.sin(2 * np.pi * freq * h * t) / h for h in range(1, 8))
    elif kind == "harmonic_decay":  # struck: inharmonic partials decaying
        signal = sum(np.sin(2 * np.pi * freq * p * t) * np.exp(-t * (3 + 2 * p)) for p in (1, 2.76, 5.4))
    elif kind == "fm_tone":
        signal = np.sin(2 * np.pi * freq * t + (freq * 0.2 / 6) * np.sin(2 * np.pi * 6 * t))
    elif kind == "am_tone":
        signal = np.sin(2 * np.pi * freq * t) * (np.sin(2 * np.pi * 12 * t) > 0)
    elif kind == "tone":
        signal = np.sin(2 * np.pi * freq * t)
    elif kind == "chirp_up":
        signal = np.sin(2 * np.pi * freq * (t + 2.0 * t**2))
    elif family in PITCHED_FAMILIES:
        signal = _pitched(family, freq, t, duration, harmonics=7 if rich else 1)
    else:  # pragma: no cover - the table above is closed
        raise ValueError(f"unknown event kind {kind!r}")
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)
    signal = signal * fade
    return (signal / (np.abs(signal).max() + 1e-9)).astype(np.float32)


def _pitched(family: str, freq: float, t: np.ndarray, duration: float, harmonics: int) -> np.ndarray:
    """The families no scene plants: a pitch track (gated, for pips), as a pure tone or with `harmonics` partials."""
    pitch, gate, ratios = np.full(t.shape, freq), 1.0, (1.0,)
    if family == "chirp_down":  # half an octave down over the event, through `freq`
        pitch = freq * 2 ** (0.25 - 0.5 * t / duration)
    elif family == "trill":  # two pitches a minor third apart, alternating 15 times a second
        pitch = freq * np.where(np.sin(2 * np.pi * 7.5 * t) > 0, 1.19, 1.0)
    elif family == "arpeggio":  # four rising notes over a fourth, 0.1 s each, repeated
        pitch = freq * 2 ** (np.array([0, 2, 4, 5])[(t / 0.1).astype(int) % 4] / 12)
    elif family == "tone_pips":  # 50 ms pips, four a second
        gate = (t * 4) % 1 < 0.2
    elif family == "dual_tone":  # two steady tones a fourth apart
        ratios = (1.0, 1.335)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLING_RATE
    return gate * sum(np.sin(ratio * h * phase) / h for ratio in ratios for h in range(1, harmonics + 1))


def _place(rng: np.random.Generator, event: np.ndarray, num_samples: int) -> np.ndarray:
    out = np.zeros(num_samples, dtype=np.float32)
    event = event[:num_samples]
    start = rng.integers(0, num_samples - event.size + 1)
    out[start : start + event.size] = event
    return out


def _frequencies(num_samples: int) -> np.ndarray:
    return np.fft.rfftfreq(num_samples, 1 / SAMPLING_RATE)


def _coloured_noise(rng: np.random.Generator, num_samples: int, envelope) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(num_samples)) * envelope(_frequencies(num_samples))
    noise = np.fft.irfft(spectrum, n=num_samples)
    return (noise / (noise.std() + 1e-9)).astype(np.float32)


def _tilt_envelope(slope: float):
    return lambda freqs: (np.maximum(freqs, 20.0) / 1000.0) ** (slope / 2)


def _scene_envelope(scene: str, difficulty: float, rng: np.random.Generator,
                    event_informativeness: float = DEFAULT_EVENT_INFORMATIVENESS):
    """The scene's background spectrum (log-domain bumps).

    Its own shape is blended toward its group's shape by `event_informativeness` (at 1 the scenes of a
    group share one background), then toward one shape shared by all scenes by `difficulty`.
    """
    own_centres, own_heights, own_slope = _background_shape(SCENES.index(scene) + 1000)  # fixed, independent of seed
    group_centres, group_heights, group_slope = _background_shape(_GROUP_OF[scene] + 2000)
    jitter = rng.normal(0, 0.3 * difficulty, size=3)  # per-clip wobble of the bumps

    def shape(log_f, centres, heights, slope):
        return slope * (log_f - 10) / 2 + sum(
            h * np.exp(-0.5 * ((log_f - c - j) / 0.7) ** 2) for c, h, j in zip(centres, heights, jitter)
        )

    def envelope(freqs):
        log_f = np.log2(np.maximum(freqs, 20.0))
        own = shape(log_f, own_centres, own_heights, own_slope)
        if event_informativeness > 0:
            own = (1 - event_informativeness) * own + event_informativeness * shape(log_f, group_centres, group_heights, group_slope)
        shared = -0.8 * (log_f - 10) / 2
        blend = 0.35 + 0.6 * difficulty
        return np.exp((1 - blend) * own + blend * shared)

    return envelope


def _background_shape(key: int):
    shape_rng = np.random.default_rng(key)
    centres = shape_rng.uniform(np.log2(80), np.log2(6000), size=3)
    heights = shape_rng.uniform(0.5, 1.5, size=3)
    slope = shape_rng.uniform(-1.5, -0.3)
    return centres, heights, slope


def _device(rng: np.random.Generator, clip: np.ndarray, difficulty: float) -> np.ndarray:
    """Per-clip recording-device colouration and gain, stronger with difficulty."""
    freqs = _frequencies(clip.size)
    tilt = rng.normal(0, 0.6 * difficulty)
    colour = (np.maximum(freqs, 20.0) / 1000.0) ** (tilt / 2)
    clip = np.fft.irfft(np.fft.rfft(clip) * colour, n=clip.size)
    clip = clip / (np.abs(clip).max() + 1e-9) * 10 ** (rng.uniform(-12, -1) / 20)
    return clip.astype(np.float32)
