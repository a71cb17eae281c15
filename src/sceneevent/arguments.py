"""Command-line arguments of the training scripts, as `HfArgumentParser` dataclasses.

Every field has help text, so `--help` documents it. Any script reads the same fields from a
YAML or JSON file with `--config FILE`; flags given on the command line override the file.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field, fields

import yaml
from transformers import HfArgumentParser


@dataclass
class ModelArguments:
    encoder: str = field(default="resnet18", metadata={"help": "timm encoder name (created with in_chans=1, num_classes=0)."})
    dropout: float = field(default=0.2, metadata={"help": "Dropout on the pooled embedding, before both heads."})
    drop_path_rate: float = field(default=0.0, metadata={"help": "Stochastic depth rate inside the encoder."})
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Start from a saved run folder or Hub id instead of random weights (label sets must match)."},
    )
    reinit_scene_head: bool = field(
        default=False, metadata={"help": "With --model_name_or_path: start the scene head afresh (fine-tuning after event pre-training)."}
    )


@dataclass
class DataArguments:
    asc_dataset: str = field(
        default="synthetic",
        metadata={"help": "Scene data: 'synthetic' (embedded, generated), a TUT Urban Acoustic Scenes 2018 folder, "
                  "a folder saved with save_to_disk, an audiofolder, or a Hub id."},
    )
    asc_label_column: str = field(default="scene", metadata={"help": "Scene label column of --asc_dataset."})
    aet_dataset: str = field(
        default="synthetic",
        metadata={"help": "Event data: 'synthetic' (embedded), a folder written by build_aet_subset.py, or an AudioSet source. "
                  "Not used when --alpha 0."},
    )
    synthetic_difficulty: float = field(
        default=0.6, metadata={"help": "Difficulty of the synthetic data in [0, 1] (higher: scenes harder to tell apart)."}
    )
    synthetic_seed: int = field(default=0, metadata={"help": "Seed that generates the synthetic data (not the training seed)."})
    sampling_rate: int | None = field(
        default=None, metadata={"help": "Feature sampling rate in Hz. Default: 32000, or 16000 for the synthetic data."}
    )
    clip_seconds: float | None = field(
        default=None, metadata={"help": "Clip length in seconds (crop/pad). Default: 10 (the paper), or 2 for the synthetic data."}
    )
    num_mel_bins: int | None = field(
        default=None, metadata={"help": "Mel bands. Default: 128 (the paper), or 64 for the synthetic data."}
    )
    hop_length: int = field(default=320, metadata={"help": "STFT hop in samples (320 at 32 kHz = 10 ms: 1001 frames per 10 s)."})
    n_fft: int = field(default=1024, metadata={"help": "STFT size in samples."})
    max_asc_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N scene training clips (debugging)."})
    max_aet_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N event training clips (debugging)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N clips of each evaluation split."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for the log-mel cache build."})
    skip_bad_audio: bool = field(
        default=False, metadata={"help": "Drop undecodable audio files (listed and counted) instead of stopping."}
    )
    dataloader_num_workers: int = field(default=0, metadata={"help": "Loader worker processes per stream (0: read in the main process)."})

    def resolved_features(self) -> dict:
        """Feature settings with the defaults filled in for the data in use."""
        synthetic = self.asc_dataset == "synthetic"
        return {
            "sampling_rate": self.sampling_rate or (16000 if synthetic else 32000),
            "clip_seconds": self.clip_seconds or (2.0 if synthetic else 10.0),
            "num_mel_bins": self.num_mel_bins or (64 if synthetic else 128),
            "hop_length": self.hop_length,
            "n_fft": self.n_fft,
        }


@dataclass
class JointTrainingArguments:
    output_dir: str = field(default="outputs/joint", metadata={"help": "Run folder: model, results.json, checkpoints."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Allow writing into a folder that holds another run."})
    alpha: str = field(
        default="0.95",
        metadata={"help": "Event-loss weight: loss = alpha * L_AET + (1 - alpha) * L_ASC, in [0, 1]. 0 = scene only, 1 = event only. "
                  "'auto' balances the two from --asc_baseline and --aet_baseline."},
    )
    asc_baseline: str | None = field(default=None, metadata={"help": "Run folder of an alpha=0 run (for --alpha auto)."})
    aet_baseline: str | None = field(default=None, metadata={"help": "Run folder of an alpha=1 run (for --alpha auto)."})
    loss_balancing: str = field(
        default="fixed",
        metadata={"help": "fixed (alpha, the paper), auto (alpha from --asc_baseline/--aet_baseline), uncertainty "
                  "(learned, Kendall et al. 2018) or dwa (dynamic weight averaging, Liu et al. 2019)."},
    )
    log_task_gradients: int | None = field(
        default=None,
        metadata={"help": "Every N steps, log each task's gradient norm on the shared encoder and the cosine between "
                  "them (two extra backward passes on those steps)."},
    )
    asc_batch_size: int = field(default=64, metadata={"help": "Scene clips in every training batch, per process."})
    aet_batch_size: int = field(default=128, metadata={"help": "Event clips in every training batch, per process."})
    eval_batch_size: int = field(default=128, metadata={"help": "Clips per evaluation batch, per process."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay."})
    lr_scheduler_type: str = field(
        default="cosine", metadata={"help": "Learning-rate schedule (transformers.get_scheduler names: linear, cosine, constant, ...)."}
    )
    warmup_ratio: float = field(default=0.05, metadata={"help": "Fraction of the steps spent warming the learning rate up."})
    num_train_epochs: int = field(default=10, metadata={"help": "Epochs; one epoch is one pass over the scene training set."})
    max_train_steps: int | None = field(default=None, metadata={"help": "Stop after this many steps (overrides --num_train_epochs)."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches accumulated per optimiser step."})
    seed: int = field(default=42, metadata={"help": "Training seed (initialisation, batch order, augmentation)."})
    mixed_precision: str | None = field(
        default=None, metadata={"help": "no, fp16 or bf16. Default: what `accelerate config` / `accelerate launch` says."}
    )
    num_cpu_threads: int | None = field(
        default=None,
        metadata={"help": "Torch threads per process on CPU. Default: all cores shared among the processes when "
                  "`accelerate launch` pinned the run to 1 thread (it does without --cpu), else torch's own choice."},
    )
    cache_on_device: bool = field(
        default=False,
        metadata={"help": "Hold both training caches on the training device and index them there (no loader); "
                  "for caches that fit in accelerator memory."},
    )
    channels_last: bool = field(default=False, metadata={"help": "channels_last memory format (faster convolutions on GPUs)."})
    torch_compile: bool = field(default=False, metadata={"help": "Compile the model with torch.compile (inductor)."})
    specaugment: bool = field(default=True, metadata={"help": "SpecAugment on the scene clips."})
    aet_specaugment: bool = field(default=True, metadata={"help": "SpecAugment on the event clips."})
    mixup: bool = field(default=True, metadata={"help": "MixUp within the scene sub-batch (soft one-hot targets)."})
    aet_mixup: bool = field(default=True, metadata={"help": "MixUp within the event sub-batch (mixed multi-hot targets)."})
    mixup_alpha: float = field(default=0.3, metadata={"help": "MixUp Beta(a, a) parameter."})
    freq_mask_width: int = field(default=8, metadata={"help": "SpecAugment: maximum width of each of 2 frequency masks (bins)."})
    time_mask_width: int = field(default=10, metadata={"help": "SpecAugment: maximum width of each of 2 time masks (frames)."})
    logging_steps: int = field(default=10, metadata={"help": "Log training losses every N steps."})
    report_to: str = field(default="none", metadata={"help": "none or wandb (offline when no W&B login is present)."})
    wandb_project: str = field(default="sceneevent", metadata={"help": "W&B project name."})
    run_name: str | None = field(default=None, metadata={"help": "Run name for W&B (default: the output dir's name)."})
    checkpointing_steps: str | None = field(
        default=None, metadata={"help": "Save a resumable checkpoint every N steps, or 'epoch'. Default: none."}
    )
    save_total_limit: int | None = field(default=None, metadata={"help": "Keep only the newest N checkpoints."})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "'latest' or a checkpoint folder to resume from."})
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the finished run folder to the Hub."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repository (user/name) for --push_to_hub."})
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub repository as private."})
    hub_revision: str | None = field(default=None, metadata={"help": "Hub branch to push to (created if missing)."})


def parse_args(dataclass_types, args: list[str] | None = None):
    """Parse `args` (default: sys.argv) into the dataclasses; `--config FILE` supplies defaults."""
    args = list(sys.argv[1:] if args is None else args)
    parser = HfArgumentParser(dataclass_types)
    parser.add_argument("--config", default=None, help="YAML or JSON file with any of the arguments below.")
    config_path = _pop_config(args)
    if config_path:
        values = load_config_file(config_path)
        known = {f.name for dataclass_type in dataclass_types for f in fields(dataclass_type)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{config_path}: unknown argument(s) {unknown}")
        parser.set_defaults(**values)
    # The extra `--config` comes back as a trailing namespace; keep only the dataclasses.
    parsed = parser.parse_args_into_dataclasses(args=args)[: len(dataclass_types)]
    return tuple(parsed) if len(parsed) > 1 else parsed[0]


def _pop_config(args: list[str]) -> str | None:
    for index, value in enumerate(args):
        if value == "--config" and index + 1 < len(args):
            return args[index + 1]
        if value.startswith("--config="):
            return value.split("=", 1)[1]
    return None


def load_config_file(path: str) -> dict:
    if not os.path.isfile(path):
        raise ValueError(f"--config {path}: no such file")
    with open(path) as handle:
        values = json.load(handle) if path.endswith(".json") else yaml.safe_load(handle)
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: expected a mapping of argument names to values")
    return values


def to_dict(*argument_groups) -> dict:
    merged = {}
    for group in argument_groups:
        merged.update(asdict(group))
    return merged
