"""The Accelerate training loop shared by the scripts: data → log-mel cache → multi-task batches → model."""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
import transformers
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from .arguments import DataArguments, JointTrainingArguments, ModelArguments, to_dict
from .augment import MixUp, SpecAugment
from .balancing import MODES as BALANCING_MODES
from .balancing import LossBalancer, task_gradient_stats
from .checkpointing import (
    CHECKPOINTS_DIR,
    RESULTS_FILE,
    TRAINER_STATE_FILE,
    check_resume_labels,
    resolve_checkpoint,
    save_checkpoint,
)
from .evaluation import evaluate_tasks
from .collator import join_task_batches
from .configuration_sceneevent import SceneEventConfig
from .data.sources import load_event_source, load_scene_source
from .feature_cache import build_feature_cache
from .feature_extraction_sceneevent import LogMelFeatureExtractor
from .io_utils import atomic_write_json, replace_files_from, scrub_secrets
from .loader import BatchReader, DeviceBatchReader, MultiTaskLoader, to_device
from .losses import balanced_alpha
from .metrics import load_metric
from .modeling_sceneevent import SceneEventModel

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class PreparedData:
    """Cached splits ready for the loaders."""

    scene_train: datasets.Dataset
    scene_test: datasets.Dataset
    event_train: datasets.Dataset | None
    event_validation: datasets.Dataset | None
    scene_labels: list[str]
    event_labels: list[str]
    bad_audio: dict[str, list[str]]
    fingerprints: dict[str, str]
    aet_subset: dict | None = None


# --- set-up -----------------------------------------------------------------------------------------


def resolve_alpha(train_args: JointTrainingArguments) -> float:
    """`--alpha` as a number; 'auto' balances the converged losses of the two baseline runs."""
    if str(train_args.alpha).lower() == "auto" or train_args.loss_balancing == "auto":
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


def read_results(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        raise ValueError(f"{path}: no results.json (is {run_dir} a finished run folder?)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


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
    if train_args.report_to not in ("none", "wandb"):
        raise ValueError(f"--report_to must be 'none' or 'wandb', got {train_args.report_to!r}")
    if train_args.mixed_precision not in (None, "no", "fp16", "bf16"):
        raise ValueError(f"--mixed_precision must be no, fp16 or bf16, got {train_args.mixed_precision!r}")
    if train_args.checkpointing_steps not in (None, "epoch") and not str(train_args.checkpointing_steps).isdigit():
        raise ValueError(f"--checkpointing_steps must be a number of steps or 'epoch', got {train_args.checkpointing_steps!r}")
    if not 0.0 <= data_args.synthetic_difficulty <= 1.0:
        raise ValueError(f"--synthetic_difficulty must be in [0, 1], got {data_args.synthetic_difficulty}")
    if train_args.num_cpu_threads is not None and train_args.num_cpu_threads <= 0:
        raise ValueError(f"--num_cpu_threads must be positive, got {train_args.num_cpu_threads}")
    if train_args.loss_balancing not in BALANCING_MODES:
        raise ValueError(f"--loss_balancing must be one of {', '.join(BALANCING_MODES)}, got {train_args.loss_balancing!r}")
    if train_args.log_task_gradients is not None and train_args.log_task_gradients <= 0:
        raise ValueError(f"--log_task_gradients must be a positive number of steps, got {train_args.log_task_gradients}")
    if train_args.push_to_hub and not train_args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id user/name")


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


def cpu_threads(requested: int | None, accelerator: Accelerator) -> int | None:
    """Threads for a CPU run: `requested`, or undo `accelerate launch`'s one-thread default."""
    if accelerator.device.type != "cpu":
        return None
    if requested:
        return requested
    # `accelerate launch` without --cpu exports OMP_NUM_THREADS=1, which halves a 2-core machine.
    if os.environ.get("OMP_NUM_THREADS") == "1" and "ACCELERATE_MIXED_PRECISION" in os.environ:
        return max(1, (os.cpu_count() or 1) // accelerator.num_processes)
    return None


def make_feature_extractor(data_args: DataArguments) -> LogMelFeatureExtractor:
    return LogMelFeatureExtractor(**data_args.resolved_features())


def prepare_data(
    data_args: DataArguments, extractor: LogMelFeatureExtractor, need_events: bool, seed: int
) -> PreparedData:
    """Load both sources and build (or reuse) their log-mel caches."""
    scenes = load_scene_source(
        data_args.asc_dataset, label_column=data_args.asc_label_column, seed=data_args.synthetic_seed,
        **_synthetic_kwargs(data_args, data_args.asc_dataset),
    )
    splits = {"scene_train": _first(scenes["train"], data_args.max_asc_train_samples),
              "scene_test": _first(scenes["test"], data_args.max_eval_samples)}
    scene_labels = scenes["train"].features["scene"].names
    event_labels: list[str] = []
    if need_events:
        events = load_event_source(
            data_args.aet_dataset, seed=data_args.synthetic_seed, **_synthetic_kwargs(data_args, data_args.aet_dataset)
        )
        splits["event_train"] = _first(events["train"], data_args.max_aet_train_samples)
        splits["event_validation"] = _first(events["validation"], data_args.max_eval_samples)
        event_labels = events["train"].features["events"].feature.names
    cached, bad_audio, fingerprints = {}, {}, {}
    for name, split in splits.items():
        cached[name], bad_audio[name] = build_feature_cache(
            split, extractor, split_name=name, num_proc=data_args.preprocessing_num_workers,
            skip_bad_audio=data_args.skip_bad_audio,
        )
        fingerprints[name] = split._fingerprint
    return PreparedData(
        scene_train=cached["scene_train"], scene_test=cached["scene_test"],
        event_train=cached.get("event_train"), event_validation=cached.get("event_validation"),
        scene_labels=list(scene_labels), event_labels=list(event_labels) or ["none"],
        bad_audio={k: v for k, v in bad_audio.items() if v}, fingerprints=fingerprints,
        aet_subset=read_subset_info(data_args.aet_dataset) if need_events else None,
    )


def read_subset_info(source: str) -> dict | None:
    """How an AET subset folder was built (k, hours, strategy, seed), if it is one."""
    path = Path(source) / "subset_info.json"
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    hours = info.get("hours_requested") or info.get("train_hours")
    return {"k": info.get("k"), "hours": hours, "strategy": info.get("strategy"), "seed": info.get("seed"),
            "source": info.get("source"), "train_clips": info.get("train_clips"), "events": info.get("events")}


def _synthetic_kwargs(data_args: DataArguments, source: str) -> dict:
    if source != "synthetic":
        return {}
    features = data_args.resolved_features()
    return {"difficulty": data_args.synthetic_difficulty, "clip_seconds": features["clip_seconds"]}


def _first(split: datasets.Dataset, limit: int | None) -> datasets.Dataset:
    return split.select(range(min(limit, len(split)))) if limit is not None else split


def build_model(model_args: ModelArguments, data: PreparedData, alpha: float, extractor) -> SceneEventModel:
    if model_args.model_name_or_path:
        model = SceneEventModel.from_pretrained(model_args.model_name_or_path)
        mismatched = [
            f"{task}: checkpoint {theirs} vs data {ours}"
            for task, theirs, ours in (
                ("scene labels", model.config.scene_labels, data.scene_labels),
                ("event labels", model.config.event_labels, data.event_labels),
            )
            if theirs != ours and not (task == "event labels" and alpha == 0.0)
        ]
        if mismatched:
            raise ValueError(f"--model_name_or_path {model_args.model_name_or_path}: label sets differ: " + "; ".join(mismatched))
        model.config.alpha = alpha
        if model_args.reinit_scene_head:
            model.scene_head.reset_parameters()
        return model
    config = SceneEventConfig(
        scene_labels=data.scene_labels,
        event_labels=data.event_labels,
        alpha=alpha,
        encoder=model_args.encoder,
        num_mel_bins=extractor.num_mel_bins,
        dropout=model_args.dropout,
        drop_path_rate=model_args.drop_path_rate,
    )
    return SceneEventModel(config)


# --- the loop --------------------------------------------------------------------------------------


def wandb_init_kwargs(output_dir: Path, run_name: str | None) -> dict:
    # No login → offline, so that nothing ever prompts on stdin.
    if "WANDB_MODE" not in os.environ and not os.environ.get("WANDB_API_KEY"):
        netrc = Path.home() / ".netrc"
        if not (netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")):
            os.environ["WANDB_MODE"] = "offline"
    (output_dir / "wandb").mkdir(parents=True, exist_ok=True)
    return {"wandb": {"name": run_name or output_dir.name, "dir": str(output_dir)}}


def train(model_args: ModelArguments, data_args: DataArguments, train_args: JointTrainingArguments, mode: str = "joint") -> dict:
    """Train jointly, evaluate every epoch, keep the best model by scene accuracy, write results.json."""
    started = time.time()
    check_arguments(data_args, train_args)
    alpha = resolve_alpha(train_args)
    output_dir = Path(train_args.output_dir)
    resume_from = resolve_checkpoint(output_dir, train_args.resume_from_checkpoint)
    check_output_dir(output_dir, train_args.overwrite_output_dir, resuming=resume_from is not None)

    # torchrun without GPUs: Accelerate sets up gloo (MULTI_CPU) only when told to use the CPU.
    launched_processes = int(os.environ.get("WORLD_SIZE", "1"))
    accelerator = Accelerator(
        cpu=launched_processes > 1 and not torch.cuda.is_available(),
        gradient_accumulation_steps=train_args.gradient_accumulation_steps,
        mixed_precision=train_args.mixed_precision,
        log_with="wandb" if train_args.report_to == "wandb" else None,
        project_dir=str(output_dir),
    )
    threads = cpu_threads(train_args.num_cpu_threads, accelerator)
    if threads:
        torch.set_num_threads(threads)
    if accelerator.num_processes != launched_processes:
        raise RuntimeError(
            f"launched as {launched_processes} processes but Accelerate sees {accelerator.num_processes}; "
            "on machines without GPUs set ACCELERATE_USE_CPU=1"
        )
    set_seed(train_args.seed)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        if train_args.overwrite_output_dir and resume_from is None:
            (output_dir / RESULTS_FILE).unlink(missing_ok=True)
    datasets.utils.logging.set_verbosity_warning()
    if not accelerator.is_local_main_process:
        datasets.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()

    uses_asc, uses_aet = alpha < 1.0, alpha > 0.0
    extractor = make_feature_extractor(data_args)
    with accelerator.main_process_first():
        data = prepare_data(data_args, extractor, need_events=uses_aet, seed=train_args.seed)
    model = build_model(model_args, data, alpha, extractor)

    shard = dict(num_processes=accelerator.num_processes, process_index=accelerator.process_index)
    scene_train = BatchReader(data.scene_train, "scene", len(data.scene_labels))
    event_train = BatchReader(data.event_train, "events", len(data.event_labels)) if uses_aet else None
    if train_args.cache_on_device:
        scene_train = DeviceBatchReader(scene_train, accelerator.device) if uses_asc else None
        event_train = DeviceBatchReader(event_train, accelerator.device) if uses_aet else None
    loader = MultiTaskLoader(
        epoch_rows=len(data.scene_train),
        asc=scene_train if uses_asc else None,
        aet=event_train,
        asc_batch_size=train_args.asc_batch_size,
        aet_batch_size=train_args.aet_batch_size,
        seed=train_args.seed,
        num_workers=data_args.dataloader_num_workers,
        pin_memory=accelerator.device.type == "cuda",
        **shard,
    )
    steps_per_epoch = loader.steps_per_epoch
    total_steps = train_args.max_train_steps or steps_per_epoch * train_args.num_train_epochs
    num_epochs = math.ceil(total_steps / steps_per_epoch)

    if train_args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    balancer = LossBalancer(train_args.loss_balancing, alpha).to(accelerator.device)
    optimizer = torch.optim.AdamW(
        list(model.parameters()) + list(balancer.parameters()), lr=train_args.learning_rate, weight_decay=train_args.weight_decay,
        foreach=accelerator.device.type != "cuda", fused=accelerator.device.type == "cuda" or None,
    )
    optimizer_steps = math.ceil(total_steps / train_args.gradient_accumulation_steps)
    scheduler = transformers.get_scheduler(
        train_args.lr_scheduler_type, optimizer,
        num_warmup_steps=int(train_args.warmup_ratio * optimizer_steps) * accelerator.num_processes,
        num_training_steps=optimizer_steps * accelerator.num_processes,
    )
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if train_args.torch_compile:
        model = torch.compile(model)
    augment = build_augmenters(train_args).to(accelerator.device)
    metrics = {name: load_metric(name) for name in ("macro_accuracy", "lwlrap")}
    scene_test = BatchReader(data.scene_test, "scene", len(data.scene_labels))
    event_validation = BatchReader(data.event_validation, "events", len(data.event_labels)) if uses_aet else None

    resolved = scrub_secrets({**to_dict(model_args, data_args, train_args), "alpha": alpha, "mode": mode, **{
        f"feature_{k}": v for k, v in data_args.resolved_features().items()}})
    if train_args.report_to == "wandb":
        accelerator.init_trackers(train_args.wandb_project, config=resolved,
                                  init_kwargs=wandb_init_kwargs(output_dir, train_args.run_name))

    state = {"global_step": 0, "history": [], "best": None, "epoch_sums": None, "alpha": alpha,
             "scene_labels": data.scene_labels, "event_labels": data.event_labels}
    if resume_from is not None:
        state = json.loads((resume_from / TRAINER_STATE_FILE).read_text())
        check_resume_labels(resume_from, state, data, alpha)
        accelerator.load_state(str(resume_from))  # model, optimizer, scheduler, scaler, RNG states
        loader.load_state_dict(state["loader"])
        balancer.load_state(state.get("balancer", {}))
        accelerator.print(f"resumed from {resume_from} at step {state['global_step']}")
    best_key = "aet_lwlrap" if alpha == 1.0 else "asc_macro_accuracy"

    progress = tqdm(total=total_steps, initial=state["global_step"], desc="train", disable=not accelerator.is_local_main_process)
    model.train()
    start_epoch, start_step = divmod(state["global_step"], steps_per_epoch)
    for epoch in range(start_epoch, num_epochs):
        sums = EpochLossSums(accelerator.device, state["epoch_sums"] if epoch == start_epoch else None)
        gradient_log = list(state.get("task_gradients", [])) if epoch == start_epoch else []
        for batch in loader.epoch(epoch, start_step if epoch == start_epoch else 0):
            inputs = prepare_batch(batch, augment, accelerator.device, model_config(model))
            with accelerator.accumulate(model):
                outputs = model(**inputs)
                objective = balancer(outputs.loss_asc, outputs.loss_aet)
                if _gradients_due(train_args.log_task_gradients, state["global_step"] + 1, outputs):
                    gradient_log.append(_task_gradients(model, balancer, outputs, state["global_step"] + 1))
                    accelerator.log({f"train/{k}": v for k, v in gradient_log[-1].items() if k != "step"}, step=state["global_step"] + 1)
                accelerator.backward(objective)
                if accelerator.sync_gradients:
                    balancer.average_gradients(accelerator)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            sums.add(outputs)
            state["global_step"] += 1
            progress.update(1)
            step = state["global_step"]
            if step % train_args.logging_steps == 0:
                logged = sums.latest(outputs, accelerator)  # the one host sync, on logging steps only
                if not math.isfinite(logged["train/loss"]):
                    raise NonFiniteLossError(
                        f"non-finite training loss ({logged['train/loss']}) at step {step}; "
                        f"the last good checkpoint (if any) is under {output_dir / CHECKPOINTS_DIR}"
                    )
                logged["train/lr"] = scheduler.get_last_lr()[0]
                progress.set_postfix({k.split("/")[1]: f"{v:.3g}" for k, v in logged.items()})
                accelerator.log(logged, step=step)
            end_of_epoch = step % steps_per_epoch == 0 or step == total_steps
            if _checkpoint_due(train_args.checkpointing_steps, step, end_of_epoch) and not end_of_epoch:
                epoch_sums = sums.to_json(accelerator)
                if not all(math.isfinite(v) for v in epoch_sums.values()):
                    raise NonFiniteLossError(f"non-finite training loss before step {step}; checkpoint not saved, "
                                             f"the last good one stays under {output_dir / CHECKPOINTS_DIR}")
                save_checkpoint(accelerator, output_dir, step, _checkpoint_state(state, loader, balancer, epoch_sums, gradient_log),
                                train_args.save_total_limit)
            if step >= total_steps:
                break
        epoch_losses = sums.means(accelerator)
        if not all(math.isfinite(v) for v in epoch_losses.values()):
            raise NonFiniteLossError(f"non-finite training loss in epoch {epoch + 1} (step {state['global_step']}): {epoch_losses}")
        scores = evaluate_tasks(accelerator, model, scene_test, event_validation, train_args.eval_batch_size, metrics)
        record = {"epoch": epoch + 1, "step": state["global_step"], **epoch_losses, **scores,
                  "loss_weights": balancer.weights()}
        if gradient_log:
            record["task_gradients"] = gradient_log
        state["history"].append(record)
        balancer.end_epoch(state["history"])
        accelerator.log({f"eval/{k}": v for k, v in scores.items()} | {f"train/epoch_{k}": v for k, v in epoch_losses.items()},
                        step=state["global_step"])
        accelerator.print(_epoch_line(record))
        if state["best"] is None or scores[best_key] > state["best"][best_key]:
            state["best"] = record
            save_model(accelerator, model, extractor, output_dir)
        if _checkpoint_due(train_args.checkpointing_steps, state["global_step"], True):
            save_checkpoint(accelerator, output_dir, state["global_step"], _checkpoint_state(state, loader, balancer, None, []),
                            train_args.save_total_limit)
        if state["global_step"] >= total_steps:
            break
    progress.close()
    loader.close()  # the loader workers exit now, not at interpreter shutdown

    results = build_results(state, resolved, alpha, train_args.seed, data, time.time() - started, accelerator)
    if accelerator.is_main_process:
        atomic_write_json(output_dir / RESULTS_FILE, results)
        final = results["final"]
        lwlrap = f"{final['aet_lwlrap']:.4f}" if final.get("aet_lwlrap") is not None else "n/a"
        print(
            f"done: alpha={alpha} asc_macro_accuracy={final['asc_macro_accuracy']:.4f} aet_lwlrap={lwlrap} "
            f"best_epoch={final['best_epoch']} steps={state['global_step']} wall={results['wall_time_seconds']:.0f}s → {output_dir}"
        )
    accelerator.end_training()
    return results


def _checkpoint_state(state: dict, loader: MultiTaskLoader, balancer: LossBalancer, epoch_sums: dict | None,
                      gradient_log: list[dict]) -> dict:
    """What a checkpoint needs beyond Accelerate's state: position, history, the running epoch."""
    return {**state, "epoch_sums": epoch_sums, "loader": loader.state_dict(), "balancer": balancer.state(),
            "task_gradients": gradient_log}


def _gradients_due(every: int | None, step: int, outputs) -> bool:
    return bool(every) and step % every == 0 and outputs.loss_asc is not None and outputs.loss_aet is not None


def _task_gradients(model, balancer: LossBalancer, outputs, step: int) -> dict:
    """Each weighted task loss's gradient on the shared encoder: norms and cosine."""
    weights = balancer.weights()
    encoder = [p for p in _unwrapped(model).encoder.parameters() if p.requires_grad]
    stats = task_gradient_stats(encoder, weights["asc"] * outputs.loss_asc, weights["aet"] * outputs.loss_aet)
    return {"step": step, **stats}


def _unwrapped(model):
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DDP


def model_config(model) -> SceneEventConfig:
    return _unwrapped(model).config


def build_augmenters(train_args: JointTrainingArguments) -> torch.nn.ModuleDict:
    """The augmentations the flags switch on, per task: `{asc,aet}_{specaugment,mixup}` (the benchmarks use it too)."""
    spec = lambda: SpecAugment(freq_mask_width=train_args.freq_mask_width, time_mask_width=train_args.time_mask_width)  # noqa: E731
    modules = torch.nn.ModuleDict()
    if train_args.specaugment:
        modules["asc_specaugment"] = spec()
    if train_args.aet_specaugment:
        modules["aet_specaugment"] = spec()
    if train_args.mixup:
        modules["asc_mixup"] = MixUp(train_args.mixup_alpha)
    if train_args.aet_mixup:
        modules["aet_mixup"] = MixUp(train_args.mixup_alpha)
    return modules.train()


def prepare_batch(batch: dict, augment: torch.nn.ModuleDict, device, config: SceneEventConfig) -> dict:
    """Move both sub-batches to the device, augment each within its own task, and join them."""
    asc = to_device(batch["asc"], device) if batch["asc"] is not None else None
    aet = to_device(batch["aet"], device) if batch["aet"] is not None else None
    if asc is not None:
        features = asc["input_features"].float()
        if "asc_specaugment" in augment:
            features = augment["asc_specaugment"](features)
        if "asc_mixup" in augment:
            features, asc["scene_labels"] = augment["asc_mixup"](features, asc["scene_labels"], config.num_scenes)
        asc["input_features"] = features
    if aet is not None:
        features = aet["input_features"].float()
        if "aet_specaugment" in augment:
            features = augment["aet_specaugment"](features)
        if "aet_mixup" in augment:
            features, aet["event_labels"] = augment["aet_mixup"](features, aet["event_labels"])
        aet["input_features"] = features
    return join_task_batches(asc, aet, config.num_scenes, config.num_events)


class EpochLossSums:
    """Running sums of the losses on the device: no host sync per step."""

    KEYS = ("loss", "loss_asc", "loss_aet")

    def __init__(self, device, restored: dict | None = None):
        restored = restored or {}
        self.sums = {k: torch.tensor(restored.get(k, 0.0), dtype=torch.float64, device=device) for k in self.KEYS}
        self.counts = {k: int(restored.get(f"{k}_count", 0)) for k in self.KEYS}

    def add(self, outputs) -> None:
        for key in self.KEYS:
            value = getattr(outputs, key)
            if value is not None:
                self.sums[key] += value.detach().double()
                self.counts[key] += 1

    def means(self, accelerator=None) -> dict[str, float]:
        """Epoch means; with an accelerator, over every process (each ran the same number of steps),
        so that the history and DWA's weights are the same on all of them."""
        keys = [k for k in self.KEYS if self.counts[k]]
        if not keys:
            return {}
        means = _process_mean(torch.stack([self.sums[k] / self.counts[k] for k in keys]), accelerator)
        return {f"train_{k}": value for k, value in zip(keys, means.tolist())}

    def latest(self, outputs, accelerator=None) -> dict[str, float]:
        """This step's losses, averaged over the processes: every process then sees the same values (and
        stops together on a non-finite one instead of leaving the others waiting in a collective)."""
        keys = [k for k in self.KEYS if getattr(outputs, k) is not None]
        values = torch.stack([getattr(outputs, k).detach().float() for k in keys])
        return {f"train/{k}": value for k, value in zip(keys, _process_mean(values, accelerator).tolist())}

    def to_json(self, accelerator=None) -> dict:
        """The running sums for a checkpoint, averaged over the processes: a resumed run restores them on
        every process, so its epoch means equal an uninterrupted run's."""
        sums = _process_mean(torch.stack([self.sums[k] for k in self.KEYS]), accelerator)
        payload = dict(zip(self.KEYS, sums.tolist()))
        payload.update({f"{k}_count": self.counts[k] for k in self.KEYS})
        return payload


def _process_mean(values: torch.Tensor, accelerator) -> torch.Tensor:
    if accelerator is not None and accelerator.num_processes > 1:
        return accelerator.reduce(values, reduction="mean")
    return values


def _checkpoint_due(setting: str | None, step: int, end_of_epoch: bool) -> bool:
    if setting is None:
        return False
    if setting == "epoch":
        return end_of_epoch
    return step % int(setting) == 0


def _epoch_line(record: dict) -> str:
    parts = [f"epoch {record['epoch']}"] + [f"{k}={v:.4f}" for k, v in record.items() if isinstance(v, float)]
    return " ".join(parts)


def save_model(accelerator: Accelerator, model, extractor: LogMelFeatureExtractor, output_dir: Path) -> None:
    """`save_pretrained` of model + feature extractor into the run folder, through a staging folder."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        staging = output_dir / ".tmp_model"
        shutil.rmtree(staging, ignore_errors=True)
        accelerator.unwrap_model(model).save_pretrained(staging, save_function=accelerator.save, safe_serialization=True)
        extractor.save_pretrained(staging)
        replace_files_from(staging, output_dir)
    accelerator.wait_for_everyone()


def build_results(state: dict, resolved: dict, alpha: float, seed: int, data: PreparedData, wall: float, accelerator) -> dict:
    history = state["history"]
    best, last = state["best"], history[-1]
    final = {
        "asc_macro_accuracy": best.get("asc_macro_accuracy"),
        "aet_lwlrap": best.get("aet_lwlrap"),
        # The converged losses: training-loss means of the last epoch (what --alpha auto balances).
        "loss_asc": last.get("train_loss_asc"),
        "loss_aet": last.get("train_loss_aet"),
        "best_epoch": best["epoch"],
        "last_epoch": {k: v for k, v in last.items() if k in ("epoch", "asc_macro_accuracy", "aet_lwlrap")},
    }
    return {
        "config": resolved,
        "alpha": alpha,
        "seed": seed,
        "history": history,
        "final": final,
        "steps": state["global_step"],
        "wall_time_seconds": wall,
        "data": {
            "scene_labels": data.scene_labels,
            "event_labels": data.event_labels,
            "rows": {name: len(split) for name, split in (
                ("scene_train", data.scene_train), ("scene_test", data.scene_test),
                ("event_train", data.event_train), ("event_validation", data.event_validation)) if split is not None},
            "fingerprints": data.fingerprints,
            "bad_audio": data.bad_audio,
            "aet_subset": data.aet_subset,
        },
        "environment": {
            "num_processes": accelerator.num_processes,
            "device": str(accelerator.device),
            "mixed_precision": accelerator.mixed_precision,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
    }
