"""Trustworthy readings: every choice is made on validation, the test split only reports."""

import json
from collections import Counter

import datasets
import numpy as np
import pytest
import torch
from accelerate import Accelerator

from sceneevent import SceneEventModel
from sceneevent.training.arguments import DataArguments
from sceneevent.data.splits import carve_validation, split_held_out
from sceneevent.data.synthetic import load_synthetic_scenes
from sceneevent.data.loader import BatchPlan, BatchReader, batch_loader
from sceneevent.training.preparation import make_feature_extractor, prepare_data

from test_train_joint import SMALL, in_process

EPOCHS = ["--num_train_epochs", "4", "--max_asc_train_samples", "48"]


def small(*flags):
    """SMALL without its step cap (its first two items), so the run has several epochs to choose from."""
    return [*SMALL[2:], *flags]


def class_wise_accuracy(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    """sed_eval's class-wise average, written out: every class counts, an absent class scores 0."""
    return sum(float(np.mean(predicted[truth == c] == c)) if (truth == c).any() else 0.0 for c in range(num_classes)) / num_classes


def test_best_epoch_is_the_validation_argmax_and_final_is_the_test_score_of_that_model(tmp_path, monkeypatch):
    logged = []
    original_log = Accelerator.log
    monkeypatch.setattr(Accelerator, "log", lambda self, values, step=None, log_kwargs=None: (
        logged.append(set(values)), original_log(self, values, step=step, log_kwargs=log_kwargs or {}))[1])
    out = tmp_path / "run"
    results = in_process("--output_dir", str(out), *small(*EPOCHS, "--learning_rate", "3e-3"))  # every tracker gets what Accelerator.log gets
    history, final = results["history"], results["final"]
    assert len(history) == 4
    scores = [record["val_asc_macro_accuracy"] for record in history]
    assert final["best_epoch"] == 1 + int(np.argmax(scores))  # argmax: the earliest epoch on ties
    assert final["selected_by"] == "val_asc_macro_accuracy" and final["val_asc_macro_accuracy"] == max(scores)
    # No test metric in the per-epoch history or the per-epoch W&B logs; test keys come once, at the end.
    assert all(not any(key in record for key in ("asc_macro_accuracy", "aet_lwlrap")) for record in history)
    test_logs = [i for i, keys in enumerate(logged) if any(k.startswith("test/") for k in keys)]
    eval_logs = [i for i, keys in enumerate(logged) if any(k.startswith("eval/") for k in keys)]
    assert len(eval_logs) == 4 and len(test_logs) == 1 and test_logs[0] > max(eval_logs)

    # `final` is the test score of the saved (selected) model, recomputed here without the trainer.
    data_args = DataArguments(max_asc_train_samples=48, max_aet_train_samples=64, max_eval_samples=40)
    data = prepare_data(data_args, make_feature_extractor(data_args), need_events=True)
    model = SceneEventModel.from_pretrained(out).eval()
    reader = BatchReader(data.scene_test, "scene", len(data.scene_labels))
    predicted, truth = [], []
    with torch.no_grad():
        for batch in batch_loader(reader, list(BatchPlan(len(reader), 32, seed=0).eval_batches())):
            predicted.append(model(input_features=batch["input_features"]).scene_logits.argmax(-1))
            truth.append(batch["scene_labels"])
    expected = class_wise_accuracy(torch.cat(truth).numpy(), torch.cat(predicted).numpy(), len(data.scene_labels))
    assert final["asc_macro_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert final["last_epoch"]["epoch"] == 4 and set(final["last_epoch"]) == {"epoch", "asc_macro_accuracy", "aet_lwlrap"}


def test_without_a_validation_split_the_last_epoch_is_the_result(tmp_path):
    results = in_process("--output_dir", str(tmp_path), "--asc_validation_split", "0", *small("--num_train_epochs", "2", "--max_asc_train_samples", "48"))
    final = results["final"]
    assert final["selected_by"] == "last_epoch" and final["best_epoch"] == 2
    assert final["asc_macro_accuracy"] == final["last_epoch"]["asc_macro_accuracy"]
    assert "scene_validation" not in results["data"]["rows"]
    assert all("val_asc_macro_accuracy" not in record and "val_aet_lwlrap" in record for record in results["history"])


def test_event_only_runs_select_on_event_validation(tmp_path):
    results = in_process("--output_dir", str(tmp_path), "--alpha", "1", *small("--num_train_epochs", "2", "--max_asc_train_samples", "48"))
    scores = [record["val_aet_lwlrap"] for record in results["history"]]
    assert results["final"]["selected_by"] == "val_aet_lwlrap" and results["final"]["best_epoch"] == 1 + int(np.argmax(scores))


def test_scene_validation_is_grouped_by_location_stratified_and_fixed_by_its_seed():
    train = load_synthetic_scenes(train_clips_per_scene=16, test_clips_per_scene=1)["train"]
    kept, validation = carve_validation(train, 0.25, seed=3)
    assert kept.num_rows + validation.num_rows == train.num_rows
    assert not set(kept["identifier"]) & set(validation["identifier"])  # no location on both sides
    assert set(validation["scene"]) == set(range(10))  # every scene is validated
    assert 0.15 < validation.num_rows / train.num_rows < 0.35
    again = carve_validation(train, 0.25, seed=3)[1]
    other = carve_validation(train, 0.25, seed=4)[1]
    assert list(again["identifier"]) == list(validation["identifier"]) and list(other["identifier"]) != list(validation["identifier"])


def test_a_set_without_locations_is_split_clip_by_clip_with_a_warning(caplog):
    train = load_synthetic_scenes(train_clips_per_scene=4, test_clips_per_scene=1)["train"].remove_columns("identifier")
    kept, validation = carve_validation(train, 0.25, seed=0)
    assert kept.num_rows + validation.num_rows == 40 and validation.num_rows > 0
    assert "no `identifier`" in caplog.text


def test_event_held_out_halves_are_disjoint_and_fixed_by_video_id():
    ids = [f"video{i:03d}" for i in range(200)]
    evaluation = datasets.Dataset.from_dict({"video_id": ids, "events": [[i % 3] for i in range(200)]})
    validation, test = split_held_out(evaluation)
    assert not set(validation["video_id"]) & set(test["video_id"])
    assert sorted([*validation["video_id"], *test["video_id"]]) == ids
    assert 70 < validation.num_rows < 130
    # Another subset of the same source (other rows, other order) puts every clip on the same side.
    shuffled = evaluation.select(np.random.default_rng(0).permutation(200)[:120])
    validation_b, test_b = split_held_out(shuffled)
    assert set(validation_b["video_id"]) <= set(validation["video_id"]) and set(test_b["video_id"]) <= set(test["video_id"])


def test_synthetic_event_set_has_disjoint_validation_and_test(tmp_path):
    from sceneevent.data.synthetic import load_synthetic_events

    events = load_synthetic_events(train_clips=4, validation_clips=6, test_clips=6)
    audio = {split: {bytes(row["audio"]["bytes"]) for row in events[split]} for split in ("train", "validation", "test")}
    assert not audio["validation"] & audio["test"] and not audio["train"] & audio["test"]
    assert Counter(len(v) for v in audio.values()) == Counter([4, 6, 6])


def test_old_event_subset_without_test_split_is_refused(tmp_path):
    from sceneevent.data.sources import load_event_source
    from sceneevent.data.synthetic import load_synthetic_events

    events = load_synthetic_events(train_clips=4, validation_clips=2, test_clips=2)
    datasets.DatasetDict({"train": events["train"], "validation": events["validation"]}).save_to_disk(str(tmp_path / "old"))
    with pytest.raises(ValueError, match="no `test` split.*rebuild"):
        load_event_source(str(tmp_path / "old"))


def test_results_record_throughput_in_hf_trainer_names(tmp_path):
    results = in_process("--output_dir", str(tmp_path), *SMALL)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["train_runtime"] > 0 and on_disk["train_steps_per_second"] > 0
    # 2 steps of 8 scene + 16 event clips
    assert on_disk["train_samples_per_second"] == pytest.approx(2 * 24 / on_disk["train_runtime"])
    assert 0 <= on_disk["data_wait_fraction"] < 1 and on_disk["eval_runtime"] > 0
    assert 0 < on_disk["first_step_runtime"] < on_disk["train_runtime"]
    assert on_disk["train_steady_samples_per_second"] > 0
    assert results["train_runtime"] == on_disk["train_runtime"]


def test_steady_throughput_leaves_out_every_first_step():
    from sceneevent.training.results import steady_throughput

    # 5 steps of 24 clips in 10 s, the first 2 s of it: 4 steps in 8 s
    assert steady_throughput({"steps": 5, "train": 10.0, "first_steps": 2.0, "first_step_count": 1}, 24) == 12.0
    # resumed once: two first steps (2 s + 1 s), 3 steady steps in 7 s
    assert steady_throughput({"steps": 5, "train": 10.0, "first_steps": 3.0, "first_step_count": 2}, 24) == 72 / 7
    assert steady_throughput({"steps": 1, "train": 2.0, "first_steps": 2.0, "first_step_count": 1}, 24) is None
    assert steady_throughput({"steps": 5, "train": 10.0}, 24) is None  # a checkpoint from before the field
