import numpy as np
import pytest

from sceneevent.audio import load_audio
from sceneevent.data import synthetic
from sceneevent.data.synthetic import EVENT_NAMES, SCENE_EVENTS, SCENES, load_synthetic_events, load_synthetic_scenes


@pytest.fixture(scope="module")
def small_sets():
    kwargs = dict(seed=3, difficulty=0.6)
    return (
        load_synthetic_scenes(train_clips_per_scene=2, test_clips_per_scene=1, **kwargs),
        load_synthetic_events(train_clips=12, validation_clips=4, **kwargs),
    )


def test_columns_and_label_sets_match_the_real_sources(small_sets):
    scenes, events = small_sets
    assert set(scenes) == {"train", "test"} and set(events) == {"train", "validation"}
    assert scenes["train"].features["scene"].names == SCENES and len(SCENES) == 10
    names = events["train"].features["events"].feature.names
    assert names == EVENT_NAMES and {"Speech", "Music"} <= set(names) and 35 <= len(names) <= 45
    assert {"audio", "scene"} <= set(scenes["train"].column_names)
    assert {"audio", "events"} <= set(events["train"].column_names)
    assert scenes["train"].num_rows == 20 and events["validation"].num_rows == 4
    row = events["train"][0]
    assert isinstance(row["audio"]["bytes"], bytes) and 1 <= len(row["events"]) <= 3


def test_audio_decodes_as_2_second_16k_clips(small_sets):
    scenes, _ = small_sets
    decoded = load_audio(scenes["train"][0]["audio"])
    assert decoded.sampling_rate == synthetic.SAMPLING_RATE
    assert decoded.waveform.shape == (1, int(synthetic.SAMPLING_RATE * synthetic.CLIP_SECONDS))
    assert 0 < np.abs(decoded.waveform).max() <= 1.0


def test_generation_is_deterministic_per_seed():
    a = load_synthetic_events(seed=7, train_clips=3, validation_clips=1)["train"]
    b = load_synthetic_events(seed=7, train_clips=3, validation_clips=1)["train"]
    c = load_synthetic_events(seed=8, train_clips=3, validation_clips=1)["train"]
    assert a["audio"] == b["audio"] and a["events"] == b["events"]
    assert a["audio"] != c["audio"]


def test_some_event_classes_occur_in_no_scene():
    in_scenes = {name for events in SCENE_EVENTS.values() for name in events}
    assert in_scenes <= set(EVENT_NAMES)
    assert len(set(EVENT_NAMES) - in_scenes) >= 5


def test_events_are_distinct_patterns():
    rng = np.random.default_rng(0)
    spectra = {}
    for name in ("Speech", "Music", "Siren", "Footsteps", "Rain", "Bell"):
        event = synthetic.render_event(rng, name)
        spectrum = np.abs(np.fft.rfft(event, n=8192))
        spectra[name] = spectrum / np.linalg.norm(spectrum)
    names = list(spectra)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert float(spectra[a] @ spectra[b]) < 0.9, (a, b)


def test_difficulty_outside_unit_interval_is_an_error():
    with pytest.raises(ValueError, match="difficulty"):
        load_synthetic_scenes(difficulty=1.5)
