"""Batches read from the log-mel store's segment files hold each row's clip and labels: across segments,
selections and dropped bad rows, from reader threads and pickled readers, in evaluation; a segment truncated
under a reader is a clear error, and reading every row does not map the store into the process."""

import pickle
import re
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from sceneevent import LogMelFeatureExtractor
from sceneevent.data.audio import AUDIO_FEATURE
from sceneevent.data.feature_store import FeatureStore
from sceneevent.data.loader import BatchReader, batch_loader

from test_feature_store import EXTRACTOR, assert_features_equal, expected_features, read_rows, wav_files

NUM_SCENES, NUM_EVENTS = 5, 9


def labelled(paths: list[str], seed: int = 0) -> datasets.Dataset:
    """Clips with a scene (row % 5) and 0-3 random events each."""
    rng = np.random.default_rng(seed)
    events = [rng.choice(NUM_EVENTS, size=rng.integers(0, 4), replace=False).tolist() for _ in paths]
    return datasets.Dataset.from_dict(
        {"audio": [{"bytes": None, "path": path} for path in paths], "scene": [i % NUM_SCENES for i in range(len(paths))],
         "events": events},
        features=datasets.Features({"audio": AUDIO_FEATURE, "scene": datasets.ClassLabel(num_classes=NUM_SCENES),
                                    "events": datasets.Sequence(datasets.ClassLabel(num_classes=NUM_EVENTS))}),
    )


def multi_hot(label_lists: list[list[int]], num_classes: int = NUM_EVENTS) -> np.ndarray:
    result = np.zeros((len(label_lists), num_classes), dtype=np.float32)
    for row, classes in enumerate(label_lists):
        result[row, classes] = 1
    return result


def assert_batch_holds(batch: dict, rows: list[int], paths: list[str], source: datasets.Dataset) -> None:
    """`batch` (of split rows `rows`, whose clips are `paths`) holds the extractor's features of each row's file
    and the source's labels, rows sorted."""
    ordered = sorted(rows)
    assert batch["input_features"].dtype == torch.float16
    assert_features_equal(batch["input_features"].numpy(), np.stack([expected_features(paths[row]) for row in ordered]))
    if "event_labels" in batch:
        np.testing.assert_array_equal(batch["event_labels"].numpy(), multi_hot([source["events"][row] for row in ordered]))
    else:
        assert batch["scene_labels"].tolist() == [source["scene"][row] for row in ordered]


def two_segment_split(tmp_path: Path, count: int):
    """A split of `count` distinct clips whose first half was stored by an earlier build: two segments."""
    paths = wav_files(tmp_path / "wav", count)
    store = FeatureStore(tmp_path / "store", EXTRACTOR)
    store.store_split(labelled(paths[: count // 2]), split_name="scene_train")
    source = labelled(paths)
    split, _ = store.store_split(source, split_name="scene_train")
    assert len(split.segment_paths) == 2 and set(split.locations[:, 0].tolist()) == {0, 1}
    return split, paths, source


def test_batches_from_several_segments_hold_each_rows_clip_and_labels(tmp_path):
    clips = wav_files(tmp_path / "wav", 48)
    store = FeatureStore(tmp_path / "store", EXTRACTOR)
    store.store_split(labelled(clips[:20]), split_name="a")
    store.store_split(labelled(clips[16:36]), split_name="b")  # 16 new clips: a second segment
    order = np.random.default_rng(1).permutation(48).tolist() + [3, 30, 47]  # every clip, three of them twice
    paths = [clips[i] for i in order]
    source = labelled(paths)
    split, _ = store.store_split(source, split_name="scene_train")  # the last 12 clips: a third segment
    assert len(store.segments()) == 3 and set(split.locations[:, 0].tolist()) == {0, 1, 2}
    stored_rows = read_rows(split)
    events, scenes = BatchReader(split, "events", NUM_EVENTS), BatchReader(split, "scene", NUM_SCENES)
    for rows in ([0], [50], list(range(10, 30)), np.random.default_rng(2).choice(51, 24, replace=False).tolist()):
        batch = events[rows]
        assert_batch_holds(batch, rows, paths, source)
        np.testing.assert_array_equal(batch["input_features"].numpy(), stored_rows[sorted(rows)])  # the stored rows, exactly
        assert_batch_holds(scenes[rows], rows, paths, source)


def test_a_selection_and_a_split_without_its_bad_clips_read_their_own_rows(tmp_path):
    paths = wav_files(tmp_path / "wav", 12)
    for index in (0, 5):
        Path(paths[index]).write_bytes(b"not audio")
    source = labelled(paths)
    store = FeatureStore(tmp_path / "store", EXTRACTOR)
    kept, dropped = store.store_split(source, split_name="scene_train", skip_bad_audio=True)
    assert len(dropped) == 2 and len(kept) == 10
    view = source.select([11, 3, 7, 3])  # an indices mapping over the source's rows
    selected, _ = store.store_split(view, split_name="scene_test")
    for label_column, num_classes in (("scene", NUM_SCENES), ("events", NUM_EVENTS)):
        batch = BatchReader(kept, label_column, num_classes)[[9, 0, 4]]  # rows 1, 6 and 11 of the source
        assert_batch_holds(batch, [0, 1, 2], [paths[row] for row in (1, 6, 11)], source.select([1, 6, 11]))
        batch = BatchReader(selected, label_column, num_classes)[[3, 0, 2, 1]]
        assert_batch_holds(batch, [0, 1, 2, 3], [paths[row] for row in (11, 3, 7, 3)], view)


def test_reader_threads_and_pickled_readers_read_the_right_rows(tmp_path):
    split, paths, source = two_segment_split(tmp_path, 40)
    reader = BatchReader(split, "scene", NUM_SCENES)
    reader[[1, 2]]
    copy = pickle.loads(pickle.dumps(reader))
    assert_batch_holds(copy[[5, 30]], [5, 30], paths, source)
    batches = [[3, 1], [39, 20], [10, 11, 12]]
    loaded = list(batch_loader(reader, batches, num_workers=2))
    assert len(loaded) == len(batches)
    for batch, rows in zip(loaded, batches):
        assert_batch_holds(batch, rows, paths, source)


@pytest.mark.parametrize("label_column,num_classes", [("scene", NUM_SCENES), ("events", NUM_EVENTS)])
def test_evaluation_with_reader_threads_predicts_every_clip_once_in_order(tmp_path, label_column, num_classes):
    from accelerate import Accelerator

    from sceneevent.training.evaluation import predict_split

    split, _, source = two_segment_split(tmp_path, 70)
    reader = BatchReader(split, label_column, num_classes)
    # a stand-in network whose logits are the clip's first feature values: they name the clip
    key = "scene_logits" if label_column == "scene" else "event_logits"
    network = lambda input_features: {key: input_features.flatten(1)[:, :num_classes].float()}
    predicted = {threads: predict_split(Accelerator(cpu=True), network, reader, 16, key, num_workers=threads)
                 for threads in (0, 2)}
    expected = read_rows(split).reshape(70, -1)[:, :num_classes].astype(np.float32)
    labels = source["scene"] if label_column == "scene" else multi_hot(source["events"])
    for logits, read_labels in predicted.values():
        np.testing.assert_array_equal(logits, expected)  # 5 batches, the last short: every clip, once, in order
        np.testing.assert_array_equal(read_labels, labels)


def test_a_segment_truncated_under_a_reader_is_a_clear_error(tmp_path):
    split, _, _ = two_segment_split(tmp_path, 24)
    reader = BatchReader(split, "scene", NUM_SCENES)
    segment, row = split.locations[23].tolist()
    path = split.segment_paths[segment]
    with open(path, "r+b") as file:
        file.truncate(path.stat().st_size // 2)
    with pytest.raises(OSError, match=re.escape(f"{path} ends before row {row}")):
        reader[[23]]


def test_bad_labels_and_rows_are_clear_errors(tmp_path):
    paths = wav_files(tmp_path / "wav", 2)
    store = FeatureStore(tmp_path / "store", EXTRACTOR)

    def stored_with(events: list) -> BatchReader:
        dataset = datasets.Dataset.from_dict(
            {"audio": [{"bytes": None, "path": path} for path in paths], "events": events},
            features=datasets.Features({"audio": AUDIO_FEATURE, "events": datasets.Sequence(datasets.Value("int64"))}))
        return store.store_split(dataset, split_name="event_train")[0]

    with pytest.raises(ValueError, match=r"'events' has class indices outside 0..5 \(e.g. \[7\]\)"):
        BatchReader(stored_with([[1, 7], [2]]), "events", 6)
    with pytest.raises(ValueError, match="null class indices"):
        BatchReader(stored_with([[1, None], [2]]), "events", 6)
    reader = BatchReader(stored_with([[1], [2]]), "events", 6)
    for rows in ([1, 2], [-1, 0]):
        with pytest.raises(IndexError, match="split of 2 clips"):
            reader[rows]


def resident_file_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile line")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_reading_every_row_does_not_map_the_store_into_the_process(tmp_path):
    wide = LogMelFeatureExtractor(num_mel_bins=128, sampling_rate=16000, clip_seconds=0.5, hop_length=160, n_fft=1024)
    paths = wav_files(tmp_path / "wav", 320)  # 320 clips of 128 x 51 fp16: 4 MiB of features
    split, _ = FeatureStore(tmp_path / "store", wide).store_split(labelled(paths), split_name="scene_train")
    reader = BatchReader(split, "scene", NUM_SCENES)
    size_kib = sum(path.stat().st_size for path in set(split.segment_paths)) // 1024
    assert size_kib > 4000
    before = resident_file_kib()
    order = np.random.default_rng(0).permutation(len(split))
    for start in range(0, len(order), 32):
        reader[order[start : start + 32].tolist()]
    grown = resident_file_kib() - before
    assert grown < size_kib / 10, f"reading the store mapped {grown} KiB of a {size_kib} KiB segment into the process"


def test_the_training_splits_are_read_from_the_store_files(tmp_path):
    from sceneevent.training.arguments import DataArguments
    from sceneevent.training.preparation import make_feature_extractor, prepare_data

    data_args = DataArguments(max_asc_train_samples=64, max_aet_train_samples=64, max_eval_samples=16,
                              feature_store_dir=str(tmp_path / "store"))
    extractor = make_feature_extractor(data_args)
    data = prepare_data(data_args, extractor, need_events=True)
    store_folder = FeatureStore(tmp_path / "store", extractor).folder
    for split, column, labels in ((data.scene_train, "scene", data.scene_labels), (data.event_train, "events", data.event_labels),
                                  (data.scene_test, "scene", data.scene_labels)):
        assert {Path(path).parent for path in split.segment_paths} == {store_folder}, f"{column} is not read from the store"
        reader = BatchReader(split, column, len(labels))
        rows = list(range(0, len(reader), 5))
        np.testing.assert_array_equal(reader[rows]["input_features"].numpy(), read_rows(split)[rows])
