"""The log-mel store after damage and interruptions: a rebuilt segment is what the trainer reads and what the
next build trusts, and an interrupted build leaves nothing half-made (the next build completes, and no staging
or record-less segment file stays). Detecting and naming damaged segments: tests/test_feature_store.py."""

import logging
import signal
import subprocess
import sys
import time

import datasets
import numpy as np
import pytest

from sceneevent.data.feature_store import LOCK_FILE, FeatureStore
from sceneevent.data.loader import BatchReader
from sceneevent.io_utils import STAGING_GLOB

from test_feature_store import EXTRACTOR, assert_features_equal, count_decodes, event_set, expected_features, wav_files


def store_entries(store: FeatureStore) -> list[str]:
    return sorted(path.name for path in store.folder.iterdir())


def test_a_rebuilt_segment_is_read_by_the_trainer_and_trusted_by_the_next_build(tmp_path, caplog, monkeypatch):
    paths = wav_files(tmp_path / "wav", 24)
    FeatureStore(tmp_path / "store", EXTRACTOR).store_split(event_set(paths), split_name="event_train")
    (damaged,) = FeatureStore(tmp_path / "store", EXTRACTOR).segments()
    with open(damaged.features_path, "r+b") as handle:
        handle.truncate(damaged.features_path.stat().st_size // 2)
    rebuilt, _ = FeatureStore(tmp_path / "store", EXTRACTOR).store_split(event_set(paths), split_name="event_train")
    reader = BatchReader(rebuilt, "events", 3)  # the trainer's reader, on the rebuilt segment
    assert_features_equal(reader[list(range(24))]["input_features"].numpy(), np.stack([expected_features(p) for p in paths]))
    files = store_entries(FeatureStore(tmp_path / "store", EXTRACTOR))

    decoded = count_decodes(monkeypatch)
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # another process: it checks the segment, trusts it, decodes nothing
        again, _ = FeatureStore(tmp_path / "store", EXTRACTOR).store_split(event_set(paths), split_name="event_train")
    assert caplog.text == "" and decoded == []
    assert store_entries(FeatureStore(tmp_path / "store", EXTRACTOR)) == files
    assert again.segment_paths == rebuilt.segment_paths
    np.testing.assert_array_equal(again.locations, rebuilt.locations)


BUILD_IN_CHILD = """
import signal, sys, datasets
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C raises, even if the test runner was started with SIGINT ignored
from sceneevent import LogMelFeatureExtractor
from sceneevent.data.feature_store import FeatureStore
extractor = LogMelFeatureExtractor(num_mel_bins=16, sampling_rate=16000, clip_seconds=0.5, hop_length=160, n_fft=400)
FeatureStore(sys.argv[2], extractor).store_split(datasets.load_from_disk(sys.argv[1]), split_name="event_train")
"""


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_an_interrupted_build_leaves_nothing_half_made(tmp_path, monkeypatch, stop):
    paths = wav_files(tmp_path / "wav", 600)  # 0.2-0.3 s of decoding: the signal goes as soon as it begins
    source = event_set(paths)
    source.save_to_disk(str(tmp_path / "source"))
    store = FeatureStore(tmp_path / "store", EXTRACTOR)  # the child's settings
    child = subprocess.Popen([sys.executable, "-c", BUILD_IN_CHILD, str(tmp_path / "source"), str(tmp_path / "store")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (store.folder.is_dir() and list(store.folder.glob(STAGING_GLOB))):  # the build has begun writing
        assert child.poll() is None, child.communicate()[0][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child.send_signal(stop)
    output = child.communicate(timeout=60)[0]
    assert child.returncode != 0, output  # it was stopped part-way
    assert store.segments() == [], output
    if stop == signal.SIGINT:  # Ctrl-C: the build cleans up as it ends
        assert store_entries(store) == [LOCK_FILE], output
    # What a build killed after moving its files in, before writing their record, leaves: segment files without one.
    for suffix in (".npy", ".keys.npy"):
        (store.folder / f"segment-19700101000000-00000000{suffix}").write_bytes(bytes(256))

    # The next build (here of a small part of the split) removes what a killed one left, and completes.
    decoded = count_decodes(monkeypatch)
    stored, _ = store.store_split(datasets.load_from_disk(str(tmp_path / "source")).select(range(16)), split_name="event_train")
    assert sorted(decoded) == sorted(paths[:16])  # nothing of the stopped build is used
    (segment,) = store.segments()
    assert store_entries(store) == sorted([LOCK_FILE, segment.features_path.name, segment.keys_path.name, segment.record_path.name])
    reader = BatchReader(stored, "events", 3)
    assert_features_equal(reader[list(range(16))]["input_features"].numpy(), np.stack([expected_features(p) for p in paths[:16]]))
