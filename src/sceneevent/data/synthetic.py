"""The embedded default data: a synthetic scene set and a synthetic event set, generated from a seed.

Nothing is downloaded. Both sets have the columns of the real sources (`audio` as undecoded WAV
bytes, `scene` / `events` as `ClassLabel`s, `duration`), so they take the same path through the
subset builder, the feature cache and the trainer.

- Events (40 classes, "Speech" and "Music" among them) are distinct spectro-temporal patterns:
  harmonic stacks, chirps, impulses, noise bands, periodic pulses, AM and FM tones.
- A scene clip is a background texture (coloured noise whose spectral envelope belongs to the
  scene) plus scene-typical events that are NOT annotated. 10 event classes occur in no scene.
- `difficulty` in [0, 1] blends the scene backgrounds toward one shared texture, adds per-clip
  "device" colouration and gain, lowers the event level and adds events typical of other scenes.
  At the default the backgrounds alone do not tell the scenes apart well, so scene-only training
  stays clearly below 100 % and the events carry part of the scene identity.

Generation is deterministic: clip `i` of a split draws from `numpy.random.default_rng((seed, split, i))`,
and `datasets.Dataset.from_generator` caches the result by its arguments.
"""

from __future__ import annotations

import datasets
import numpy as np

from ..audio import AUDIO_FEATURE, encode_wav

SAMPLING_RATE = 16000
CLIP_SECONDS = 2.0

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
    ("Speech", "speech", 160),
    ("Music", "chord", 262),
    ("Dog", "harmonic_burst", 500),
    ("Bird", "fm_tone", 3500),
    ("Car horn", "harmonic", 420),
    ("Siren", "fm_tone", 900),
    ("Footsteps", "impulsive", 600),
    ("Door", "impulsive", 250),
    ("Engine", "harmonic", 60),
    ("Bell", "harmonic_decay", 1200),
    ("Telephone", "am_tone", 1400),
    ("Laughter", "harmonic_burst", 300),
    ("Baby cry", "fm_tone", 450),
    ("Whistle", "fm_tone", 2200),
    ("Applause", "noise_band", 3000),
    ("Train horn", "harmonic", 220),
    ("Brakes squeal", "tone", 4200),
    ("Alarm", "am_tone", 2800),
    ("Hammer", "periodic", 1800),
    ("Knock", "periodic", 400),
    ("Cough", "noise_burst", 900),
    ("Clapping", "periodic", 2500),
    ("Typing", "periodic", 5000),
    ("Water tap", "noise_band", 1500),
    ("Wind chime", "harmonic_decay", 3200),
    ("Helicopter", "periodic", 120),
    ("Motorcycle", "harmonic", 110),
    ("Chainsaw", "harmonic", 180),
    ("Drill", "am_tone", 700),
    ("Cash register", "harmonic_decay", 2000),
    ("Beep", "tone", 1000),
    ("Buzzer", "harmonic", 330),
    ("Ringtone", "am_tone", 1750),
    ("Cat", "fm_tone", 650),
    ("Crow", "harmonic_burst", 900),
    ("Frog", "periodic", 800),
    ("Cricket", "am_tone", 4500),
    ("Thunder", "noise_burst", 100),
    ("Rain", "noise_band", 5500),
    ("Chirp up", "chirp_up", 1000),
]
EVENT_NAMES = [name for name, _, _ in EVENTS]

# The events each scene produces (unannotated), with relative rates. Ten classes appear in no scene:
# Dog, Laughter, Baby cry, Hammer, Cough, Typing, Wind chime, Frog, Cricket, Thunder.
SCENE_EVENTS = {
    "airport": {"Speech": 3, "Beep": 2, "Engine": 1, "Footsteps": 1, "Ringtone": 1},
    "bus": {"Engine": 3, "Beep": 1, "Speech": 2, "Brakes squeal": 1, "Door": 1},
    "metro": {"Brakes squeal": 2, "Alarm": 2, "Engine": 1, "Speech": 1, "Door": 1},
    "metro_station": {"Train horn": 2, "Alarm": 1, "Footsteps": 2, "Speech": 2, "Brakes squeal": 1},
    "park": {"Bird": 4, "Speech": 1, "Whistle": 1, "Water tap": 1, "Rain": 1},
    "public_square": {"Speech": 2, "Bell": 2, "Applause": 1, "Bird": 1, "Music": 1, "Footsteps": 1},
    "shopping_mall": {"Music": 3, "Speech": 2, "Cash register": 2, "Telephone": 1},
    "street_pedestrian": {"Footsteps": 3, "Speech": 2, "Clapping": 1, "Siren": 1, "Cat": 1},
    "street_traffic": {"Car horn": 3, "Engine": 2, "Motorcycle": 2, "Siren": 1, "Helicopter": 1},
    "tram": {"Bell": 2, "Buzzer": 2, "Drill": 1, "Chainsaw": 1, "Speech": 1, "Chirp up": 1},
}

SPLIT_IDS = {"train": 0, "test": 1, "validation": 2}


def load_synthetic_scenes(
    seed: int = 0,
    difficulty: float = 0.6,
    train_clips_per_scene: int = 64,
    test_clips_per_scene: int = 30,
    clip_seconds: float = CLIP_SECONDS,
) -> datasets.DatasetDict:
    """The synthetic scene set: `train` and `test`, columns `audio`, `scene`, `identifier`, `duration`."""
    _check_difficulty(difficulty)
    features = datasets.Features(
        {
            "audio": AUDIO_FEATURE,
            "scene": datasets.ClassLabel(names=SCENES),
            "identifier": datasets.Value("string"),
            "duration": datasets.Value("float32"),
        }
    )
    splits = {"train": train_clips_per_scene, "test": test_clips_per_scene}
    return _generate(_scene_rows, features, splits, seed=seed, difficulty=difficulty, clip_seconds=clip_seconds)


def load_synthetic_events(
    seed: int = 0,
    difficulty: float = 0.6,
    train_clips: int = 1280,
    validation_clips: int = 320,
    clip_seconds: float = CLIP_SECONDS,
) -> datasets.DatasetDict:
    """The synthetic event set: `train` and `validation`, columns `audio`, `events`, `duration`."""
    _check_difficulty(difficulty)
    features = datasets.Features(
        {
            "audio": AUDIO_FEATURE,
            "events": datasets.Sequence(datasets.ClassLabel(names=EVENT_NAMES)),
            "duration": datasets.Value("float32"),
        }
    )
    splits = {"train": train_clips, "validation": validation_clips}
    return _generate(_event_rows, features, splits, seed=seed, difficulty=difficulty, clip_seconds=clip_seconds)


def _generate(rows, features: datasets.Features, splits: dict[str, int], **kwargs) -> datasets.DatasetDict:
    """One `from_generator` split per entry of `splits` (name → count); datasets caches each by its arguments."""
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_generator(
                rows, features=features, gen_kwargs=dict(split=split, count=count, **kwargs), split=datasets.NamedSplit(split)
            )
            for split, count in splits.items()
        }
    )


def _check_difficulty(difficulty: float) -> None:
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"synthetic `difficulty` must be in [0, 1], got {difficulty}")


def _scene_rows(seed: int, split: str, count: int, difficulty: float, clip_seconds: float):
    for index in range(count * len(SCENES)):  # count clips per scene
        scene = index % len(SCENES)
        rng = np.random.default_rng((seed, SPLIT_IDS[split], 1, index))
        waveform = render_scene_clip(rng, SCENES[scene], difficulty, clip_seconds)
        # Identifier groups clips like TUT's recording locations: 8 "locations" per scene.
        yield {
            "audio": {"bytes": encode_wav(waveform, SAMPLING_RATE), "path": f"synthetic/{split}/scene_{index:05d}.wav"},
            "scene": scene,
            "identifier": f"{SCENES[scene]}-{split}-{(index // len(SCENES)) % 8}",
            "duration": clip_seconds,
        }


def _event_rows(seed: int, split: str, count: int, difficulty: float, clip_seconds: float):
    for index in range(count):
        rng = np.random.default_rng((seed, SPLIT_IDS[split], 2, index))
        waveform, labels = render_event_clip(rng, difficulty, clip_seconds)
        yield {
            "audio": {"bytes": encode_wav(waveform, SAMPLING_RATE), "path": f"synthetic/{split}/event_{index:05d}.wav"},
            "events": labels,
            "duration": clip_seconds,
        }


# --- rendering -------------------------------------------------------------------------------------


def render_scene_clip(rng: np.random.Generator, scene: str, difficulty: float, clip_seconds: float) -> np.ndarray:
    """A scene clip: the scene's background texture + unannotated scene events. Returns (samples,) float32."""
    num_samples = int(clip_seconds * SAMPLING_RATE)
    envelope = _scene_envelope(scene, difficulty, rng)
    clip = _coloured_noise(rng, num_samples, envelope) * 0.05
    rates = SCENE_EVENTS[scene]
    names, weights = list(rates), np.array(list(rates.values()), dtype=float)
    event_gain = 10 ** ((-6.0 - 12.0 * difficulty + rng.uniform(-3, 3)) / 20)
    for _ in range(rng.poisson(1.0 + 1.5 * (1 - difficulty)) + 1):
        if rng.random() < 0.5 * difficulty:  # an event typical of another scene
            other = SCENES[rng.integers(len(SCENES))]
            name = rng.choice(list(SCENE_EVENTS[other]))
        else:
            name = names[rng.choice(len(names), p=weights / weights.sum())]
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
    elif kind == "harmonic_burst":  # short harmonic barks
        gate = (np.sin(2 * np.pi * 5 * t) > 0.3).astype(float)
        signal = gate * sum(np.sin(2 * np.pi * freq * h * t) / h for h in range(1, 6))
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
    elif kind == "periodic":  # short filtered clicks at a class-specific rate
        rate = 4 + (freq % 7)
        clicks = (np.sin(2 * np.pi * rate * t) > 0.95).astype(float)
        signal = _bandpass(rng, clicks * rng.standard_normal(t.size), freq, 0.5)
    elif kind == "impulsive":
        signal = _bandpass(rng, rng.standard_normal(t.size) * np.exp(-t * 25), freq, 0.8)
    elif kind == "noise_burst":
        signal = _bandpass(rng, rng.standard_normal(t.size) * np.exp(-t * 6), freq, 1.0)
    elif kind == "noise_band":
        signal = _bandpass(rng, rng.standard_normal(t.size), freq, 0.4)
    else:  # pragma: no cover - the table above is closed
        raise ValueError(f"unknown event kind {kind!r}")
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)
    signal = signal * fade
    return (signal / (np.abs(signal).max() + 1e-9)).astype(np.float32)


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


def _bandpass(rng: np.random.Generator, signal: np.ndarray, centre: float, octaves: float) -> np.ndarray:
    freqs = _frequencies(signal.size)
    gain = np.exp(-0.5 * (np.log2(np.maximum(freqs, 1.0) / centre) / octaves) ** 2)
    return np.fft.irfft(np.fft.rfft(signal) * gain, n=signal.size)


def _tilt_envelope(slope: float):
    return lambda freqs: (np.maximum(freqs, 20.0) / 1000.0) ** (slope / 2)


def _scene_envelope(scene: str, difficulty: float, rng: np.random.Generator):
    """The scene's background spectrum (log-domain bumps), blended toward a shared one with difficulty."""
    shape_rng = np.random.default_rng(SCENES.index(scene) + 1000)  # fixed per scene, independent of seed
    centres = shape_rng.uniform(np.log2(80), np.log2(6000), size=3)
    heights = shape_rng.uniform(0.5, 1.5, size=3)
    slope = shape_rng.uniform(-1.5, -0.3)
    jitter = rng.normal(0, 0.3 * difficulty, size=3)  # per-clip wobble of the bumps

    def envelope(freqs):
        log_f = np.log2(np.maximum(freqs, 20.0))
        own = slope * (log_f - 10) / 2 + sum(
            h * np.exp(-0.5 * ((log_f - c - j) / 0.7) ** 2) for c, h, j in zip(centres, heights, jitter)
        )
        shared = -0.8 * (log_f - 10) / 2
        blend = 0.35 + 0.6 * difficulty
        return np.exp((1 - blend) * own + blend * shared)

    return envelope


def _device(rng: np.random.Generator, clip: np.ndarray, difficulty: float) -> np.ndarray:
    """Per-clip recording-device colouration and gain, stronger with difficulty."""
    freqs = _frequencies(clip.size)
    tilt = rng.normal(0, 0.6 * difficulty)
    colour = (np.maximum(freqs, 20.0) / 1000.0) ** (tilt / 2)
    clip = np.fft.irfft(np.fft.rfft(clip) * colour, n=clip.size)
    clip = clip / (np.abs(clip).max() + 1e-9) * 10 ** (rng.uniform(-12, -1) / 20)
    return clip.astype(np.float32)
