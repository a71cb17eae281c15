"""A resumed run publishes exactly the model it reports: the test accuracy recomputed from the run folder's
`model.safetensors` equals `final.asc_macro_accuracy`, whatever a killed run saved after the checkpoint."""

import json
import shutil

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score

from sceneevent import SceneEventModel
from sceneevent.data.loader import BatchReader
from sceneevent.training.arguments import DataArguments, JointTrainingArguments, ModelArguments, parse_args
from sceneevent.training.preparation import make_feature_extractor, prepare_data

from test_train_joint import in_process

# 4 steps an epoch (32 scene clips, 8 a step), a checkpoint at the end of each
FLAGS = ["--asc_batch_size", "8", "--aet_batch_size", "8", "--max_asc_train_samples", "32", "--max_aet_train_samples", "32",
         "--max_eval_samples", "40", "--checkpointing_steps", "epoch", "--encoder", "resnet10t", "--learning_rate", "3e-3",
         "--seed", "3", "--asc_validation_split", "0"]  # no selection: every epoch's model replaces the last


def published_test_accuracy(run_dir) -> float:
    """Scene macro accuracy on the test split of the model in `run_dir`, by sklearn (every class has test clips)."""
    _, data_args, _ = parse_args((ModelArguments, DataArguments, JointTrainingArguments), FLAGS)
    data = prepare_data(data_args, make_feature_extractor(data_args), need_events=False)
    reader = BatchReader(data.scene_test, "scene", len(data.scene_labels))
    batch = reader[list(range(len(reader)))]
    model = SceneEventModel.from_pretrained(run_dir).eval()
    with torch.no_grad():
        predicted = model(input_features=batch["input_features"].float()).scene_logits.argmax(dim=1).numpy()
    truth = batch["scene_labels"].numpy()
    assert set(np.unique(truth)) == set(range(len(data.scene_labels)))
    return balanced_accuracy_score(truth, predicted)


def test_a_run_resumed_from_an_earlier_checkpoint_publishes_the_model_it_reports(tmp_path):
    out = tmp_path / "run"
    first = in_process("--output_dir", str(out), "--max_train_steps", "8", *FLAGS)
    assert first["final"]["best_epoch"] == 2  # the model on disk is epoch 2's: the resume below must not publish it
    epoch_two = (out / "model.safetensors").read_bytes()
    (out / "results.json").unlink()  # as if killed in epoch 3's validation, before results.json
    shutil.copy(out / "model.safetensors", tmp_path / "epoch_two.safetensors")

    resumed = in_process("--output_dir", str(out), "--max_train_steps", "4", *FLAGS,
                         "--resume_from_checkpoint", str(out / "checkpoints" / "step_4"))
    assert resumed["final"]["best_epoch"] == 1 and resumed["steps"] == 4
    assert (out / "model.safetensors").read_bytes() != epoch_two
    assert published_test_accuracy(out) == resumed["final"]["asc_macro_accuracy"]
    assert json.loads((out / "results.json").read_text())["final"] == resumed["final"]
