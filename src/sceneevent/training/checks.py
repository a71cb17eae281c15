"""The checks a run passes before any long work: its arguments, its feature settings, its output folder, and the
signature a checkpoint must match to be resumed."""

from __future__ import annotations

import json
from dataclasses import MISSING, fields
from pathlib import Path

from .arguments import DataArguments, JointTrainingArguments, ModelArguments, to_dict
from .balancing import balanced_alpha
from .checkpointing import CHECKPOINTS_DIR
from .results import RESULTS_FILE, read_results

# Settings that may differ when a run resumes: where and how often it logs or saves, how fast it runs,
# and how long it trains (more epochs continue the same run; the schedule then follows the new length).
RESUMABLE_CHANGES = frozenset({
    "output_dir", "overwrite_output_dir", "resume_from_checkpoint", "num_train_epochs", "max_train_steps",
    "logging_steps", "checkpointing_steps", "save_total_limit", "report_to", "wandb_project", "run_name",
    "push_to_hub", "hub_model_id", "hub_private", "hub_revision", "dataloader_num_workers", "gpu_batch_copy",
    "preprocessing_num_workers", "feature_store_dir", "num_cpu_threads", "eval_batch_size", "cache_on_device", "channels_last",
    "torch_compile", "torch_compile_mode", "log_task_gradients", "asc_baseline", "aet_baseline", "distributed_timeout",
})  # fmt: skip


def resolve_alpha(train_args: JointTrainingArguments) -> float:
    """`--alpha` as a number; 'auto' balances the converged losses of the two baseline runs."""
    if str(train_args.alpha).lower() == "auto":
        if not (train_args.asc_baseline and train_args.aet_baseline):
            raise ValueError("--alpha auto needs --asc_baseline DIR (an alpha=0 run) and --aet_baseline DIR (an alpha=1 run)")
        return balanced_alpha(read_results(train_args.asc_baseline), read_results(train_args.aet_baseline))
    try:
        alpha = float(train_args.alpha)
    except ValueError:
        raise ValueError(f"--alpha must be a number in [0, 1] or 'auto', got {train_args.alpha!r}") from None
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1] (0 = scene task only, 1 = event task only), got {alpha}")
    return alpha


def check_arguments(data_args: DataArguments, train_args: JointTrainingArguments) -> None:
    """Fail before any long work on values that cannot work."""
    for name in ("asc_batch_size", "aet_batch_size", "eval_batch_size", "gradient_accumulation_steps", "logging_steps"):
        if getattr(train_args, name) <= 0:
            raise ValueError(f"--{name} must be positive, got {getattr(train_args, name)}")
    if train_args.num_train_epochs <= 0 and not train_args.max_train_steps:
        raise ValueError(f"--num_train_epochs must be positive, got {train_args.num_train_epochs}")
    if train_args.max_train_steps is not None and train_args.max_train_steps <= 0:
        raise ValueError(f"--max_train_steps must be positive, got {train_args.max_train_steps}")
    if train_args.learning_rate <= 0:
        raise ValueError(f"--learning_rate must be positive, got {train_args.learning_rate}")
    steps = train_args.checkpointing_steps
    if steps is not None and steps != "epoch" and not (str(steps).isdigit() and int(steps) > 0):
        raise ValueError(f"--checkpointing_steps must be a positive number of steps or 'epoch', got {steps!r}")
    if train_args.save_total_limit is not None and train_args.save_total_limit < 1:
        raise ValueError(f"--save_total_limit must be at least 1 (the newest checkpoints kept), got {train_args.save_total_limit}")
    if not 0.0 <= data_args.asc_validation_split < 1.0:
        raise ValueError(f"--asc_validation_split must be in [0, 1) (0 turns validation off), got {data_args.asc_validation_split}")
    for name in ("synthetic_difficulty", "synthetic_event_informativeness"):
        if not 0.0 <= getattr(data_args, name) <= 1.0:
            raise ValueError(f"--{name} must be in [0, 1], got {getattr(data_args, name)}")
    if train_args.torch_compile_mode != "default" and not train_args.torch_compile:
        raise ValueError(f"--torch_compile_mode {train_args.torch_compile_mode} needs --torch_compile")
    if data_args.dataloader_num_workers is not None and data_args.dataloader_num_workers < 0:
        raise ValueError(f"--dataloader_num_workers must be 0 or more reader threads, got {data_args.dataloader_num_workers}")
    if train_args.num_cpu_threads is not None and train_args.num_cpu_threads <= 0:
        raise ValueError(f"--num_cpu_threads must be positive, got {train_args.num_cpu_threads}")
    if train_args.log_task_gradients is not None and train_args.log_task_gradients <= 0:
        raise ValueError(f"--log_task_gradients must be a positive number of steps, got {train_args.log_task_gradients}")
    if train_args.push_to_hub and not train_args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id user/name")
    check_feature_settings(data_args.resolved_features())


def check_feature_settings(features: dict) -> None:
    """Feature settings that would silently give empty or meaningless spectrograms."""
    for name in ("sampling_rate", "clip_seconds", "num_mel_bins", "hop_length", "n_fft"):
        if features[name] <= 0:
            raise ValueError(f"--{name} must be positive, got {features[name]}")
    clip_samples = int(features["sampling_rate"] * features["clip_seconds"])
    if features["n_fft"] > clip_samples:
        raise ValueError(f"--n_fft {features['n_fft']} is longer than a clip ({clip_samples} samples)")
    import torchaudio

    filters = torchaudio.functional.melscale_fbanks(
        features["n_fft"] // 2 + 1, 0.0, features["sampling_rate"] / 2, features["num_mel_bins"], features["sampling_rate"]
    )  # (frequencies, mel bands)
    empty = int((filters.sum(dim=0) == 0).sum())
    if empty:
        raise ValueError(
            f"--n_fft {features['n_fft']} gives {features['n_fft'] // 2 + 1} frequency bins, too few for "
            f"--num_mel_bins {features['num_mel_bins']}: {empty} mel bands would be all zero; raise --n_fft or lower --num_mel_bins"
        )


def check_output_dir(output_dir: Path, overwrite: bool, resuming: bool) -> None:
    """Refuse to mix two runs in one folder."""
    if resuming or overwrite or not output_dir.exists():
        return
    holds_run = (output_dir / RESULTS_FILE).exists() or (output_dir / CHECKPOINTS_DIR).exists() or (
        output_dir / "model.safetensors"
    ).exists()
    if holds_run:
        raise ValueError(
            f"--output_dir {output_dir} already holds a run; pass --overwrite_output_dir to replace it, "
            "--resume_from_checkpoint latest to continue it, or choose another folder"
        )


def run_signature(model_args: ModelArguments, data_args: DataArguments, train_args: JointTrainingArguments,
                  alpha: float, num_processes: int) -> dict:
    """The settings a checkpoint must be resumed with (all but `RESUMABLE_CHANGES`). The feature settings are
    compared as resolved (`feature_hop_length`), not as given: a default that depends on the data is None."""
    features = data_args.resolved_features()
    settings = {k: v for k, v in to_dict(model_args, data_args, train_args).items() if k not in RESUMABLE_CHANGES and k not in features}
    settings.update({"alpha": alpha, "num_processes": num_processes, **{f"feature_{k}": v for k, v in features.items()}})
    return json.loads(json.dumps(settings))  # as it reads back from the checkpoint's JSON


def signature_defaults() -> dict:
    """Every setting's default, for checkpoints written before the setting existed."""
    return json.loads(json.dumps({f.name: f.default for group in (ModelArguments, DataArguments, JointTrainingArguments)
                                  for f in fields(group) if f.default is not MISSING}))
