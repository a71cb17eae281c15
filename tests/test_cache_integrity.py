"""The log-mel cache is reused only when it is what was built: a truncated or zero-filled cache file is
named and rebuilt, and an interrupted build leaves nothing behind in the cache folder."""

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf

from sceneevent import LogMelFeatureExtractor
from sceneevent.data.audio import AUDIO_FEATURE
from sceneevent.data.feature_cache import CHECKSUMS_SUFFIX, FEATURES_SUFFIX, build_feature_cache
from sceneevent.data.loader import BatchReader

EXTRACTOR = LogMelFeatureExtractor(num_mel_bins=16, sampling_rate=16000, clip_seconds=0.5, hop_length=160, n_fft=400)


def saved_source(folder: Path, rows: int, clips: int = 8) -> datasets.Dataset:
    """An on-disk scene split of `rows` rows over `clips` distinct 0.5 s WAVs: its cache goes beside it."""
    rng = np.random.default_rng(0)
    (folder / "wav").mkdir(parents=True)
    paths = []
    for index in range(clips):
        path = folder / "wav" / f"clip{index}.wav"
        sf.write(path, rng.standard_normal(8000).astype(np.float32) * 0.1, 16000)
        paths.append(str(path))
    dataset = datasets.Dataset.from_dict(
        {"audio": [{"bytes": None, "path": paths[row % clips]} for row in range(rows)], "scene": [row % 2 for row in range(rows)]},
        features=datasets.Features({"audio": AUDIO_FEATURE, "scene": datasets.ClassLabel(names=["a", "b"])}),
    )
    dataset.save_to_disk(str(folder / "source"))
    return datasets.load_from_disk(str(folder / "source"))


def features_of(dataset: datasets.Dataset) -> np.ndarray:
    return np.asarray(dataset.with_format("numpy")["input_features"], dtype=np.float16)


def cache_files(source: datasets.Dataset) -> list[Path]:
    folder = Path(source.cache_files[0]["filename"]).parent
    return sorted(folder.glob("cache-*.arrow"))


def folder_entries(source: datasets.Dataset) -> list[str]:
    return sorted(path.name for path in Path(source.cache_files[0]["filename"]).parent.iterdir())


def test_a_truncated_cache_file_is_named_and_rebuilt(tmp_path, caplog):
    source = saved_source(tmp_path, 64)
    cached, _ = build_feature_cache(source, EXTRACTOR, split_name="scene_train", batch_size=8)
    expected = features_of(cached)
    files = cache_files(source)
    (victim,) = files
    size = victim.stat().st_size
    with open(victim, "r+b") as handle:
        handle.truncate(size // 2)
    del cached

    with caplog.at_level(logging.WARNING, logger="sceneevent.data.feature_cache"):
        again, _ = build_feature_cache(source, EXTRACTOR, split_name="scene_train", batch_size=8)

    assert str(victim) in caplog.text and "truncated" in caplog.text
    np.testing.assert_array_equal(features_of(again), expected)
    assert victim.stat().st_size == size
    reader = BatchReader(again, "scene", 2)  # the trainer's reader, on the rebuilt cache's features array
    assert reader.features_path == victim.with_suffix(FEATURES_SUFFIX)
    np.testing.assert_array_equal(reader[list(range(64))]["input_features"].numpy(), expected)
    # a third build trusts the rebuilt cache: no warning, the same files
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sceneevent.data.feature_cache"):
        third, _ = build_feature_cache(source, EXTRACTOR, split_name="scene_train", batch_size=8)
    assert caplog.text == "" and [entry["filename"] for entry in third.cache_files] == [str(path) for path in files]


def test_a_zero_filled_block_is_detected_and_rebuilt(tmp_path, caplog):
    source = saved_source(tmp_path, 64)
    cached, _ = build_feature_cache(source, EXTRACTOR, split_name="scene_train", batch_size=8)
    expected = features_of(cached)
    (victim,) = cache_files(source)
    del cached
    with open(victim, "r+b") as handle:  # what a crash can leave of unflushed pages: zeros, same size
        handle.seek(victim.stat().st_size // 2)
        handle.write(bytes(4096))

    with caplog.at_level(logging.WARNING, logger="sceneevent.data.feature_cache"):
        again, _ = build_feature_cache(source, EXTRACTOR, split_name="scene_train", batch_size=8)

    assert str(victim) in caplog.text and "differs" in caplog.text
    np.testing.assert_array_equal(features_of(again), expected)
    record = json.loads(victim.with_name(victim.stem + CHECKSUMS_SUFFIX).read_text())
    assert [entry["name"] for entry in record["files"]] == [victim.name, victim.stem + FEATURES_SUFFIX]


@pytest.mark.parametrize("damage", ["truncated", "zero-filled"])
def test_a_damaged_features_array_is_detected_and_rebuilt(tmp_path, caplog, damage):
    source = saved_source(tmp_path, 64)
    cached, _ = build_feature_cache(source, EXTRACTOR, split_name="scene_train", batch_size=8)
    expected = features_of(cached)
    (arrow,) = cache_files(source)
    victim = arrow.with_suffix(FEATURES_SUFFIX)
    size = victim.stat().st_size
    del cached
    with open(victim, "r+b") as handle:
        if damage == "truncated":
            handle.truncate(size - 1000)
        else:
            handle.seek(size // 2)
            handle.write(bytes(1000))

    with caplog.at_level(logging.WARNING, logger="sceneevent.data.feature_cache"):
        again, _ = build_feature_cache(source, EXTRACTOR, split_name="scene_train", batch_size=8)

    assert str(victim) in caplog.text and ("truncated" if damage == "truncated" else "differs") in caplog.text
    assert victim.stat().st_size == size
    reader = BatchReader(again, "scene", 2)
    assert reader.features_path == victim
    np.testing.assert_array_equal(reader[list(range(64))]["input_features"].numpy(), expected)


BUILD_IN_CHILD = """
import signal, sys, datasets
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C raises, even if the test runner was started with SIGINT ignored
from sceneevent import LogMelFeatureExtractor
from sceneevent.data.feature_cache import build_feature_cache
extractor = LogMelFeatureExtractor(num_mel_bins=16, sampling_rate=16000, clip_seconds=0.5, hop_length=160, n_fft=400)
build_feature_cache(datasets.load_from_disk(sys.argv[1]), extractor, split_name="scene_train", batch_size=8)
"""


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL])
def test_an_interrupted_build_leaves_nothing_in_the_cache_folder(tmp_path, stop):
    source = saved_source(tmp_path, 4000)  # about 2 s of building: the signal lands mid-build
    before = folder_entries(source)
    child = subprocess.Popen([sys.executable, "-c", BUILD_IN_CHILD, str(tmp_path / "source")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while folder_entries(source) == before:  # the build has begun writing
        assert child.poll() is None, child.communicate()[0][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)
    child.send_signal(stop)
    output = child.communicate(timeout=60)[0]
    assert child.returncode != 0, output  # it was stopped part-way
    if stop == signal.SIGINT:  # Ctrl-C: the build cleans up as it ends
        assert folder_entries(source) == before, output
    assert cache_files(source) == []

    # The next build in that folder (here of a small part of the split) removes what a killed one left.
    cached, _ = build_feature_cache(source.select(range(16)), EXTRACTOR, split_name="scene_train", batch_size=8)
    assert len(cached) == 16
    (built,) = cache_files(source)
    assert folder_entries(source) == sorted(before + [built.name, built.stem + FEATURES_SUFFIX, built.stem + CHECKSUMS_SUFFIX])
