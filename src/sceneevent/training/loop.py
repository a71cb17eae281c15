"""The Accelerate training loop shared by the scripts: data → log-mel cache → multi-task batches → model.

Three roles of data, never mixed: the training splits; the *validation* splits, evaluated every epoch and
used for every choice (the epoch whose model is kept); the *test* splits, evaluated once at the end on the
selected model (and, separately, on the last epoch's) and used for nothing but reporting.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import time
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path

import datasets
import torch
import transformers
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, send_to_device, set_seed
from safetensors.torch import load_file
from tqdm.auto import tqdm

from .arguments import DataArguments, JointTrainingArguments, ModelArguments, resolve_defaults, to_dict
from .augment import MixUp, SpecAugment
from .balancing import LossBalancer, task_gradient_stats
from .checkpointing import (
    CHECKPOINTS_DIR,
    RESULTS_FILE,
    RESULTS_SCHEMA_VERSION,
    VALIDATION_SELECTION_SCHEMA,
    OutputDirInUse,
    check_resume_matches,
    clear_run,
    lock_output_dir,
    read_checkpoint_state,
    resolve_checkpoint,
    save_checkpoint,
)
from ..models.configuration_sceneevent import SceneEventConfig
from .evaluation import evaluate_tasks
from ..models.feature_extraction_sceneevent import LogMelFeatureExtractor
from ..io_utils import atomic_write_json, replace_files_from, scrub_secrets
from ..data.loader import BatchReader, DeviceBatchReader, MultiTaskLoader, join_task_batches
from ..models.losses import balanced_alpha
from ..metrics import load_metric
from ..models.modeling_sceneevent import SceneEventModel
from .preparation import PreparedData, cache_splits, load_splits, make_feature_extractor

logger = logging.getLogger(__name__)

# Settings that may differ when a run resumes: where and how often it logs or saves, how fast it runs,
# and how long it trains (more epochs continue the same run; the schedule then follows the new length).
RESUMABLE_CHANGES = frozenset({
    "output_dir", "overwrite_output_dir", "resume_from_checkpoint", "num_train_epochs", "max_train_steps",
    "logging_steps", "checkpointing_steps", "save_total_limit", "report_to", "wandb_project", "run_name",
    "push_to_hub", "hub_model_id", "hub_private", "hub_revision", "dataloader_num_workers", "gpu_batch_copy",
    "preprocessing_num_workers", "num_cpu_threads", "eval_batch_size", "cache_on_device", "channels_last",
    "torch_compile", "torch_compile_mode", "log_task_gradients", "asc_baseline", "aet_baseline",
})  # fmt: skip


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class TrainerState:
    """Everything a checkpoint holds beyond Accelerate's state (model, optimizer, scheduler, RNG)."""

    global_step: int = 0
    history: list[dict] = field(default_factory=list)
    selected: dict | None = None  # the history record of the epoch whose model is kept
    signature: dict = field(default_factory=dict)  # what the run trains with; a resume must match it
    epoch_sums: dict | None = None  # running loss sums of a checkpoint saved mid-epoch
    task_gradients: list[dict] = field(default_factory=list)  # this epoch's entries so far
    loader: dict = field(default_factory=dict)
    balancer: dict = field(default_factory=dict)
    timing: dict = field(default_factory=lambda: {"train": 0.0, "eval": 0.0, "data_wait": 0.0, "steps": 0})


# --- set-up -----------------------------------------------------------------------------------------


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


def read_results(run_dir: str | os.PathLike) -> dict:
    """A finished run's results.json; files from before validation-based selection are refused."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        raise ValueError(f"{path}: no results.json (is {run_dir} a finished run folder?)")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if results.get("schema_version", 1) < VALIDATION_SELECTION_SCHEMA:
        raise ValueError(f"{path}: written by an older sceneevent whose best epoch was chosen on test data; re-run it")
    return results


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


def reader_threads(requested: int | None, device: torch.device) -> int:
    """`--dataloader_num_workers`, or its default: one reader thread on a GPU, whose step leaves the host free to
    read ahead (`bench_loader.py --step_ms 30` at the paper's shape: 41 ms a step with one thread, 53 ms
    reading in the loop); none on a CPU, whose step takes every core."""
    if requested is not None:
        return requested
    return 1 if device.type == "cuda" else 0


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


def make_accelerator(train_args: JointTrainingArguments, output_dir: Path) -> Accelerator:
    # torchrun without GPUs: Accelerate sets up gloo (MULTI_CPU) only when told to use the CPU.
    launched_processes = int(os.environ.get("WORLD_SIZE", "1"))
    accelerator = Accelerator(
        cpu=launched_processes > 1 and not torch.cuda.is_available(),
        gradient_accumulation_steps=train_args.gradient_accumulation_steps,
        mixed_precision=train_args.mixed_precision,
        log_with="wandb" if train_args.report_to == "wandb" else None,
        project_dir=str(output_dir),
    )
    if accelerator.num_processes != launched_processes:
        raise RuntimeError(
            f"launched as {launched_processes} processes but Accelerate sees {accelerator.num_processes}; "
            "on machines without GPUs set ACCELERATE_USE_CPU=1"
        )
    threads = cpu_threads(train_args.num_cpu_threads, accelerator)
    if threads:
        torch.set_num_threads(threads)
    return accelerator


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


def claim_output_dir(accelerator: Accelerator, output_dir: Path):
    """The main process locks the folder; every process stops together if another run holds it."""
    lock, refusal = None, None
    if accelerator.is_main_process:
        try:
            lock = lock_output_dir(output_dir)
        except OutputDirInUse as error:
            refusal = str(error)
    if accelerator.num_processes > 1:
        refusal = broadcast_object_list([refusal])[0]
    if refusal:
        raise OutputDirInUse(refusal)
    return lock


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


def selection_metric(alpha: float, has_scene_validation: bool) -> str | None:
    """The validation metric that picks the epoch whose model is kept; None: the last epoch is kept."""
    if alpha == 1.0:
        return "val_aet_lwlrap"
    return "val_asc_macro_accuracy" if has_scene_validation else None


def wandb_init_kwargs(output_dir: Path, run_name: str | None) -> dict:
    # No login → offline, so that nothing ever prompts on stdin.
    if "WANDB_MODE" not in os.environ and not os.environ.get("WANDB_API_KEY"):
        netrc = Path.home() / ".netrc"
        if not (netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")):
            os.environ["WANDB_MODE"] = "offline"
    (output_dir / "wandb").mkdir(parents=True, exist_ok=True)
    return {"wandb": {"name": run_name or output_dir.name, "dir": str(output_dir)}}


# --- the loop --------------------------------------------------------------------------------------


def train(model_args: ModelArguments, data_args: DataArguments, train_args: JointTrainingArguments, mode: str = "joint") -> dict:
    """Train jointly, select the epoch on validation, report its model on test, write results.json."""
    started = time.time()
    train_args = resolve_defaults(data_args, train_args)  # the demo's own defaults on the synthetic data
    check_arguments(data_args, train_args)
    alpha = resolve_alpha(train_args)
    output_dir = Path(train_args.output_dir)
    resume_from = resolve_checkpoint(output_dir, train_args.resume_from_checkpoint)
    check_output_dir(output_dir, train_args.overwrite_output_dir, resuming=resume_from is not None)
    accelerator = make_accelerator(train_args, output_dir)
    # the count in use, so that results.json and W&B record it (its default depends on the device)
    data_args = replace(data_args, dataloader_num_workers=reader_threads(data_args.dataloader_num_workers, accelerator.device))
    lock = claim_output_dir(accelerator, output_dir)  # noqa: F841 - held until this function returns
    signature = run_signature(model_args, data_args, train_args, alpha, accelerator.num_processes)
    restored = None
    if resume_from is not None:  # checked before any long work: the files are whole, the settings match
        saved = read_checkpoint_state(resume_from)
        check_resume_matches(resume_from, (saved.get("signature") or {}).get("settings"), signature, signature_defaults())
        restored = TrainerState(**saved)
    elif train_args.overwrite_output_dir and accelerator.is_main_process:
        clear_run(output_dir)  # nothing of the old run may be resumed, rotated or reported with the new one
    accelerator.wait_for_everyone()
    set_seed(train_args.seed)
    datasets.utils.logging.set_verbosity_warning()
    if not accelerator.is_local_main_process:
        datasets.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()

    uses_aet = alpha > 0.0
    extractor = make_feature_extractor(data_args)
    with accelerator.main_process_first():
        splits, scene_labels, event_labels = load_splits(data_args, need_events=uses_aet)
        fingerprints = {name: split._fingerprint for name, split in splits.items()}
        if restored is not None:
            check_resume_matches(resume_from, restored.signature.get("fingerprints"), fingerprints)
        data = cache_splits(splits, data_args, extractor, scene_labels, event_labels)
    state = restored or TrainerState(signature={"settings": signature, "fingerprints": fingerprints})
    run = Run.build(model_args, data_args, train_args, accelerator, data, extractor, alpha, state, output_dir, mode)
    if restored is not None:
        run.restore(resume_from)
    try:
        run.fit()
    finally:
        run.loader.close()  # its reader threads exit now, not at interpreter shutdown
    results = build_results(run, data, time.time() - started)
    if accelerator.is_main_process:
        atomic_write_json(output_dir / RESULTS_FILE, results)
        print(_done_line(results, output_dir))
    accelerator.end_training()
    return results


@dataclass
class Run:
    """One training run's moving parts, and the loop over them (set up by `Run.build`)."""

    accelerator: Accelerator
    args: JointTrainingArguments
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    balancer: LossBalancer | None  # only for the learned weightings; fixed alpha is the model's own loss
    augment: torch.nn.ModuleDict
    loader: MultiTaskLoader
    readers: dict[str, BatchReader]  # validation and test splits
    metrics: dict
    extractor: LogMelFeatureExtractor
    state: TrainerState
    output_dir: Path
    alpha: float
    resolved: dict
    total_steps: int
    selection: str | None
    first_step_runtime: float | None = None  # seconds; not in checkpoints: a resumed process compiles anew

    @classmethod
    def build(cls, model_args, data_args, train_args, accelerator, data: PreparedData, extractor, alpha, state, output_dir, mode) -> Run:
        uses_asc = alpha < 1.0
        model = build_model(model_args, data, alpha, extractor)
        readers = {name: BatchReader(split, "scene" if name.startswith("scene") else "events",
                                     len(data.scene_labels) if name.startswith("scene") else len(data.event_labels))
                   for name, split in data.splits().items()}
        scene_train, event_train = readers.pop("scene_train"), readers.pop("event_train", None)
        train_readers = {"asc": scene_train if uses_asc else None, "aet": event_train}
        if train_args.cache_on_device:
            train_readers = {task: DeviceBatchReader(r, accelerator.device) if r is not None else None for task, r in train_readers.items()}
        loader = MultiTaskLoader(
            epoch_rows=len(data.scene_train), asc=train_readers["asc"], aet=train_readers["aet"],
            asc_batch_size=train_args.asc_batch_size, aet_batch_size=train_args.aet_batch_size, seed=train_args.seed,
            num_workers=data_args.dataloader_num_workers, device=accelerator.device, gpu_batch_copy=data_args.gpu_batch_copy,
            num_processes=accelerator.num_processes, process_index=accelerator.process_index,
        )
        total_steps = train_args.max_train_steps or loader.steps_per_epoch * train_args.num_train_epochs
        if train_args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        balancer = LossBalancer(train_args.loss_balancing).to(accelerator.device) if train_args.loss_balancing != "fixed" else None
        parameters = list(model.parameters()) + (list(balancer.parameters()) if balancer is not None else [])
        optimizer = torch.optim.AdamW(
            parameters, lr=train_args.learning_rate, weight_decay=train_args.weight_decay,
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
            model = torch.compile(model, mode=train_args.torch_compile_mode)
        resolved = scrub_secrets({**to_dict(model_args, data_args, train_args), "alpha": alpha, "mode": mode, **{
            f"feature_{k}": v for k, v in data_args.resolved_features().items()}})
        if train_args.report_to == "wandb":
            accelerator.init_trackers(train_args.wandb_project, config=resolved,
                                      init_kwargs=wandb_init_kwargs(output_dir, train_args.run_name))
        return cls(
            accelerator=accelerator, args=train_args, model=model, optimizer=optimizer, scheduler=scheduler,
            balancer=balancer, augment=build_augmenters(train_args).to(accelerator.device), loader=loader, readers=readers,
            metrics={name: load_metric(name) for name in ("macro_accuracy", "lwlrap")}, extractor=extractor, state=state,
            output_dir=output_dir, alpha=alpha, resolved=resolved, total_steps=total_steps,
            selection=selection_metric(alpha, data.scene_validation is not None),
        )

    @property
    def steps_per_epoch(self) -> int:
        return self.loader.steps_per_epoch

    def restore(self, checkpoint: Path) -> None:
        self.accelerator.load_state(str(checkpoint))  # model, optimizer, scheduler, scaler, RNG states
        self.loader.load_state_dict(self.state.loader)
        if self.balancer is not None:
            self.balancer.load_state(self.state.balancer)
        self.accelerator.print(f"resumed from {checkpoint} at step {self.state.global_step}")

    def fit(self) -> None:
        """Epochs until `total_steps`: train, evaluate on validation, keep the selected model; then test."""
        state = self.state
        progress = tqdm(total=self.total_steps, initial=state.global_step, desc="train", disable=not self.accelerator.is_local_main_process)
        start_epoch, start_step = divmod(state.global_step, self.steps_per_epoch)
        for epoch in range(start_epoch, math.ceil(self.total_steps / self.steps_per_epoch)):
            resumed_mid_epoch = epoch == start_epoch and start_step > 0
            epoch_losses = self.train_epoch(epoch, start_step if resumed_mid_epoch else 0, progress)
            record = {"epoch": epoch + 1, "step": state.global_step, **epoch_losses, **self.evaluate("validation"),
                      "loss_weights": self.loss_weights()}
            if state.task_gradients:
                record["task_gradients"] = state.task_gradients
            state.history.append(record)
            state.task_gradients, state.epoch_sums = [], None
            if self.balancer is not None:
                self.balancer.end_epoch(state.history)
            self.accelerator.log({f"eval/{k[4:]}": v for k, v in record.items() if k.startswith("val_")}
                                 | {f"train/epoch_{k}": v for k, v in epoch_losses.items()}, step=state.global_step)
            self.accelerator.print(_epoch_line(record))
            if self.is_selected(record):
                state.selected = record
                save_model(self.accelerator, self.model, self.extractor, self.output_dir)
            if _checkpoint_due(self.args.checkpointing_steps, state.global_step, end_of_epoch=True):
                self.checkpoint()
            if state.global_step >= self.total_steps:
                break
        progress.close()

    def is_selected(self, record: dict) -> bool:
        if self.selection is None or self.state.selected is None:
            return True  # without selection every epoch replaces the last
        return record[self.selection] > self.state.selected[self.selection]

    def train_epoch(self, epoch: int, start_step: int, progress) -> dict[str, float]:
        """One pass over the scene training set (from `start_step` when resumed); returns its mean losses."""
        state, accelerator, args = self.state, self.accelerator, self.args
        sums = EpochLossSums(accelerator.device, state.epoch_sums)
        timing = state.timing
        tick = time.perf_counter()
        for batch in self.loader.epoch(epoch, start_step):
            timing["data_wait"] += time.perf_counter() - tick
            stepped = time.perf_counter()
            outputs = self.step(batch)
            if self.first_step_runtime is None:
                self.record_first_step(stepped)
            sums.add(outputs)
            state.global_step += 1
            timing["steps"] += 1
            progress.update(1)
            step = state.global_step
            if step % args.logging_steps == 0:
                self.log_step(sums, outputs, step)
            end_of_epoch = step % self.steps_per_epoch == 0 or step == self.total_steps
            if not end_of_epoch and _checkpoint_due(args.checkpointing_steps, step, end_of_epoch=False):
                self.checkpoint_mid_epoch(sums, step)
            timing["train"] += time.perf_counter() - tick
            tick = time.perf_counter()
            if step >= self.total_steps:
                break
        epoch_losses = sums.means(accelerator)
        if not all(math.isfinite(v) for v in epoch_losses.values()):
            raise NonFiniteLossError(f"non-finite training loss in epoch {epoch + 1} (step {state.global_step}): {epoch_losses}")
        return epoch_losses

    def record_first_step(self, started: float) -> None:
        """This process's first step (with torch.compile: the compile), kept apart from the steady ones."""
        if self.accelerator.device.type == "cuda":
            torch.cuda.synchronize()  # once: the step's kernels, not only their launch
        self.first_step_runtime = time.perf_counter() - started
        timing = self.state.timing  # every process's first step counts, a resumed run's too
        timing["first_steps"] = timing.get("first_steps", 0.0) + self.first_step_runtime
        timing["first_step_count"] = timing.get("first_step_count", 0) + 1

    def checkpoint_mid_epoch(self, sums: EpochLossSums, step: int) -> None:
        self.state.epoch_sums = sums.to_json(self.accelerator)
        if not all(math.isfinite(v) for v in self.state.epoch_sums.values()):
            raise NonFiniteLossError(f"non-finite training loss before step {step}; checkpoint not saved, "
                                     f"the last good one stays under {self.output_dir / CHECKPOINTS_DIR}")
        self.checkpoint()

    def step(self, batch: dict):
        """Forward, the objective, backward and an optimiser step on one multi-task batch."""
        inputs = prepare_batch(batch, self.augment, self.accelerator.device, model_config(self.model))
        with self.accelerator.accumulate(self.model):
            outputs = self.model(**inputs)
            # Fixed alpha: the model's own `loss`, the same formula users and the Hub see.
            objective = outputs.loss if self.balancer is None else self.balancer(outputs.loss_asc, outputs.loss_aet)
            step = self.state.global_step + 1
            if _gradients_due(self.args.log_task_gradients, step, outputs):
                entry = {"step": step, **self.task_gradients(outputs)}
                self.state.task_gradients.append(entry)
                self.accelerator.log({f"train/{k}": v for k, v in entry.items() if k != "step"}, step=step)
            self.accelerator.backward(objective)
            if self.balancer is not None and self.accelerator.sync_gradients:
                self.balancer.average_gradients(self.accelerator)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return outputs

    def log_step(self, sums: EpochLossSums, outputs, step: int) -> None:
        logged = sums.latest(outputs, self.accelerator)  # the one host sync, on logging steps only
        if not math.isfinite(logged["train/loss"]):
            raise NonFiniteLossError(
                f"non-finite training loss ({logged['train/loss']}) at step {step}; "
                f"the last good checkpoint (if any) is under {self.output_dir / CHECKPOINTS_DIR}"
            )
        logged["train/lr"] = self.scheduler.get_last_lr()[0]
        self.accelerator.log(logged, step=step)

    def loss_weights(self) -> dict[str, float]:
        return self.balancer.weights() if self.balancer is not None else {"asc": 1.0 - self.alpha, "aet": self.alpha}

    def task_gradients(self, outputs) -> dict:
        """Each weighted task loss's gradient on the shared encoder: norms and cosine."""
        weights = self.loss_weights()
        encoder = [p for p in self.accelerator.unwrap_model(self.model).encoder.parameters() if p.requires_grad]
        return task_gradient_stats(encoder, weights["asc"] * outputs.loss_asc, weights["aet"] * outputs.loss_aet)

    def evaluate(self, role: str) -> dict[str, float]:
        """Both metrics on the `validation` or `test` splits; keys `val_*` for validation, bare for test."""
        started = time.perf_counter()
        scores = evaluate_tasks(self.accelerator, self.model, self.readers.get(f"scene_{role}"), self.readers.get(f"event_{role}"),
                                self.args.eval_batch_size, self.metrics, self.loader.loader_kwargs["num_workers"])
        self.state.timing["eval"] += time.perf_counter() - started
        return {f"val_{k}" if role == "validation" else k: v for k, v in scores.items()}

    def checkpoint(self) -> None:
        self.state.loader = self.loader.state_dict()
        self.state.balancer = self.balancer.state() if self.balancer is not None else {}
        save_checkpoint(self.accelerator, self.output_dir, self.state.global_step, asdict(self.state), self.args.save_total_limit)

    def test(self) -> tuple[dict, dict]:
        """Test metrics of the last epoch's model, then of the selected one (loaded back from the run folder)."""
        last = self.evaluate("test")
        if self.state.selected["epoch"] == self.state.history[-1]["epoch"]:
            return last, last
        self.accelerator.wait_for_everyone()
        weights = load_file(str(self.output_dir / "model.safetensors"))
        self.accelerator.unwrap_model(self.model).load_state_dict(weights)
        return last, self.evaluate("test")


def _gradients_due(every: int | None, step: int, outputs) -> bool:
    return bool(every) and step % every == 0 and outputs.loss_asc is not None and outputs.loss_aet is not None


def model_config(model) -> SceneEventConfig:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model).config  # DDP


def build_augmenters(train_args: JointTrainingArguments) -> torch.nn.ModuleDict:
    """The augmentations the flags switch on, per task: `{asc,aet}_{specaugment,mixup}` (the benchmarks use it too)."""
    flags = ("specaugment", "aet_specaugment", "mixup", "aet_mixup")
    unset = [name for name in flags if getattr(train_args, name) is None]
    if unset:  # None would silently read as off: the data-dependent defaults must be filled first
        raise ValueError(f"augmentation flags {unset} are unset; fill them with arguments.resolve_defaults(data_args, train_args)")
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
    # The loader's batches are on the GPU already (copied on a side stream); on the CPU this is the tensor itself.
    asc = send_to_device(batch["asc"], device, non_blocking=True) if batch["asc"] is not None else None
    aet = send_to_device(batch["aet"], device, non_blocking=True) if batch["aet"] is not None else None
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


def build_results(run: Run, data: PreparedData, wall: float) -> dict:
    """results.json: `final` holds the test metrics of the model selected on validation."""
    state, accelerator = run.state, run.accelerator
    last_test, selected_test = run.test()
    test_keys = ("asc_macro_accuracy", "aet_lwlrap")
    accelerator.log({f"test/{k}": selected_test.get(k) for k in test_keys if selected_test.get(k) is not None}
                    | {"test/best_epoch": state.selected["epoch"]}, step=state.global_step)
    last = state.history[-1]
    final = {
        **{k: selected_test.get(k) for k in test_keys},
        "best_epoch": state.selected["epoch"],
        "selected_by": run.selection or "last_epoch",
        **({run.selection: state.selected[run.selection]} if run.selection else {}),
        # The converged losses: training-loss means of the last epoch (what --alpha auto balances).
        "loss_asc": last.get("train_loss_asc"),
        "loss_aet": last.get("train_loss_aet"),
        "last_epoch": {"epoch": last["epoch"], **{k: last_test.get(k) for k in test_keys}},
    }
    timing = state.timing
    samples_per_step = accelerator.num_processes * (
        (run.args.asc_batch_size if run.alpha < 1.0 else 0) + (run.args.aet_batch_size if run.alpha > 0.0 else 0))
    runtime = timing["train"] + timing["eval"]  # HF Trainer's train_runtime: the loop, its evaluations included
    throughput = {
        "train_runtime": runtime,
        "train_samples_per_second": timing["steps"] * samples_per_step / runtime if runtime else None,
        "train_steps_per_second": timing["steps"] / runtime if runtime else None,
        "eval_runtime": timing["eval"],
        # Part of train_runtime: the first step of this process, which holds the compile with --torch_compile
        # (evaluation compiles its own graph on its first batch, inside eval_runtime).
        "first_step_runtime": run.first_step_runtime,
        # The steps after it, without evaluation: the speed a long run approaches, with or without compiling.
        "train_steady_samples_per_second": steady_throughput(timing, samples_per_step),
        # Share of the training steps' time spent waiting for the next batch: near 0 when the loader keeps up.
        "data_wait_fraction": timing["data_wait"] / timing["train"] if timing["train"] else None,
    }
    accelerator.log({f"train/{k}": v for k, v in throughput.items() if v is not None}, step=state.global_step)
    return {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "config": run.resolved,
        "alpha": run.alpha,
        "seed": run.args.seed,
        "history": state.history,
        "final": final,
        "steps": state.global_step,
        "wall_time_seconds": wall,
        **throughput,
        "data": {
            "scene_labels": data.scene_labels,
            "event_labels": data.event_labels,
            "rows": {name: len(split) for name, split in data.splits().items()},
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


def steady_throughput(timing: dict, samples_per_step: int) -> float | None:
    """Samples per second of the training steps less each process's first (a resumed run has several)."""
    first_steps, count = timing.get("first_steps", 0.0), timing.get("first_step_count", 0)
    if not count or timing["steps"] <= count or timing["train"] <= first_steps:
        return None
    return (timing["steps"] - count) * samples_per_step / (timing["train"] - first_steps)


def _done_line(results: dict, output_dir: Path) -> str:
    final = results["final"]
    lwlrap = f"{final['aet_lwlrap']:.4f}" if final.get("aet_lwlrap") is not None else "n/a"
    return (
        f"done: alpha={results['alpha']} test asc_macro_accuracy={final['asc_macro_accuracy']:.4f} test aet_lwlrap={lwlrap} "
        f"best_epoch={final['best_epoch']} (by {final['selected_by']}) steps={results['steps']} "
        f"{results['train_samples_per_second']:.1f} samples/s wall={results['wall_time_seconds']:.0f}s → {output_dir}"
    )
