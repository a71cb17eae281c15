import threading
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from sceneevent.data.feature_store import StoredSplit
from sceneevent.data.loader import BatchPlan, BatchReader, DeviceBatchReader, MultiTaskLoader


def cached_split(folder: Path, rows: int, label: str, num_classes: int, seed: int = 0) -> StoredSplit:
    """A stored split of `rows` random fp16 feature rows in one segment file in `folder`, with its labels."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((rows, 4, 6)).astype(np.float16)
    # the first feature cell carries the row id, so batches can be traced back to rows
    features[:, 0, 0] = np.arange(rows)
    if label == "scene":
        labels = (np.arange(rows) % num_classes).tolist()
        feature = datasets.ClassLabel(num_classes=num_classes)
    else:
        labels = [[i % num_classes, (i + 1) % num_classes] for i in range(rows)]
        feature = datasets.Sequence(datasets.ClassLabel(num_classes=num_classes))
    segment = folder / f"segment{len(list(folder.glob('segment*.npy')))}.npy"
    np.save(segment, features)
    locations = np.stack([np.zeros(rows, dtype=np.int64), np.arange(rows)], axis=1)
    return StoredSplit(datasets.Dataset.from_dict({label: labels}, features=datasets.Features({label: feature})),
                       [segment], locations, contents=np.zeros(rows, dtype="S32"), sources=[f"clip{i}" for i in range(rows)])


def select(split: StoredSplit, rows: list[int]) -> StoredSplit:
    """A view of some rows, as dropping bad clips or selecting makes one."""
    return StoredSplit(split.dataset.select(rows), split.segment_paths, split.locations[rows],
                       split.contents[rows], [split.sources[row] for row in rows])


def stored_features(split: StoredSplit, rows: list[int]) -> np.ndarray:
    segment = np.load(split.segment_paths[0])
    return segment[split.locations[sorted(rows), 1]]


def row_ids(batch):
    return sorted(batch["input_features"][:, 0, 0].long().tolist())


def test_every_step_has_64_scene_and_128_event_clips_and_scenes_set_the_epoch(tmp_path):
    scenes = BatchReader(cached_split(tmp_path, 640, "scene", 10), "scene", 10)
    events = BatchReader(cached_split(tmp_path, 300, "events", 40), "events", 40)
    loader = MultiTaskLoader(epoch_rows=640, asc=scenes, aet=events, asc_batch_size=64, aet_batch_size=128, seed=0)
    batches = list(loader.epoch(0))
    assert len(batches) == loader.steps_per_epoch == 10
    for batch in batches:
        assert batch["asc"]["input_features"].shape == (64, 4, 6)
        assert batch["asc"]["scene_labels"].shape == (64,)
        assert batch["aet"]["input_features"].shape == (128, 4, 6)
        assert batch["aet"]["event_labels"].shape == (128, 40)
        assert (batch["aet"]["event_labels"].sum(1) == 2).all()  # multi-hot from the label lists
    seen = [row for batch in batches for row in row_ids(batch["asc"])]
    assert sorted(seen) == list(range(640))  # one epoch = every scene clip once
    # 300 event clips = 2 event batches per cycle: the event set cycled 5 times in one scene epoch
    assert loader.aet_consumed == 10


def test_labels_travel_with_their_rows(tmp_path):
    reader = BatchReader(cached_split(tmp_path, 50, "scene", 7), "scene", 7)
    batch = reader[[40, 3, 17]]
    ids = batch["input_features"][:, 0, 0].long()
    assert (batch["scene_labels"] == ids % 7).all()


def test_batches_keep_fp16_and_match_row_reads_also_on_select_views(tmp_path):
    split = cached_split(tmp_path, 80, "events", 6)
    view = select(split, [5, 70, 3, 41, 12])
    for stored, rows in ((split, [3, 41, 70]), (view, [0, 2, 4])):
        batch = BatchReader(stored, "events", 6)[rows]
        assert batch["input_features"].dtype == torch.float16
        np.testing.assert_array_equal(batch["input_features"].numpy(), stored_features(stored, rows))
        expected = np.zeros((3, 6), dtype=np.float32)
        for i, classes in enumerate(stored.dataset[sorted(rows)]["events"]):
            expected[i, classes] = 1
        np.testing.assert_array_equal(batch["event_labels"].numpy(), expected)


def test_processes_read_disjoint_shares_of_each_global_batch():
    shares = [list(BatchPlan(100, 8, seed=3, num_processes=2, process_index=rank).epoch_batches(0)) for rank in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 100 // 16
    for a, b in zip(*shares):
        assert len(a) == len(b) == 8 and not set(a) & set(b)
    evaluation = [list(BatchPlan(101, 8, seed=0, num_processes=2, process_index=r).eval_batches()) for r in (0, 1)]
    flat = [i for shard in evaluation for batch in shard for i in batch]
    assert flat == list(range(101))  # every clip exactly once, in order


def test_epochs_are_reshuffled_and_repeatable():
    plan = BatchPlan(64, 8, seed=1)
    assert list(plan.epoch_batches(0)) == list(BatchPlan(64, 8, seed=1).epoch_batches(0))
    assert list(plan.epoch_batches(0)) != list(plan.epoch_batches(1))


@pytest.mark.parametrize("resumed_threads", [0, 2])
def test_resumed_loader_reads_the_same_batches(resumed_threads, tmp_path):
    scenes = BatchReader(cached_split(tmp_path, 96, "scene", 4), "scene", 4)
    events = BatchReader(cached_split(tmp_path, 40, "events", 5), "events", 5)
    make = lambda threads=0: MultiTaskLoader(  # noqa: E731
        epoch_rows=96, asc=scenes, aet=events, asc_batch_size=8, aet_batch_size=16, seed=5, num_workers=threads)
    straight = make()
    reference = [list(straight.epoch(0)), list(straight.epoch(1))]
    interrupted = make()
    first_part = []
    for i, batch in enumerate(interrupted.epoch(1 - 1)):
        first_part.append(batch)
        if i == 6:
            break
    resumed = make(resumed_threads)  # reader threads are a speed setting: a resume may change them
    resumed.load_state_dict(interrupted.state_dict())
    rest = list(resumed.epoch(0, start_step=7)) + list(resumed.epoch(1))
    for expected, got in zip(reference[0] + reference[1], first_part + rest, strict=True):
        assert row_ids(expected["asc"]) == row_ids(got["asc"])
        assert row_ids(expected["aet"]) == row_ids(got["aet"])


def test_too_small_data_for_one_batch_is_a_clear_error(tmp_path):
    scenes = BatchReader(cached_split(tmp_path, 10, "scene", 2), "scene", 2)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        MultiTaskLoader(epoch_rows=10, asc=scenes, aet=None, asc_batch_size=64, aet_batch_size=128, seed=0)
    with pytest.raises(ValueError, match="positive"):
        BatchPlan(10, 0, seed=0)


def test_device_reader_gives_the_same_batches_as_the_arrow_reader(tmp_path):
    host = BatchReader(cached_split(tmp_path, 70, "events", 5), "events", 5)
    device = DeviceBatchReader(host, "cpu", chunk_rows=16)  # several chunks, the last one short
    assert len(device) == 70
    for rows in ([0, 69, 33], list(range(20, 52))):
        expected, got = host[sorted(rows)], device[sorted(rows)]
        assert got["input_features"].dtype == torch.float16
        for key in expected:
            assert torch.equal(expected[key], got[key])
    scenes = BatchReader(cached_split(tmp_path, 96, "scene", 4), "scene", 4)
    make = lambda reader, events: MultiTaskLoader(  # noqa: E731
        epoch_rows=96, asc=reader, aet=events, asc_batch_size=8, aet_batch_size=16, seed=2)
    on_host = list(make(scenes, host).epoch(0))
    on_device = list(make(DeviceBatchReader(scenes, "cpu"), device).epoch(0))
    for a, b in zip(on_host, on_device, strict=True):
        assert row_ids(a["asc"]) == row_ids(b["asc"]) and row_ids(a["aet"]) == row_ids(b["aet"])


class ThreadRecordingReader:
    """Scene batches of 64 rows that record which thread read each one; `read_seconds` of sleep per batch stands
    for a read that releases the GIL (as `preadv` does)."""

    def __init__(self, read_seconds: float = 0.0):
        self.read_seconds, self.threads = read_seconds, []

    def __len__(self):
        return 64

    def __getitem__(self, indices):
        self.threads.append(threading.current_thread())  # the object, not its ident: idents are reused
        time.sleep(self.read_seconds)
        return {"input_features": torch.tensor(sorted(indices), dtype=torch.float16)[:, None, None],
                "scene_labels": torch.zeros(len(indices), dtype=torch.long)}


def scene_loader(reader, workers: int) -> MultiTaskLoader:
    return MultiTaskLoader(epoch_rows=64, asc=reader, aet=None, asc_batch_size=8, aet_batch_size=8, seed=4, num_workers=workers)


def test_reader_threads_start_once_and_serve_every_epoch_until_closed():
    reader = ThreadRecordingReader()
    loader, reference = scene_loader(reader, 2), scene_loader(ThreadRecordingReader(), 0)
    epochs = [list(loader.epoch(epoch)) for epoch in range(3)]
    expected = [list(reference.epoch(epoch)) for epoch in range(3)]
    threads = set(reader.threads)
    # at most 2 threads for 3 epochs, not 2 per epoch (the pool starts its second only if the first is busy)
    assert 1 <= len(threads) <= 2 and threading.current_thread() not in threads
    for got, want in zip(epochs, expected, strict=True):  # the same batches, in the same order, as without threads
        assert [row_ids(b["asc"]) for b in got] == [row_ids(b["asc"]) for b in want]
    # a resumed position (not the stream's next one) starts a new stream at that position
    assert [row_ids(b["asc"]) for b in loader.epoch(1, start_step=5)] == [row_ids(b["asc"]) for b in expected[1][5:]]
    loader.close()
    assert not any(thread.is_alive() for thread in reader.threads), "reader threads still running after close()"


def test_reader_threads_hide_reads_behind_a_step_that_leaves_the_host_free():
    # 20 ms reads and 20 ms steps (sleeps, as a GPU step leaves the host idle): read in the loop, 8 steps
    # take 8 x 40 ms; read ahead by a thread, about 8 x 20 ms plus the first read.
    def seconds_for_one_epoch(workers: int) -> float:
        loader = scene_loader(ThreadRecordingReader(read_seconds=0.02), workers)
        started = time.perf_counter()
        for _ in loader.epoch(0):
            time.sleep(0.02)
        loader.close()
        return time.perf_counter() - started

    inline, threaded = seconds_for_one_epoch(0), seconds_for_one_epoch(1)
    assert threaded < 0.75 * inline, (threaded, inline)


def test_reader_threads_default_to_one_on_a_gpu_and_none_on_a_cpu():
    from sceneevent.training.launch import reader_threads

    assert reader_threads(None, torch.device("cuda", 1)) == 1 and reader_threads(None, torch.device("cpu")) == 0
    assert reader_threads(3, torch.device("cpu")) == 3 and reader_threads(0, torch.device("cuda")) == 0


def test_a_reader_threads_error_reaches_the_training_loop():
    class FailingReader(ThreadRecordingReader):
        def __getitem__(self, indices):
            if 7 in indices:
                raise OSError("row 7 is unreadable")
            return super().__getitem__(indices)

    with pytest.raises(OSError, match="row 7 is unreadable"):
        list(scene_loader(FailingReader(), 2).epoch(0))
