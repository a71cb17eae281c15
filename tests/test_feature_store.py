"""The log-mel store: every distinct clip decoded once and stored once, whatever sets and splits use it; its
features equal the extractor's on the decoded audio; damage is named and repaired; bad audio is named."""

import json
import logging
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf

from sceneevent import LogMelFeatureExtractor
from sceneevent.data import feature_store, featurizing
from sceneevent.data.audio import AUDIO_FEATURE
from sceneevent.data.feature_store import BadAudioError, FeatureStore

EXTRACTOR = LogMelFeatureExtractor(num_mel_bins=16, sampling_rate=16000, clip_seconds=0.5, hop_length=160, n_fft=400)
FEATURE_BYTES = 16 * EXTRACTOR.num_frames * 2  # one clip's fp16 features


def wav_files(folder: Path, count: int, start: int = 0) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(start, start + count):
        path = folder / f"clip{index}.wav"
        if not path.exists():
            rate = 16000 if index % 3 else 22050  # two rates: resampled clips too
            waveform = np.random.default_rng(index).standard_normal(rate // 2).astype(np.float32) * 0.1
            sf.write(path, waveform, rate)
        paths.append(str(path))
    return paths


def event_set(paths: list[str]) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {"audio": [{"bytes": None, "path": path} for path in paths], "events": [[i % 3] for i in range(len(paths))]},
        features=datasets.Features({"audio": AUDIO_FEATURE, "events": datasets.Sequence(datasets.ClassLabel(num_classes=3))}),
    )


def expected_features(path: str) -> np.ndarray:
    """The extractor on the file as soundfile decodes it: what the store must hold for the clip."""
    waveform, rate = sf.read(path, dtype="float32", always_2d=True)
    return EXTRACTOR([waveform.T], sampling_rate=rate, return_tensors="np")["input_features"][0].astype(np.float16)


def assert_features_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    # Within one fp16 rounding: a batched STFT sums in another order than one clip's (1 value in ~30,000).
    np.testing.assert_allclose(actual.astype(np.float32), expected.astype(np.float32), rtol=2**-10, atol=0)


def read_rows(stored) -> np.ndarray:
    """Every row of a stored split, read straight from its segment files with numpy."""
    arrays = [np.load(path, mmap_mode="r") for path in stored.segment_paths]
    return np.stack([arrays[segment][row] for segment, row in stored.locations])


def count_decodes(monkeypatch) -> list[str]:
    decoded = []
    real = featurizing.load_audio

    def counting(entry):
        decoded.append(entry["path"])
        return real(entry)

    monkeypatch.setattr(featurizing, "load_audio", counting)
    return decoded


def store_bytes(store: FeatureStore) -> int:
    return sum(path.stat().st_size for path in store.folder.iterdir() if path.is_file() and path.name != ".lock")


def test_overlapping_sets_decode_each_clip_once_and_store_it_once(tmp_path, monkeypatch):
    decoded = count_decodes(monkeypatch)
    store = FeatureStore(tmp_path / "store", EXTRACTOR)
    first_paths = wav_files(tmp_path / "wav", 40)
    second_paths = first_paths[20:] + wav_files(tmp_path / "wav", 20, start=40)  # half its clips are shared
    first, _ = store.store_split(event_set(first_paths + first_paths[:5]), split_name="event_train")  # 5 repeats
    assert sorted(decoded) == sorted(first_paths)  # the repeated rows are not decoded twice
    after_first = store_bytes(store)
    assert after_first <= 1.10 * 40 * FEATURE_BYTES
    second, _ = store.store_split(event_set(second_paths), split_name="event_train")
    assert sorted(decoded) == sorted(first_paths + second_paths[20:])  # only its 20 new clips
    assert store_bytes(store) - after_first <= 1.15 * 20 * FEATURE_BYTES
    third, _ = store.store_split(event_set(second_paths[::2]), split_name="event_train")  # a selection: nothing new
    assert len(decoded) == 60 and len(third) == 20
    for stored, paths in ((first, first_paths + first_paths[:5]), (second, second_paths), (third, second_paths[::2])):
        assert_features_equal(read_rows(stored), np.stack([expected_features(p) for p in paths]))
        assert stored.dataset["events"] == [[i % 3] for i in range(len(paths))]


def test_two_worker_threads_store_the_same_features(tmp_path):
    paths = wav_files(tmp_path / "wav", 70)
    one, _ = FeatureStore(tmp_path / "one", EXTRACTOR).store_split(event_set(paths), split_name="x")
    two, _ = FeatureStore(tmp_path / "two", EXTRACTOR).store_split(event_set(paths), split_name="x", num_workers=2)
    np.testing.assert_array_equal(read_rows(one), read_rows(two))


@pytest.mark.parametrize("damage", ["truncated", "zero-filled", "keys rewritten"])
def test_a_damaged_segment_is_named_and_its_clips_decoded_again(tmp_path, caplog, damage):
    paths = wav_files(tmp_path / "wav", 12)
    store = FeatureStore(tmp_path / "store", EXTRACTOR)
    store.store_split(event_set(paths), split_name="x")
    (segment,) = store.segments()
    if damage == "truncated":
        with open(segment.features_path, "r+b") as handle:
            handle.truncate(segment.features_path.stat().st_size - 100)
    elif damage == "zero-filled":
        with open(segment.features_path, "r+b") as handle:
            handle.seek(200)
            handle.write(bytes(300))
    else:
        np.save(segment.keys_path, np.load(segment.keys_path)[::-1])
    fresh = FeatureStore(tmp_path / "store", EXTRACTOR)  # another process: nothing checked yet
    with caplog.at_level(logging.WARNING):
        stored, _ = fresh.store_split(event_set(paths), split_name="x")
    assert str(segment.features_path if damage != "keys rewritten" else segment.keys_path) in caplog.text
    assert_features_equal(read_rows(stored), np.stack([expected_features(p) for p in paths]))
    assert len(fresh.segments()) == 1 and not segment.record_path.exists()


def test_bad_audio_of_every_split_is_named_in_one_error_and_dropped_on_request(tmp_path):
    paths = wav_files(tmp_path / "wav", 6)
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really")
    loud = tmp_path / "loud.wav"
    sf.write(loud, np.full(8000, 3e38, dtype=np.float32), 16000, subtype="FLOAT")  # finite, overflows the power
    splits = {"scene_train": event_set(paths[:3] + [str(loud)]), "scene_test": event_set(paths[3:] + [str(tmp_path / "broken.wav")])}
    store = FeatureStore(tmp_path / "store", EXTRACTOR)
    with pytest.raises(BadAudioError) as caught:
        store.store_splits(splits)
    message = str(caught.value)
    assert "2 bad audio file(s) in scene_train, scene_test" in message
    assert f"{loud}: gives non-finite log-mel features" in message and "broken.wav: cannot be decoded" in message
    stored, bad = store.store_splits(splits, skip_bad_audio=True)
    assert [len(stored["scene_train"]), len(stored["scene_test"])] == [3, 3]
    assert len(bad["scene_train"]) == 1 and len(bad["scene_test"]) == 1
    assert np.isfinite(read_rows(stored["scene_train"]).astype(np.float32)).all()


def test_a_segment_of_another_version_is_not_read(tmp_path, caplog):
    paths = wav_files(tmp_path / "wav", 4)
    store = FeatureStore(tmp_path / "store", EXTRACTOR)
    store.store_split(event_set(paths), split_name="x")
    (segment,) = store.segments()
    record = json.loads(segment.record_path.read_text())
    segment.record_path.write_text(json.dumps({**record, "format": 0}))
    with caplog.at_level(logging.WARNING):
        assert store.segments() == []
    assert "another version" in caplog.text
    stored, _ = store.store_split(event_set(paths), split_name="x")  # decoded again into a segment of this version
    assert_features_equal(read_rows(stored), np.stack([expected_features(p) for p in paths]))


def test_a_changed_file_is_a_new_clip(tmp_path):
    paths = wav_files(tmp_path / "wav", 3)
    store = FeatureStore(tmp_path / "store", EXTRACTOR)
    store.store_split(event_set(paths), split_name="x")
    sf.write(paths[0], np.zeros(8000, dtype=np.float32), 16000)  # rewritten in place: size or mtime differ
    stored, _ = store.store_split(event_set(paths), split_name="x")
    assert_features_equal(read_rows(stored)[0], expected_features(paths[0]))


def test_a_test_split_holding_training_audio_under_other_names_is_named(tmp_path, caplog):
    paths = wav_files(tmp_path / "wav", 6)
    copies = []
    for path in paths[:2]:  # byte copies of two training files, under the test split's own names
        copy = tmp_path / "test" / Path(path).name
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(Path(path).read_bytes())
        copies.append(str(copy))
    store = FeatureStore(tmp_path / "store", EXTRACTOR)
    stored, _ = store.store_splits({"scene_train": event_set(paths[:4]), "scene_test": event_set(copies + paths[4:]),
                                    "event_train": event_set(paths[4:])})
    with caplog.at_level(logging.WARNING):
        warnings = feature_store.warn_shared_clips(stored)
    assert warnings == [f"scene_test holds 2 of 4 clips whose audio is in scene_train (e.g. {copies[0]} = {paths[0]}; "
                        f"{copies[1]} = {paths[1]}): its metrics would not measure unseen audio"]
    assert warnings[0] in caplog.text  # the event split shares clips with scene_test only across tasks: not a leak
