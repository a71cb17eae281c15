"""The audio of the synthetic world: scene clips (background texture + one unannotated planted event) and
event clips (annotated events over neutral noise), each event class a spectro-temporal pattern."""

from __future__ import annotations

import numpy as np

from .synthetic_world import BACKGROUND_GROUPS, DEFAULT_EVENT_INFORMATIVENESS, EVENT_NAMES, EVENTS, PITCHED_FAMILIES, SCENES

SAMPLING_RATE = 16000
_GROUP_OF = {scene: index for index, group in enumerate(BACKGROUND_GROUPS) for scene in group}


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
    """The families no scene plants: a pitch track, as a pure tone or with `harmonics` partials."""
    pitch, ratios = np.full(t.shape, freq), (1.0,)
    if family == "chirp_down":  # half an octave down over the event, through `freq`
        pitch = freq * 2 ** (0.25 - 0.5 * t / duration)
    elif family == "trill":  # two pitches a minor third apart, alternating 15 times a second
        pitch = freq * np.where(np.sin(2 * np.pi * 7.5 * t) > 0, 1.19, 1.0)
    elif family == "arpeggio":  # four rising notes over a fourth, 0.1 s each, repeated
        pitch = freq * 2 ** (np.array([0, 2, 4, 5])[(t / 0.1).astype(int) % 4] / 12)
    elif family == "dual_tone":  # two steady tones a fourth apart
        ratios = (1.0, 1.335)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLING_RATE
    return sum(np.sin(ratio * h * phase) / h for ratio in ratios for h in range(1, harmonics + 1))


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
