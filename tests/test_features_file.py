"""Batches read from a cache's features array equal Arrow's, and the array is not left mapped in the process."""

import pickle
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf
import torch

from sceneevent import LogMelFeatureExtractor
from sceneevent.data.audio import AUDIO_FEATURE
from sceneevent.data.feature_cache import build_feature_cache, features_path, write_features
from sceneevent.data.loader import BatchReader, batch_loader

SHAPE = (8, 12)


def saved_split(folder: Path, rows: int, *, num_shards: int = 1, num_classes: int = 9, seed: int = 0) -> datasets.Dataset:
    """A split saved with `datasets` and loaded back, with its features array written beside it."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((rows, *SHAPE)).astype(np.float16)
    features[:, 0, 0] = np.arange(rows)  # the row id travels in the first cell
    events = [rng.choice(num_classes, size=rng.integers(0, 4), replace=False).tolist() for _ in range(rows)]
    dataset = datasets.Dataset.from_dict(
        {"input_features": features, "scene": (np.arange(rows) % 5).tolist(), "events": events},
        features=datasets.Features({
            "input_features": datasets.Array2D(SHAPE, "float16"),
            "scene": datasets.ClassLabel(num_classes=5),
            "events": datasets.Sequence(datasets.ClassLabel(num_classes=num_classes)),
        }),
    )
    dataset.save_to_disk(str(folder), num_shards=num_shards, max_shard_size=None)
    written = datasets.load_from_disk(str(folder))
    write_features(written, features_path(written))
    return datasets.load_from_disk(str(folder))


def arrow_batch(dataset: datasets.Dataset, rows: list[int]) -> dict[str, np.ndarray]:
    numpy = dataset.with_format("numpy")[sorted(rows)]
    return {"input_features": np.asarray(numpy["input_features"], dtype=np.float16), "scene": numpy["scene"],
            "events": dataset[sorted(rows)]["events"]}


@pytest.mark.parametrize("num_shards", [1, 3])
def test_file_reads_equal_arrow_reads_across_record_batches_and_files(tmp_path, num_shards):
    dataset = saved_split(tmp_path / "cache", 4000, num_shards=num_shards)
    assert len(dataset.cache_files) == num_shards
    reader = BatchReader(dataset, "events", 9)
    assert reader.features_path == features_path(dataset) and reader.features_path.exists()
    rng = np.random.default_rng(1)
    for rows in ([0], [3999], list(range(990, 1010)), list(range(1320, 1350)), rng.choice(4000, 64, replace=False).tolist()):
        batch, expected = reader[rows], arrow_batch(dataset, rows)
        assert batch["input_features"].dtype == torch.float16
        np.testing.assert_array_equal(batch["input_features"].numpy(), expected["input_features"])
        multi_hot = np.zeros((len(rows), 9), dtype=np.float32)
        for i, classes in enumerate(expected["events"]):
            multi_hot[i, classes] = 1
        np.testing.assert_array_equal(batch["event_labels"].numpy(), multi_hot)
    scenes = BatchReader(dataset, "scene", 5)[[7, 3, 2400]]
    assert scenes["scene_labels"].tolist() == [3, 2, 0] and scenes["input_features"][:, 0, 0].tolist() == [3, 7, 2400]


def test_select_views_and_changed_columns_still_read_the_right_rows(tmp_path):
    dataset = saved_split(tmp_path / "cache", 300)
    # every change makes a new fingerprint, so no array file: Arrow's rows, in the changed form
    view = BatchReader(dataset.select([250, 4, 120, 77]), "events", 9)
    assert view.features_path is None
    assert view[[0, 1, 2, 3]]["input_features"][:, 0, 0].tolist() == [250, 4, 120, 77]
    np.testing.assert_array_equal(view[[1, 3]]["event_labels"].numpy(), BatchReader(dataset, "events", 9)[[4, 77]]["event_labels"])
    cast = BatchReader(dataset.cast_column("input_features", datasets.Array2D(SHAPE, "float32")), "scene", 5)
    assert cast.features_path is None and cast[[8, 9]]["input_features"].dtype == torch.float32
    assert cast[[8, 9]]["input_features"][:, 0, 0].tolist() == [8, 9]
    # columns swapped after loading without a new file: the file's "input_features" is not the table's
    with_copy = dataset.map(lambda row: {"other": np.asarray(row["input_features"]) + 1},
                            features=datasets.Features({**dataset.features, "other": dataset.features["input_features"]}))
    swapped = with_copy.remove_columns("input_features").rename_column("other", "input_features")
    assert swapped.cache_files == with_copy.cache_files
    assert BatchReader(swapped, "scene", 5).features_path is None
    assert BatchReader(swapped, "scene", 5)[[2, 6]]["input_features"][:, 0, 0].tolist() == [3, 7]
    # a column replaced in memory under the same name, the file still holding the old one
    replaced = dataset.remove_columns("input_features").add_column(
        "input_features", [np.zeros(SHAPE, dtype=np.float16).tolist()] * len(dataset), feature=dataset.features["input_features"])
    assert BatchReader(replaced, "scene", 5).features_path is None
    assert not BatchReader(replaced, "scene", 5)[[5, 6]]["input_features"].any()
    in_memory = datasets.Dataset.from_dict(dataset[:10], features=dataset.features)
    assert features_path(in_memory) is None
    assert BatchReader(in_memory, "scene", 5)[[9, 1]]["input_features"][:, 0, 0].tolist() == [1, 9]


def test_a_cache_without_its_bad_clips_reads_the_kept_rows_from_its_file(tmp_path):
    (tmp_path / "wav").mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for index in range(12):
        path = tmp_path / "wav" / f"clip{index}.wav"
        if index in (0, 5):
            path.write_bytes(b"not audio")
        else:
            sf.write(path, rng.standard_normal(8000).astype(np.float32) * 0.1, 16000)
        paths.append(str(path))
    source = datasets.Dataset.from_dict(
        {"audio": [{"bytes": None, "path": path} for path in paths], "scene": [index % 2 for index in range(12)]},
        features=datasets.Features({"audio": AUDIO_FEATURE, "scene": datasets.ClassLabel(names=["a", "b"])}))
    source.save_to_disk(str(tmp_path / "source"))
    extractor = LogMelFeatureExtractor(num_mel_bins=16, sampling_rate=16000, clip_seconds=0.5, hop_length=160, n_fft=400)
    cached, dropped = build_feature_cache(datasets.load_from_disk(str(tmp_path / "source")), extractor, skip_bad_audio=True)
    assert len(dropped) == 2 and len(cached) == 10
    reader = BatchReader(cached, "scene", 2)
    assert reader.features_path is not None and reader.table_rows.tolist() == [1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    batch = reader[[9, 0, 4]]
    expected = np.asarray(cached.with_format("numpy")[[0, 4, 9]]["input_features"], dtype=np.float16)
    np.testing.assert_array_equal(batch["input_features"].numpy(), expected)
    assert batch["scene_labels"].tolist() == [1, 0, 1]  # rows 1, 6 and 11 of the source


def test_reader_threads_and_pickled_readers_read_the_right_rows(tmp_path):
    dataset = saved_split(tmp_path / "cache", 400)
    reader = BatchReader(dataset, "scene", 5)
    reader[[1, 2]]
    copy = pickle.loads(pickle.dumps(reader))
    assert copy.features_path == reader.features_path
    assert copy[[5, 300]]["input_features"][:, 0, 0].tolist() == [5, 300]
    batches = [[3, 1], [399, 200], [10, 11, 12]]
    loaded = list(batch_loader(reader, batches, num_workers=2))
    assert [sorted(batch["input_features"][:, 0, 0].long().tolist()) for batch in loaded] == [sorted(b) for b in batches]


@pytest.mark.parametrize("label_column,num_classes", [("scene", 5), ("events", 9)])
def test_evaluation_with_reader_threads_predicts_every_clip_once_in_order(tmp_path, label_column, num_classes):
    from accelerate import Accelerator

    from sceneevent.training.evaluation import predict_split

    reader = BatchReader(saved_split(tmp_path / "cache", 150), label_column, num_classes)
    # a stand-in network whose first logit is the clip's row id (the first cell of its features)
    key = "scene_logits" if label_column == "scene" else "event_logits"
    network = lambda input_features: {key: input_features[:, 0, :1].float().repeat(1, num_classes)}  # noqa: E731
    predicted = {threads: predict_split(Accelerator(cpu=True), network, reader, 32, key, num_workers=threads)
                 for threads in (0, 2)}
    for logits, labels in predicted.values():
        assert logits[:, 0].tolist() == list(range(150))  # 5 batches, the last short: all, once, in order
    np.testing.assert_array_equal(predicted[0][1], predicted[2][1])
    if label_column == "scene":
        assert predicted[2][1].tolist() == [row % 5 for row in range(150)]


def test_a_truncated_features_file_is_a_clear_error(tmp_path):
    dataset = saved_split(tmp_path / "cache", 500)
    reader = BatchReader(dataset, "scene", 5)
    path = reader.features_path
    with open(path, "r+b") as file:
        file.truncate(path.stat().st_size // 2)
    with pytest.raises(OSError, match="ends before row 499"):
        reader[[499]]


def test_bad_labels_and_rows_are_clear_errors(tmp_path):
    dataset = saved_split(tmp_path / "cache", 50, num_classes=9)
    with pytest.raises(ValueError, match=r"'events' has class indices outside 0..5"):
        BatchReader(dataset, "events", 6)
    with_null = datasets.Dataset.from_dict({"input_features": np.zeros((2, *SHAPE), np.float16), "events": [[1, None], [2]]},
                                           features=datasets.Features({"input_features": datasets.Array2D(SHAPE, "float16"),
                                                                       "events": datasets.Sequence(datasets.Value("int64"))}))
    with pytest.raises(ValueError, match="null class indices"):
        BatchReader(with_null, "events", 6)
    reader = BatchReader(dataset, "scene", 5)
    for rows in ([49, 50], [-1, 3]):
        with pytest.raises(IndexError, match="split of 50 clips"):
            reader[rows]


def resident_file_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile line")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_reading_every_row_does_not_map_the_cache_into_the_process(tmp_path):
    dataset = saved_split(tmp_path / "cache", 20000)  # 3.7 MiB of features
    reader = BatchReader(dataset, "scene", 5)
    size_kib = reader.features_path.stat().st_size // 1024
    before = resident_file_kib()
    order = np.random.default_rng(0).permutation(len(dataset))
    for start in range(0, len(order), 256):
        reader[order[start : start + 256].tolist()]
    grown = resident_file_kib() - before
    assert grown < size_kib / 10, f"reading the cache mapped {grown} KiB of a {size_kib} KiB file into the process"


def test_the_training_caches_are_read_from_their_files():
    from sceneevent.training.arguments import DataArguments
    from sceneevent.training.preparation import make_feature_extractor, prepare_data

    data_args = DataArguments(max_asc_train_samples=64, max_aet_train_samples=64, max_eval_samples=16)
    data = prepare_data(data_args, make_feature_extractor(data_args), need_events=True)
    for split, column, labels in ((data.scene_train, "scene", data.scene_labels), (data.event_train, "events", data.event_labels),
                                  (data.scene_test, "scene", data.scene_labels)):
        reader = BatchReader(split, column, len(labels))
        assert reader.features_path is not None, f"{column} cache is not read from its file"
        rows = list(range(0, len(reader), 5))
        expected = np.asarray(reader.dataset.with_format("numpy")[rows]["input_features"], dtype=np.float16)
        np.testing.assert_array_equal(reader[rows]["input_features"].numpy(), expected)
