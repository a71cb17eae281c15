"""Command-line arguments of the training scripts, as `HfArgumentParser` dataclasses.

Every field has help text, so `--help` documents it. Any script reads the same fields from a
YAML or JSON file with `--config FILE`; flags given on the command line override the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import reprlib
import sys
import typing
from dataclasses import asdict, dataclass, field
from typing import Literal

import yaml
from transformers import HfArgumentParser


@dataclass
class ModelArguments:
    encoder: str = field(default="resnet18", metadata={"help": "timm encoder name (created with in_chans=1, num_classes=0)."})
    encoder_pretrained: str | None = field(
        default=None,
        metadata={"help": "Start the encoder from published timm weights: a Hub id (e.g. timm/resnet18.a1_in1k; the first "
                          "convolution is summed to one input channel, the classifier dropped) or a local weights file. "
                          "Fetched before any data work; with --model_name_or_path the saved model's weights are the start. Default: "
                          "random initialisation."},
    )
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
    synthetic_event_informativeness: float = field(
        default=0.5,
        metadata={"help": "How much of a synthetic scene's identity its events carry, in [0, 1]: at 1 the scenes of a "
                  "background group sound alike and only their typical events tell them apart; at 0 every clip holds any "
                  "of the 40 event classes with the same probability and only the backgrounds tell them apart. "
                  "See data_cards/synthetic.md."},
    )
    synthetic_swap_event_roles: bool = field(
        default=False,
        metadata={"help": "Plant each synthetic scene event's counterpart instead (same frequency and harmonics, another "
                  "temporal pattern), so the correlated and uncorrelated classes trade places: a study that runs half its "
                  "seeds this way counterbalances how the two class sets sound. See data_cards/synthetic.md."},
    )
    synthetic_seed: int = field(default=0, metadata={"help": "Seed that generates the synthetic data and draws the test split "
                                                     "of a source without one (the TUT 2018 Hub mirror, an audiofolder "
                                                     "without split folders); not the training seed."})
    synthetic_train_clips_per_scene: int = field(
        default=64, metadata={"help": "Synthetic scene clips per scene in the train split (the validation split is carved from it)."}
    )
    synthetic_test_clips_per_scene: int = field(
        default=30, metadata={"help": "Synthetic scene clips per scene in the test split (more: less noisy test readings)."}
    )
    sampling_rate: int | None = field(
        default=None, metadata={"help": "Feature sampling rate in Hz. Default: 32000, or 16000 for the synthetic data."}
    )
    clip_seconds: float | None = field(
        default=None, metadata={"help": "Clip length in seconds (crop/pad). Default: 10 (the paper), or 2 for the synthetic data."}
    )
    num_mel_bins: int | None = field(
        default=None, metadata={"help": "Mel bands. Default: 128 (the paper), or 64 for the synthetic data."}
    )
    hop_length: int | None = field(
        default=None, metadata={"help": "STFT hop in samples. Default: 320 (10 ms at 32 kHz: 1001 frames per 10 s, the paper), "
                                "or 640 for the synthetic data (40 ms at 16 kHz: 51 frames per 2 s clip)."}
    )
    n_fft: int = field(default=1024, metadata={"help": "STFT size in samples."})
    max_asc_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N scene training clips (debugging)."})
    max_aet_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N event training clips (debugging)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N clips of each evaluation split."})
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes that decode clips into the log-mel store (default: this process only)."})
    feature_store_dir: str | None = field(
        default=None,
        metadata={"help": "Folder of the log-mel store: every clip's features, decoded once and shared by every data set "
                  "and split that holds the clip. Default: sceneevent_features in the datasets cache (HF_DATASETS_CACHE)."},
    )
    skip_bad_audio: bool = field(
        default=False, metadata={"help": "Drop undecodable audio files (listed and counted) instead of stopping."}
    )
    dataloader_num_workers: int | None = field(
        default=None, metadata={"help": "Reader threads per stream that read batches ahead (0: read in the training loop). "
                                "Threads, not processes: no batch is copied between processes. Default: 1 on a GPU, "
                                "0 on a CPU (whose step uses every core)."}
    )
    gpu_batch_copy: Literal["training_stream", "side_stream"] = field(
        default="training_stream",
        metadata={"help": "How training batches reach a GPU: training_stream (pinned where read, copied non_blocking on the "
                  "training stream, as DataLoader's pin_memory) or side_stream (copied where read on a CUDA stream of "
                  "their own; on one H200, bf16, the paper's shape, ~1.7 %% faster behind a 54 ms step: 54.1 vs 55.0 ms "
                  "with one reader thread, a single run, so not the default). No effect on a CPU."},
    )
    asc_validation_split: float = field(
        default=0.1,
        metadata={"help": "Fraction of the scene training clips held out as the validation split (grouped by recording "
                  "location, stratified by scene). The best epoch is chosen on it; the test split only reports. "
                  "0 turns selection off: the last epoch is the result."},
    )
    validation_split_seed: int = field(
        default=0, metadata={"help": "Seed that draws the scene validation split (not the training seed, so runs with "
                             "different seeds share one validation split)."}
    )

    def uses_synthetic_defaults(self) -> bool:
        """Whether the demo's defaults apply: the scene data is the embedded synthetic set."""
        return self.asc_dataset == "synthetic"

    def resolved_features(self) -> dict:
        """Feature settings with the defaults filled in for the data in use."""
        synthetic = self.uses_synthetic_defaults()
        return {
            "sampling_rate": _default(self.sampling_rate, 16000 if synthetic else 32000),
            "clip_seconds": _default(self.clip_seconds, 2.0 if synthetic else 10.0),
            "num_mel_bins": _default(self.num_mel_bins, 64 if synthetic else 128),
            "hop_length": _default(self.hop_length, 640 if synthetic else 320),
            "n_fft": self.n_fft,
        }


def _default(value, fallback):
    return fallback if value is None else value  # not `or`: an explicit 0 must reach the checks


# Training settings whose default depends on the data (a field left at None takes one of these).
# The paper's values (Parikh et al. 2022) for real data; the demo's for the embedded synthetic data,
# chosen so that `accelerate launch scripts/train_joint.py` learns both tasks in about 3 minutes of training
# on a 2-core CPU (see data_cards/synthetic.md, "Demo defaults").
PAPER_TRAINING_DEFAULTS = {
    "asc_batch_size": 64,
    "aet_batch_size": 128,
    "num_train_epochs": 10,
    "learning_rate": 1e-3,
    "aet_specaugment": True,
    "aet_mixup": True,
}
SYNTHETIC_TRAINING_DEFAULTS = {
    "asc_batch_size": 16,
    "aet_batch_size": 48,
    "num_train_epochs": 10,
    "learning_rate": 2e-3,  # 350 steps: a higher peak rate gets the event head further (val lwlrap 0.81 vs 0.75 at 1e-3)
    "aet_specaugment": False,  # frequency masks erase whole narrow-band synthetic events while their labels stay
    "aet_mixup": False,
}


def resolve_defaults(data_args: DataArguments, train_args: JointTrainingArguments) -> JointTrainingArguments:
    """A copy of `train_args` with every data-dependent setting left at None filled in for the data in use.

    Real data gets the paper's values (64 + 128 clips, event SpecAugment and MixUp on); the embedded synthetic
    data gets the demo's (`SYNTHETIC_TRAINING_DEFAULTS`). Values set explicitly (flag or --config) are kept.
    """
    table = SYNTHETIC_TRAINING_DEFAULTS if data_args.uses_synthetic_defaults() else PAPER_TRAINING_DEFAULTS
    return dataclasses.replace(train_args, **{name: value for name, value in table.items() if getattr(train_args, name) is None})


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
    loss_balancing: Literal["fixed", "uncertainty", "dwa"] = field(
        default="fixed",
        metadata={"help": "fixed: the model's own loss with --alpha (the paper; for a balanced alpha use --alpha auto); "
                  "uncertainty: learned weights (Kendall et al. 2018); dwa: dynamic weight averaging (Liu et al. 2019)."},
    )
    log_task_gradients: int | None = field(
        default=None,
        metadata={"help": "Every N steps, log each task's gradient norm on the shared encoder and the cosine between "
                  "them (two extra backward passes on those steps)."},
    )
    asc_batch_size: int | None = field(
        default=None, metadata={"help": "Scene clips in every training batch, per process. Default: 64 (the paper), or 16 for the synthetic data."}
    )
    aet_batch_size: int | None = field(
        default=None, metadata={"help": "Event clips in every training batch, per process. Default: 128 (the paper), or 48 for the synthetic data."}
    )
    eval_batch_size: int = field(default=128, metadata={"help": "Clips per evaluation batch, per process."})
    learning_rate: float | None = field(
        default=None, metadata={"help": "Peak AdamW learning rate. Default: 0.001 for real data, or 0.002 for the synthetic data."}
    )
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay."})
    lr_scheduler_type: str = field(
        default="cosine", metadata={"help": "Learning-rate schedule (transformers.get_scheduler names: linear, cosine, constant, ...)."}
    )
    warmup_ratio: float = field(default=0.05, metadata={"help": "Fraction of the steps spent warming the learning rate up."})
    num_train_epochs: int | None = field(
        default=None, metadata={"help": "Epochs; one epoch is one pass over the scene training set. Default: 10 (the paper), or 10 "
                                "for the synthetic data (35 steps of 16 + 48 clips each)."}
    )
    max_train_steps: int | None = field(default=None, metadata={"help": "Stop after this many steps (overrides --num_train_epochs)."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches accumulated per optimiser step."})
    seed: int = field(default=42, metadata={"help": "Training seed (initialisation, batch order, augmentation)."})
    mixed_precision: Literal["no", "fp16", "bf16"] | None = field(
        default=None, metadata={"help": "no, fp16 or bf16. Default: what `accelerate config` / `accelerate launch` says."}
    )
    num_cpu_threads: int | None = field(
        default=None,
        metadata={"help": "Torch threads per process on CPU. Default: all cores shared among the processes when "
                  "`accelerate launch` pinned the run to 1 thread (it does without --cpu), else torch's own choice."},
    )
    distributed_timeout: int = field(
        default=1800,
        metadata={"help": "Seconds a process of a multi-process run waits for the others at a collective (a gradient "
                  "all-reduce, a barrier) before it stops with an error naming the wait: a stopped, hung or dead process "
                  "ends the run instead of blocking it. The main process prepares the data alone while the others wait, "
                  "so a first log-mel cache build longer than this needs a larger value."},
    )
    cache_on_device: bool = field(
        default=False,
        metadata={"help": "Hold both training caches on the training device and index them there (no loader); "
                  "for caches that fit in accelerator memory."},
    )
    channels_last: bool = field(
        default=True,
        metadata={"help": "Train in the channels_last memory format: faster convolutions (on 2 CPU cores 12 %% less time per "
                  "demo step, 21 %% at 64 mels x 101 frames; on GPUs with bf16). --no_channels_last for the contiguous format."},
    )
    torch_compile: bool = field(
        default=False,
        metadata={"help": "Compile the model with torch.compile (inductor). Off by default: it pays only once the steps it "
                  "saves outweigh the compile, which results.json reports as first_step_runtime (see docs/performance.md)."},
    )
    torch_compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = field(
        default="default", metadata={"help": "torch.compile mode with --torch_compile (reduce-overhead: CUDA graphs)."}
    )
    specaugment: bool = field(default=True, metadata={"help": "SpecAugment on the scene clips."})
    aet_specaugment: bool | None = field(
        default=None, metadata={"help": "SpecAugment on the event clips. Default: on (the paper), or off for the synthetic data."}
    )
    mixup: bool = field(default=True, metadata={"help": "MixUp within the scene sub-batch (soft one-hot targets)."})
    aet_mixup: bool | None = field(
        default=None, metadata={"help": "MixUp within the event sub-batch (mixed multi-hot targets). Default: on (the paper), "
                                "or off for the synthetic data."}
    )
    mixup_alpha: float = field(default=0.3, metadata={"help": "MixUp Beta(a, a) parameter."})
    freq_mask_width: int = field(default=8, metadata={"help": "SpecAugment: maximum width of each of 2 frequency masks (bins)."})
    time_mask_width: int = field(default=10, metadata={"help": "SpecAugment: maximum width of each of 2 time masks (frames)."})
    logging_steps: int = field(default=10, metadata={"help": "Log training losses every N steps."})
    report_to: Literal["none", "wandb"] = field(default="none", metadata={"help": "none or wandb (offline when no W&B login is present)."})
    wandb_project: str = field(default="sceneevent", metadata={"help": "W&B project name."})
    run_name: str | None = field(default=None, metadata={"help": "Run name for W&B (default: the output dir's name)."})
    checkpointing_steps: str | None = field(
        default=None, metadata={"help": "Save a resumable checkpoint every N steps, or 'epoch'. Default: none."}
    )
    save_total_limit: int | None = field(default=None, metadata={"help": "Keep only the newest N checkpoints (N >= 1)."})
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
        check_config_values(config_path, values, dataclass_types)
        parser.set_defaults(**values)
    # The extra `--config` comes back as a trailing namespace, then the unknown strings; keep the dataclasses.
    *parsed, unknown = parser.parse_args_into_dataclasses(args=args, return_remaining_strings=True)
    if unknown:
        # Name the flags only: a value may be a secret (e.g. `--hub_token hf_...`).
        flags = sorted({value.split("=", 1)[0] for value in unknown if value.startswith("-")}) or ["(positional values)"]
        raise ValueError(f"unknown argument(s) {flags}; see --help")
    parsed = parsed[: len(dataclass_types)]
    return tuple(parsed) if len(parsed) > 1 else parsed[0]


def _pop_config(args: list[str]) -> str | None:
    for index, value in enumerate(args):
        if value == "--config" and index + 1 < len(args):
            return args[index + 1]
        if value.startswith("--config="):
            return value.split("=", 1)[1]
    return None


MAX_YAML_VALUES = 100_000  # far more than any config or sweep file holds


class BoundedYamlLoader(yaml.SafeLoader):
    """SafeLoader that refuses a document whose aliases expand it beyond MAX_YAML_VALUES values: ten short lines of
    nested aliases (a "billion laughs") stand for 10^9 values, which anything walking or printing them (an error
    message, a sweep's grid) runs out of memory on. Aliases within the bound (a list of seeds reused) are read."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_YAML_VALUES:
            raise yaml.YAMLError(f"refused: its aliases expand it to over {MAX_YAML_VALUES:,} values")
        return node


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Values in `node` with every alias written out; each shared node is counted once per use but walked once."""
    if id(node) not in sizes:
        sizes[id(node)] = MAX_YAML_VALUES + 1  # until known: a node that contains itself (`&a [*a]`) is unbounded
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        sizes[id(node)] = 1 + sum(_expanded_size(child, sizes) for child in children)
    return sizes[id(node)]


def load_config_file(path: str) -> dict:
    if not os.path.isfile(path):
        raise ValueError(f"--config {path}: no such file")
    try:
        with open(path, encoding="utf-8-sig") as handle:  # -sig: a byte-order mark (Windows editors) is not text
            values = json.load(handle) if path.endswith(".json") else yaml.load(handle, Loader=BoundedYamlLoader)
    except UnicodeDecodeError as error:
        raise ValueError(f"--config {path}: not UTF-8 text ({error})") from None
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"--config {path}: not valid {'JSON' if path.endswith('.json') else 'YAML'} ({error})") from None
    except RecursionError:
        raise ValueError(f"--config {path}: nested too deeply to read (no argument takes a nested value)") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: expected a mapping of argument names to values")
    return values


def check_config_values(path: str, values: dict, dataclass_types) -> None:
    """A config file's values bypass argparse's conversions, so check each against its field's type here."""
    types = {}
    for dataclass_type in dataclass_types:
        hints = typing.get_type_hints(dataclass_type)
        types.update({f.name: hints[f.name] for f in dataclasses.fields(dataclass_type)})
    unknown = sorted(map(str, set(values) - set(types)))
    if unknown:
        raise ValueError(f"{path}: unknown argument(s) {_SHOWN.repr(unknown)}")
    problems = [f"{name}: {_SHOWN.repr(value)} is not {_describe(types[name])}" for name, value in values.items() if not _fits(value, types[name])]
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))


# What an error shows of a config value: its start, however long or nested the value is.
_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxdict, _SHOWN.maxstring, _SHOWN.maxother = 3, 8, 8, 80, 80


def _fits(value, annotation) -> bool:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return value in args
    if args and type(None) in args:  # Optional[...]
        return value is None or any(_fits(value, a) for a in args if a is not type(None))
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:  # `alpha: 0.5` or `checkpointing_steps: 100` are fine as text; lists and mappings are not
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)
    return True


def _describe(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if args and type(None) in args:
        return " or ".join(_describe(a) for a in args if a is not type(None)) + " or null"
    return {bool: "true/false", int: "a whole number", float: "a number", str: "a single value"}.get(annotation, str(annotation))


def to_dict(*argument_groups) -> dict:
    merged = {}
    for group in argument_groups:
        merged.update(asdict(group))
    return merged
