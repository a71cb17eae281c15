"""The training script end to end: short real runs on the embedded data, and its argument errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sceneevent.training.floor import FLOOR_C_GRID
from sceneevent.training.arguments import DataArguments, JointTrainingArguments, ModelArguments, parse_args
from sceneevent.training.loop import train

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "--max_train_steps", "2", "--asc_batch_size", "8", "--aet_batch_size", "16", "--eval_batch_size", "32",
    "--max_eval_samples", "40", "--max_asc_train_samples", "64", "--max_aet_train_samples", "64", "--logging_steps", "1",
    "--encoder", "resnet10t",
]


def run_script(*args, env_extra=None):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train_joint.py"), *args], capture_output=True, text=True, env=env, timeout=600
    )


def in_process(*args):
    """`train` in this process; its results as results.json holds them."""
    return train(*parse_args((ModelArguments, DataArguments, JointTrainingArguments), list(args))).to_dict()


def test_two_step_joint_run_with_offline_wandb_writes_results_and_model(tmp_path):
    out = tmp_path / "run"
    done = run_script("--output_dir", str(out), "--report_to", "wandb", "--alpha", "0.9", *SMALL)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["alpha"] == 0.9 and results["steps"] == 2 and results["seed"] == 42
    assert results["config"]["asc_batch_size"] == 8 and results["config"]["report_to"] == "wandb"
    assert results["config"]["dataloader_num_workers"] == 0  # the default in use on a CPU, not None
    assert results["config"]["feature_hop_length"] == 640 and results["config"]["channels_last"] is True
    final = results["final"]
    assert 0.0 <= final["asc_macro_accuracy"] <= 1.0 and 0.0 < final["aet_lwlrap"] <= 1.0
    assert final["loss_asc"] > 0 and final["loss_aet"] > 0
    assert results["history"][0]["epoch"] == 1 and results["wall_time_seconds"] > 0
    assert results["data"]["rows"] == {"scene_train": 64, "scene_validation": 40, "scene_test": 40,
                                       "event_train": 64, "event_validation": 40, "event_test": 40}
    assert results["schema_version"] == 2 and results["train_samples_per_second"] > 0 and results["train_runtime"] > 0
    assert len(results["data"]["scene_labels"]) == 10 and "Speech" in results["data"]["event_labels"]
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {p.name for p in out.iterdir()}
    assert any((out / "wandb").glob("offline-run-*")), "W&B logged offline into the run folder"
    assert "done: alpha=0.9" in done.stdout and f"(floor {final['floor_asc_macro_accuracy']:.4f})" in done.stdout
    assert final["floor_c"] in FLOOR_C_GRID and 0.0 <= final["floor_asc_macro_accuracy"] <= 1.0
    below = final["asc_macro_accuracy"] <= final["floor_asc_macro_accuracy"]
    assert ("does not clear its floor" in done.stdout) is below


@pytest.mark.parametrize("alpha,has_events", [("0", False), ("1", True)])
def test_baselines_train_one_task(tmp_path, alpha, has_events):
    results = in_process("--output_dir", str(tmp_path), "--alpha", alpha, "--aet_dataset", "synthetic" if has_events else "no-such-dataset", *SMALL)
    rows = results["data"]["rows"]
    assert ("event_train" in rows) is has_events
    final = results["final"]
    if has_events:
        assert final["loss_aet"] > 0 and final["loss_asc"] is None and final["aet_lwlrap"] > 0
        assert "floor_asc_macro_accuracy" not in final  # no scene task, no floor
    else:
        assert final["loss_asc"] > 0 and final["loss_aet"] is None and final["aet_lwlrap"] is None
        assert 0.0 <= final["floor_asc_macro_accuracy"] <= 1.0


def test_cache_on_device_trains_exactly_like_the_loader(tmp_path):
    with_loader = in_process("--output_dir", str(tmp_path / "loader"), *SMALL)
    on_device = in_process("--output_dir", str(tmp_path / "device"), "--cache_on_device", *SMALL)
    assert on_device["config"]["cache_on_device"] is True
    assert on_device["history"] == with_loader["history"]


def test_config_file_supplies_defaults_and_flags_override(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"alpha: 0.25\nlearning_rate: 0.01\noutput_dir: {tmp_path / 'from_yaml'}\n")
    model_args, data_args, train_args = parse_args(
        (ModelArguments, DataArguments, JointTrainingArguments), ["--config", str(config), "--learning_rate", "0.5"]
    )
    assert float(train_args.alpha) == 0.25 and train_args.learning_rate == 0.5
    assert train_args.output_dir == str(tmp_path / "from_yaml")
    config.write_text("alhpa: 0.3\n")
    with pytest.raises(ValueError, match="alhpa"):
        parse_args((ModelArguments, DataArguments, JointTrainingArguments), ["--config", str(config)])


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--alpha", "1.5"], "--alpha must be in"),
        (["--alpha", "half"], "--alpha must be a number"),
        (["--asc_batch_size", "0"], "--asc_batch_size must be positive"),
        (["--aet_batch_size", "-4"], "--aet_batch_size must be positive"),
        (["--checkpointing_steps", "0"], "--checkpointing_steps must be a positive"),
        (["--synthetic_event_informativeness", "1.5"], "--synthetic_event_informativeness must be in"),
        (["--save_total_limit", "-1"], "--save_total_limit must be at least 1"),
        (["--dataloader_num_workers", "-1"], "--dataloader_num_workers must be 0 or more"),
        (["--torch_compile_mode", "max-autotune"], "--torch_compile_mode max-autotune needs --torch_compile"),
        (["--save_total_limit", "0"], "--save_total_limit must be at least 1"),
        (["--asc_validation_split", "1.0"], "--asc_validation_split must be in"),
        (["--num_mel_bins", "0"], "--num_mel_bins must be positive"),
        (["--sampling_rate", "0"], "--sampling_rate must be positive"),
        (["--clip_seconds", "0"], "--clip_seconds must be positive"),
        (["--n_fft", "2"], "mel bands would be all zero"),
        (["--max_asc_train_samples", "0", "--max_train_steps", "1"], "scene_train is empty"),
        (["--asc_dataset", "/no/such/folder"], "--asc_dataset"),
    ],
)
def test_bad_arguments_are_clear_errors(tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        in_process("--output_dir", str(tmp_path / "out"), *flags)


def test_choice_flags_list_their_choices(tmp_path):
    done = run_script("--output_dir", str(tmp_path / "out"), "--report_to", "tensorboard")
    assert done.returncode != 0 and "invalid choice: 'tensorboard'" in done.stderr and "wandb" in done.stderr
    done = run_script("--output_dir", str(tmp_path / "out"), "--loss_balancing", "auto")
    assert done.returncode != 0 and "invalid choice: 'auto'" in done.stderr


def test_output_dir_holding_another_run_is_refused(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(ValueError, match="already holds a run"):
        in_process("--output_dir", str(tmp_path))
    assert (tmp_path / "results.json").read_text() == "{}"


def test_help_documents_every_flag():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_joint.py"), "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for flag in ("--alpha", "--asc_batch_size", "--aet_batch_size", "--learning_rate", "--report_to", "--config", "--output_dir"):
        assert flag in done.stdout
    assert "alpha * L_AET" in done.stdout
