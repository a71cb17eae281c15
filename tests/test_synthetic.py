import dataclasses
from pathlib import Path

import numpy as np
import pytest

from sceneevent.data.audio import load_audio
from sceneevent.data import synthetic, synthetic_render
from sceneevent.data.synthetic import EVENT_NAMES, SCENE_EVENTS, SCENES, load_synthetic_events, load_synthetic_scenes


@pytest.fixture(scope="module")
def small_sets():
    kwargs = dict(seed=3, difficulty=0.6)
    return (
        load_synthetic_scenes(train_clips_per_scene=2, test_clips_per_scene=1, **kwargs),
        load_synthetic_events(train_clips=12, validation_clips=4, test_clips=4, **kwargs),
    )


def test_columns_and_label_sets_match_the_real_sources(small_sets):
    scenes, events = small_sets
    assert set(scenes) == {"train", "test"} and set(events) == {"train", "validation", "test"}
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
    a = load_synthetic_events(seed=7, train_clips=3, validation_clips=1, test_clips=1)["train"]
    b = load_synthetic_events(seed=7, train_clips=3, validation_clips=1, test_clips=1)["train"]
    c = load_synthetic_events(seed=8, train_clips=3, validation_clips=1, test_clips=1)["train"]
    assert a["audio"] == b["audio"] and a["events"] == b["events"]
    assert a["audio"] != c["audio"]


def test_scene_generation_is_deterministic_per_seed_and_renderer():
    """Same seed → the same bytes, from the cache and from the renderer afresh; another seed → other bytes."""
    kwargs = dict(train_clips_per_scene=1, test_clips_per_scene=1)
    a = load_synthetic_scenes(seed=5, **kwargs)["train"]
    b = load_synthetic_scenes(seed=5, **kwargs)["train"]
    c = load_synthetic_scenes(seed=6, **kwargs)["train"]
    assert a["audio"] == b["audio"] and a["identifier"] == b["identifier"]
    assert all(x["bytes"] != y["bytes"] for x, y in zip(a["audio"], c["audio"]))
    fresh = list(synthetic._scene_rows(seed=5, split="train", count=1, difficulty=0.6, clip_seconds=2.0,
                                       event_informativeness=0.5, swap_event_roles=False, world_version=synthetic.WORLD_VERSION))
    assert [row["audio"]["bytes"] for row in fresh] == [row["bytes"] for row in a["audio"]]


def test_a_changed_knob_gives_other_data_and_another_cache():
    kwargs = dict(seed=5, train_clips_per_scene=1, test_clips_per_scene=1)
    low = load_synthetic_scenes(event_informativeness=0.0, **kwargs)["train"]
    high = load_synthetic_scenes(event_informativeness=1.0, **kwargs)["train"]
    harder = load_synthetic_scenes(event_informativeness=0.0, difficulty=0.9, **kwargs)["train"]
    assert low._fingerprint != high._fingerprint != harder._fingerprint != low._fingerprint
    assert {f["filename"] for f in low.cache_files}.isdisjoint(f["filename"] for f in high.cache_files)
    assert all(x["bytes"] != y["bytes"] for x, y in zip(low["audio"], high["audio"]))


def test_some_event_classes_occur_in_no_scene():
    in_scenes = {name for events in SCENE_EVENTS.values() for name in events}
    assert in_scenes <= set(EVENT_NAMES)
    assert len(set(EVENT_NAMES) - in_scenes) >= 5
    assert set(synthetic.CORRELATED_EVENTS) == in_scenes and len(synthetic.CORRELATED_EVENTS) == 20
    assert set(synthetic.UNCORRELATED_EVENTS) == set(EVENT_NAMES) - in_scenes and len(synthetic.UNCORRELATED_EVENTS) == 20
    for scene in SCENES:  # at informativeness 1 an uncorrelated class is never planted; below, at the uniform rate only
        at_one = synthetic.planted_event_probabilities(scene, 1.0)
        assert {name for name, p in at_one.items() if p > 0} <= set(synthetic.CORRELATED_EVENTS)
        half = synthetic.planted_event_probabilities(scene, 0.5)
        assert all(half[name] == pytest.approx(0.5 / 40) for name in synthetic.UNCORRELATED_EVENTS)


def band_profile(names, bands=8, draws=10):
    """Mean share of each class's power in `bands` log-spaced bands from 60 Hz to 8 kHz (by FFT, by hand)."""
    rng = np.random.default_rng(0)
    edges = np.geomspace(60, 8000, bands + 1)
    shares = []
    for name in names:
        for _ in range(draws):
            event = synthetic_render.render_event(rng, name)
            power = np.abs(np.fft.rfft(event)) ** 2
            band = np.digitize(np.fft.rfftfreq(event.size, 1 / synthetic.SAMPLING_RATE), edges) - 1
            shares.append([power[band == b].sum() / power.sum() for b in range(bands)])
    return np.mean(shares, axis=0)


def test_the_planted_and_never_planted_sets_cover_the_same_bands():
    # The k = 10 sets the mini reproduction compares: the ten main classes and their ten counterparts. Where one set
    # has a tenth of its power or more, the other has within a factor of two of it, so neither set alone teaches a band.
    ranking = synthetic.ground_truth_ranking()
    planted, never = band_profile(ranking[:10]), band_profile(ranking[-10:])
    assert set(ranking[-10:]) <= set(synthetic.UNCORRELATED_EVENTS)
    for b in np.flatnonzero(np.maximum(planted, never) >= 0.1):
        assert 0.5 <= never[b] / planted[b] <= 2.0, (b, planted.round(3), never.round(3))
    # The check can fail: the never-planted pure tones alone (no harmonic stacks) leave the low bands to the planted set.
    kinds = {name: kind for name, kind, _ in synthetic.EVENTS}
    pure = band_profile([name for name in synthetic.UNCORRELATED_EVENTS if not kinds[name].endswith("+harmonics")])
    assert any(not 0.5 <= pure[b] / planted[b] <= 2.0 for b in np.flatnonzero(np.maximum(planted, pure) >= 0.1))


def test_the_identifier_gives_each_scene_several_locations():
    scenes = load_synthetic_scenes(seed=3, train_clips_per_scene=16, test_clips_per_scene=1, clip_seconds=0.1)["train"]
    locations = {}
    for scene, identifier in zip(scenes["scene"], scenes["identifier"]):
        assert identifier.startswith(SCENES[scene] + "-train-")
        locations.setdefault(scene, set()).add(identifier)
    assert all(len(ids) == synthetic.LOCATIONS_PER_SCENE for ids in locations.values()) and len(locations) == 10


def test_events_are_distinct_patterns():
    rng = np.random.default_rng(0)
    spectra = {}
    for name in ("Speech", "Music", "Siren", "Doorbell", "Xylophone", "Bell"):
        event = synthetic_render.render_event(rng, name)
        spectrum = np.abs(np.fft.rfft(event, n=8192))
        spectra[name] = spectrum / np.linalg.norm(spectrum)
    names = list(spectra)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert float(spectra[a] @ spectra[b]) < 0.9, (a, b)


def test_difficulty_outside_unit_interval_is_an_error():
    with pytest.raises(ValueError, match="difficulty"):
        load_synthetic_scenes(difficulty=1.5)
    with pytest.raises(ValueError, match="event_informativeness"):
        load_synthetic_scenes(event_informativeness=-0.1)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="test_clips_per_scene"):
            load_synthetic_scenes(test_clips_per_scene=bad)
    with pytest.raises(ValueError, match="train_clips_per_scene"):
        load_synthetic_scenes(train_clips_per_scene=0)


def test_the_size_flags_reach_the_scene_set():
    from sceneevent.training.arguments import DataArguments
    from sceneevent.training.preparation import load_splits

    args = DataArguments(synthetic_train_clips_per_scene=2, synthetic_test_clips_per_scene=3, asc_validation_split=0,
                         synthetic_seed=5)
    splits, scene_labels, _ = load_splits(args, need_events=False)
    assert splits["scene_train"].num_rows == 2 * len(SCENES) and splits["scene_test"].num_rows == 3 * len(SCENES)
    assert sorted(splits["scene_test"]["scene"]) == sorted(list(range(len(SCENES))) * 3)



# --- the planted scene-event link (world v2, v3) ---------------------------------------------------------

CLIPS_PER_SCENE = 1000  # event draws only, no audio: about 1 s per 10,000 clips


def _planted(informativeness: float, clips_per_scene: int = CLIPS_PER_SCENE, seed: int = 11) -> dict[str, list[list[str]]]:
    """The events planted in the first `clips_per_scene` clips of each scene of a generated train split."""
    planted = {scene: [] for scene in SCENES}
    for index in range(clips_per_scene * len(SCENES)):
        planted[SCENES[index % len(SCENES)]].append(
            synthetic.scene_clip_events(seed, "train", index, difficulty=0.6, event_informativeness=informativeness))
    return planted


@pytest.mark.parametrize("swap", [False, True])
def test_the_generator_plants_exactly_the_events_scene_clip_events_reports(monkeypatch, swap):
    """`scene_clip_events` is the ground truth of the rendered clips: the generator renders those events."""
    rendered = []
    original = synthetic.render_scene_clip

    def spy(rng, scene, difficulty, clip_seconds, event_informativeness, events):
        rendered.append(list(events))
        return original(rng, scene, difficulty, 0.25, event_informativeness, events)  # short clips: fast

    monkeypatch.setattr(synthetic, "render_scene_clip", spy)
    rows = list(synthetic._scene_rows(seed=4, split="test", count=2, difficulty=0.6, clip_seconds=2.0,
                                      event_informativeness=0.7, swap_event_roles=swap, world_version=synthetic.WORLD_VERSION))
    assert len(rows) == 20
    assert rendered == [synthetic.scene_clip_events(4, "test", i, 0.6, 0.7, swap_event_roles=swap) for i in range(20)]


def test_swapped_roles_plant_each_class_counterpart_in_the_same_clips():
    counterparts = synthetic.COUNTERPARTS
    assert len(counterparts) == 20 and set(counterparts) == set(synthetic.CORRELATED_EVENTS)
    assert set(counterparts.values()) == set(synthetic.UNCORRELATED_EVENTS)
    # The roles trade places: the default world's never-planted classes are the swapped world's planted ones.
    assert set(synthetic.correlated_events(True)) == set(synthetic.UNCORRELATED_EVENTS)
    assert set(synthetic.uncorrelated_events(True)) == set(synthetic.CORRELATED_EVENTS)
    # The same clip draws the partner of the default world's event, at the same rates.
    partner = {**counterparts, **{counterpart: name for name, counterpart in counterparts.items()}}
    for index in range(60):
        default = synthetic.scene_clip_events(2, "train", index, event_informativeness=0.6)
        swapped = synthetic.scene_clip_events(2, "train", index, event_informativeness=0.6, swap_event_roles=True)
        assert swapped == [partner[name] for name in default]
    for scene in SCENES:
        default = synthetic.planted_event_probabilities(scene, 0.4)
        swapped = synthetic.planted_event_probabilities(scene, 0.4, swap_event_roles=True)
        assert swapped == {partner[name]: p for name, p in default.items()}
    # Each counterpart sounds at its planted class's frequency with the same harmonics, in another pattern.
    table = {name: (kind, freq) for name, kind, freq in synthetic.EVENTS}
    for name, counterpart in counterparts.items():
        assert table[counterpart][1] == table[name][1]
        assert table[counterpart][0].split("+")[0] in synthetic.PITCHED_FAMILIES
    # Within a background group the main classes' counterparts share a family, as the main classes do.
    for group in synthetic.BACKGROUND_GROUPS:
        mains = [max(SCENE_EVENTS[scene], key=SCENE_EVENTS[scene].get) for scene in group]
        assert len({table[name][0] for name in mains}) == 1
        assert len({table[counterparts[name]][0] for name in mains}) == 1


def test_swapped_roles_give_another_scene_set_with_the_same_backgrounds():
    kwargs = dict(seed=1, train_clips_per_scene=1, test_clips_per_scene=1, clip_seconds=0.5, event_informativeness=1.0)
    default = load_synthetic_scenes(**kwargs)["train"]
    swapped = load_synthetic_scenes(swap_event_roles=True, **kwargs)["train"]
    assert default._fingerprint != swapped._fingerprint  # its own cache
    assert default["scene"] == swapped["scene"] and default["identifier"] == swapped["identifier"]
    assert all(x["bytes"] != y["bytes"] for x, y in zip(default["audio"], swapped["audio"]))


def test_where_nothing_is_planted_the_swap_only_renames_the_classes():
    # At informativeness 0 the swapped world is the default world clip for clip (one cache), so a study's
    # unplanted comparison differs between role assignments only in which classes it calls correlated.
    kwargs = dict(seed=3, train_clips_per_scene=2, test_clips_per_scene=1, clip_seconds=0.5, event_informativeness=0.0)
    default, swapped = load_synthetic_scenes(**kwargs), load_synthetic_scenes(swap_event_roles=True, **kwargs)
    for split in ("train", "test"):
        assert default[split]._fingerprint == swapped[split]._fingerprint
        assert [a["bytes"] for a in default[split]["audio"]] == [a["bytes"] for a in swapped[split]["audio"]]
    assert all(synthetic.scene_clip_events(3, "train", i, event_informativeness=0.0, swap_event_roles=True)
               == synthetic.scene_clip_events(3, "train", i, event_informativeness=0.0) for i in range(40))
    # Only the names change: the ranking's top ten (correlated) in one assignment are the other's bottom ten.
    assert set(synthetic.ground_truth_ranking(True)[:10]) == set(synthetic.ground_truth_ranking(False)[-10:])


def test_planted_event_table_is_the_documented_mixture():
    for swap in (False, True):
        tables = synthetic.scene_events(swap)
        for scene in SCENES:
            own = {name: weight / sum(tables[scene].values()) for name, weight in tables[scene].items()}
            for informativeness in (0.0, 0.3, 1.0):
                p = synthetic.planted_event_probabilities(scene, informativeness, swap_event_roles=swap)
                assert set(p) == set(EVENT_NAMES) and sum(p.values()) == pytest.approx(1.0)
                for name in EVENT_NAMES:
                    assert p[name] == pytest.approx(informativeness * own.get(name, 0.0) + (1 - informativeness) / 40)
    # The data card's example: park's main class, street_traffic's, and a counterpart, at informativeness 0, 0.5 and 1.
    rates = {name: [synthetic.planted_event_probabilities("park", x)[name] for x in (0.0, 0.5, 1.0)] for name in ("Bird", "Siren", "Sonar ping")}
    assert rates["Bird"] == pytest.approx([1 / 40, 1 / 3 + 1 / 80, 2 / 3])
    assert rates["Siren"] == rates["Sonar ping"] == pytest.approx([1 / 40, 1 / 80, 0.0])


@pytest.mark.parametrize("informativeness", [0.5, 1.0])
def test_planted_events_occur_at_the_documented_rates(informativeness):
    """Count, over 1,000 clips per scene, the clips that hold each class; every clip holds one planted event.

    Tolerance: 4.5 binomial standard errors (sqrt(p (1 - p) / n), at most 0.016 here) per (scene, class)
    cell, plus 0.005 for the rarest cells. With 400 cells the chance that a correct generator fails one is
    below 0.3 %; the draws are seeded, so the test is deterministic. A wrong rate (e.g. ignoring the knob,
    or swapping two scenes' tables) misses by 0.1-0.5, i.e. 6-30 standard errors at this n.
    """
    planted = _planted(informativeness)
    assert all(len(events) == 1 for clips in planted.values() for events in clips)
    for scene, clips in planted.items():
        expected = synthetic.planted_event_probabilities(scene, informativeness)
        n = len(clips)
        for name in EVENT_NAMES:
            observed = sum(name in events for events in clips) / n
            p = expected.get(name, 0.0)
            assert abs(observed - p) <= 4.5 * np.sqrt(p * (1 - p) / n) + 0.005, (scene, name, observed, p)


def test_at_informativeness_zero_no_event_class_carries_scene_information():
    from scipy.stats import chi2_contingency

    # The sampling distribution is exactly the same for every scene ...
    tables = [synthetic.planted_event_probabilities(scene, 0.0) for scene in SCENES]
    assert all(table == tables[0] for table in tables)
    # ... and the planted events of generated clips are independent of the scene (chi-square over the
    # scene x class contingency table of 1,000 clips per scene, one event each; every expected cell >= 15).
    planted = _planted(0.0)
    classes = EVENT_NAMES
    table = np.array([[sum(events.count(name) for events in planted[scene]) for name in classes] for scene in SCENES])
    assert table.sum(axis=0).min() / len(SCENES) >= 15
    assert chi2_contingency(table).pvalue > 0.01


def test_at_high_informativeness_events_tell_apart_scenes_whose_backgrounds_are_alike():
    from scipy.stats import chi2_contingency

    freqs = np.fft.rfftfreq(32000, 1 / synthetic.SAMPLING_RATE)

    def background(scene, informativeness):
        return np.log(synthetic_render._scene_envelope(scene, 0.6, np.random.default_rng(0), informativeness)(freqs))

    for group in synthetic.BACKGROUND_GROUPS:
        first, *others = group
        for other in others:
            # At 1 the backgrounds of a group are the same; at 0 each scene has its own.
            assert np.allclose(background(first, 1.0), background(other, 1.0))
            assert np.abs(background(first, 0.0) - background(other, 0.0)).max() > 0.2
    # Across groups the backgrounds still differ at 1.
    assert np.abs(background("bus", 1.0) - background("park", 1.0)).max() > 0.2
    # The planted events of the scenes within a group differ, strongly.
    planted = _planted(1.0, clips_per_scene=300)
    for group in synthetic.BACKGROUND_GROUPS:
        table = np.array([[sum(events.count(name) for events in planted[scene]) for name in synthetic.CORRELATED_EVENTS]
                          for scene in group])
        table = table[:, table.sum(axis=0) > 0]
        assert chi2_contingency(table).pvalue < 1e-20


def test_informativeness_moves_the_scene_information_from_backgrounds_to_events():
    """Mutual information between scene and one planted event rises with the knob; at 0 it is exactly 0."""

    def mutual_information(informativeness):
        joint = np.array([list(synthetic.planted_event_probabilities(s, informativeness).values()) for s in SCENES]) / len(SCENES)
        marginal = joint.sum(axis=0, keepdims=True)
        nonzero = joint > 0
        return float((joint[nonzero] * np.log(joint[nonzero] / (marginal.repeat(len(SCENES), 0)[nonzero] / len(SCENES)))).sum())

    values = [mutual_information(x) for x in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert values[0] == pytest.approx(0.0, abs=1e-12)
    assert all(a < b for a, b in zip(values, values[1:]))
    assert values[-1] > 1.0  # nats: at 1 one event alone already says much about the scene (log 10 = 2.3)


# --- demo defaults ------------------------------------------------------------------------------------


def _card_defaults() -> dict[str, tuple[str, str]]:
    """The 'Demo defaults' table of data_cards/synthetic.md: flag → (real data, synthetic data)."""
    card = (Path(__file__).resolve().parents[1] / "data_cards" / "synthetic.md").read_text()
    section = card.split("## Demo defaults", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`--"):
            rows[cells[0].strip("`").lstrip("-")] = (cells[1], cells[2])
    return rows


def _as_text(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_demo_defaults_are_what_the_data_card_and_help_say():
    from sceneevent.training.arguments import DataArguments, JointTrainingArguments, resolve_defaults

    rows = _card_defaults()
    assert {"asc_batch_size", "aet_batch_size", "num_train_epochs", "aet_specaugment", "aet_mixup",
            "sampling_rate", "clip_seconds", "num_mel_bins", "hop_length"} <= set(rows)
    help_text = {f.name: f.metadata["help"] for cls in (DataArguments, JointTrainingArguments) for f in dataclasses.fields(cls)}
    for column, data_args in ((0, DataArguments(asc_dataset="/data/TUT-urban-acoustic-scenes-2018-development")),
                              (1, DataArguments())):
        resolved = dataclasses.asdict(resolve_defaults(data_args, JointTrainingArguments()))
        resolved.update(data_args.resolved_features())
        for name, values in rows.items():
            assert _as_text(resolved[name]) == values[column], (name, column)
            if column == 1 and resolved[name] is not True and resolved[name] is not False:
                assert f"or {values[1]} for the synthetic data" in help_text[name], name


def test_real_data_keeps_the_papers_defaults_and_explicit_values_win():
    from sceneevent.training.arguments import DataArguments, JointTrainingArguments, resolve_defaults

    real = DataArguments(asc_dataset="/data/tut2018")
    paper = resolve_defaults(real, JointTrainingArguments())
    assert (paper.asc_batch_size, paper.aet_batch_size, paper.num_train_epochs) == (64, 128, 10)
    assert paper.aet_specaugment is True and paper.aet_mixup is True
    assert real.resolved_features() == {"sampling_rate": 32000, "clip_seconds": 10.0, "num_mel_bins": 128,
                                        "hop_length": 320, "n_fft": 1024}
    demo = resolve_defaults(DataArguments(), JointTrainingArguments())
    assert (demo.asc_batch_size, demo.aet_batch_size, demo.num_train_epochs) == (16, 48, 10)
    assert demo.aet_specaugment is False and demo.aet_mixup is False
    explicit = resolve_defaults(DataArguments(), JointTrainingArguments(asc_batch_size=64, aet_mixup=True, num_train_epochs=3))
    assert (explicit.asc_batch_size, explicit.aet_mixup, explicit.num_train_epochs, explicit.aet_batch_size) == (64, True, 3, 48)
    assert resolve_defaults(DataArguments(), demo) == demo  # idempotent
