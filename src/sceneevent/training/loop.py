"""The Accelerate training loop shared by the scripts: data → log-mel cache → multi-task batches → model.

Three roles of data, never mixed: the training splits; the *validation* splits, evaluated every epoch and
used for every choice (the epoch whose model is kept); the *test* splits, evaluated once at the end on the
selected model (and, separately, on the last epoch's) and used for nothing but reporting.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import datasets
import torch
import transformers
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file
from tqdm.auto import tqdm

from ..data.loader import BatchReader, DeviceBatchReader, MultiTaskLoader
from ..io_utils import scrub_secrets
from ..metrics import load_metric
from ..models.configuration_sceneevent import SceneEventConfig
from ..models.feature_extraction_sceneevent import LogMelFeatureExtractor
from ..models.modeling_sceneevent import SceneEventModel, encoder_weights_file
from .arguments import DataArguments, JointTrainingArguments, ModelArguments, resolve_defaults, to_dict
from .balancing import LossBalancer, task_gradient_stats
from .checkpointing import (
    CHECKPOINTS_DIR,
    MODEL_FILE,
    check_resume_matches,
    clear_run,
    read_checkpoint_state,
    remove_abandoned_staging,
    resolve_checkpoint,
    restore_selected_model,
    save_checkpoint,
    save_model,
)
from .checks import check_arguments, check_output_dir, resolve_alpha, run_signature, signature_defaults
from .epoch_losses import EpochLossSums
from .evaluation import evaluate_tasks
from .floor import scene_floor
from .launch import claim_output_dir, environment, make_accelerator, reader_threads, wandb_init_kwargs
from .preparation import PreparedData, cache_splits, load_splits, make_feature_extractor
from .results import LAST_EPOCH, RESULTS_SCHEMA_VERSION, FinalMetrics, RunResults, throughput, write_results
from .step import build_augmenters, training_step


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


def train(model_args: ModelArguments, data_args: DataArguments, train_args: JointTrainingArguments, mode: str = "joint") -> RunResults:
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
    if accelerator.is_main_process:
        remove_abandoned_staging(output_dir)
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
        # fetched first: a Hub that cannot be reached fails the run before any data work
        encoder_weights = encoder_weights_file(model_args.encoder_pretrained) if _starts_from_encoder_weights(model_args, restored) else None
        splits, scene_labels, event_labels = load_splits(data_args, need_events=uses_aet)
        fingerprints = {name: split._fingerprint for name, split in splits.items()}
        if restored is not None:
            check_resume_matches(resume_from, restored.signature.get("fingerprints"), fingerprints)
        data = cache_splits(splits, data_args, extractor, scene_labels, event_labels)
    state = restored or TrainerState(signature={"settings": signature, "fingerprints": fingerprints})
    run = Run.build(model_args, data_args, train_args, accelerator, data, extractor, alpha, state, output_dir, mode, encoder_weights)
    if restored is not None:
        run.restore(resume_from)
    try:
        run.fit()
    finally:
        run.loader.close()  # its reader threads exit now, not at interpreter shutdown
    results = build_results(run, data, time.time() - started)
    if accelerator.is_main_process:
        write_results(output_dir, results)
        print(_done_line(results, output_dir))
        if results.clears_floor is False:
            print(f"WARNING: the network's test scene macro accuracy {results.final.asc_macro_accuracy:.4f} does not clear its "
                  f"floor {results.final.floor_asc_macro_accuracy:.4f} (a logistic regression on each clip's per-mel mean and "
                  "standard deviation, same splits): it has learnt less about the scenes than that; see docs/own_recordings.md")
    accelerator.end_training()
    return results


@dataclass
class Run:
    """One training run's moving parts, and the loop over them (set up by `Run.build`)."""

    accelerator: Accelerator
    args: JointTrainingArguments
    model: torch.nn.Module  # prepared, and compiled with --torch_compile
    config: SceneEventConfig
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
    def build(cls, model_args, data_args, train_args, accelerator, data: PreparedData, extractor, alpha, state, output_dir, mode,
              encoder_weights: Path | None = None) -> Run:
        uses_asc = alpha < 1.0
        model = build_model(model_args, data, alpha, extractor, encoder_weights)
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
            config=accelerator.unwrap_model(model, keep_torch_compile=False).config,
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
        restore_selected_model(self.accelerator, checkpoint, self.output_dir, selected=self.state.selected is not None)
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
        return training_step(self.accelerator, self.model, self.config, batch, self.augment, self.optimizer, self.scheduler,
                             balancer=self.balancer, before_backward=self.record_task_gradients)

    def record_task_gradients(self, outputs) -> None:
        step = self.state.global_step + 1
        if _gradients_due(self.args.log_task_gradients, step, outputs):
            entry = {"step": step, **self.task_gradients(outputs)}
            self.state.task_gradients.append(entry)
            self.accelerator.log({f"train/{k}": v for k, v in entry.items() if k != "step"}, step=step)

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
                                self.args.eval_batch_size, self.metrics, self.loader.loader_kwargs["num_workers"],
                                split=role, scene_labels=list(self.config.scene_labels))
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
        weights = load_file(str(self.output_dir / MODEL_FILE))
        self.accelerator.unwrap_model(self.model).load_state_dict(weights)
        return last, self.evaluate("test")


def build_model(model_args: ModelArguments, data: PreparedData, alpha: float, extractor,
                encoder_weights: Path | None = None) -> SceneEventModel:
    """A saved model (`--model_name_or_path`), or a fresh one whose encoder starts from `encoder_weights` when given."""
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
        encoder_pretrained=model_args.encoder_pretrained,
        num_mel_bins=extractor.num_mel_bins,
        dropout=model_args.dropout,
        drop_path_rate=model_args.drop_path_rate,
    )
    model = SceneEventModel(config)
    if encoder_weights is not None:
        model.load_pretrained_encoder(encoder_weights)
    return model


def _starts_from_encoder_weights(model_args: ModelArguments, restored) -> bool:
    # a saved model (--model_name_or_path) or a checkpoint brings its own weights
    return bool(model_args.encoder_pretrained) and not model_args.model_name_or_path and restored is None


def selection_metric(alpha: float, has_scene_validation: bool) -> str | None:
    """The validation metric that picks the epoch whose model is kept; None: the last epoch is kept."""
    if alpha == 1.0:
        return "val_aet_lwlrap"
    return "val_asc_macro_accuracy" if has_scene_validation else None


def _gradients_due(every: int | None, step: int, outputs) -> bool:
    return bool(every) and step % every == 0 and outputs.loss_asc is not None and outputs.loss_aet is not None


def _checkpoint_due(setting: str | None, step: int, end_of_epoch: bool) -> bool:
    if setting is None:
        return False
    if setting == "epoch":
        return end_of_epoch
    return step % int(setting) == 0


def _epoch_line(record: dict) -> str:
    parts = [f"epoch {record['epoch']}"] + [f"{k}={v:.4f}" for k, v in record.items() if isinstance(v, float)]
    return " ".join(parts)


def build_results(run: Run, data: PreparedData, wall: float) -> RunResults:
    """results.json: `final` holds the test metrics of the model selected on validation."""
    state, accelerator = run.state, run.accelerator
    last_test, selected_test = run.test()
    test_keys = ("asc_macro_accuracy", "aet_lwlrap")
    floor = (scene_floor(data.scene_train, data.scene_validation, data.scene_test, len(data.scene_labels))
             if run.alpha < 1.0 else None)
    accelerator.log({f"test/{k}": selected_test.get(k) for k in test_keys if selected_test.get(k) is not None}
                    | {"test/best_epoch": state.selected["epoch"]}
                    | ({"test/floor_asc_macro_accuracy": floor.asc_macro_accuracy} if floor else {}), step=state.global_step)
    last = state.history[-1]
    final = FinalMetrics(
        **{k: selected_test.get(k) for k in test_keys},
        best_epoch=state.selected["epoch"],
        selected_by=run.selection or LAST_EPOCH,
        selected_value=state.selected[run.selection] if run.selection else None,
        # The converged losses: training-loss means of the last epoch (what --alpha auto balances).
        loss_asc=last.get("train_loss_asc"),
        loss_aet=last.get("train_loss_aet"),
        last_epoch={"epoch": last["epoch"], **{k: last_test.get(k) for k in test_keys}},
        floor_asc_macro_accuracy=floor.asc_macro_accuracy if floor else None,
        floor_c=floor.c if floor else None,
    )
    samples_per_step = accelerator.num_processes * (
        (run.args.asc_batch_size if run.alpha < 1.0 else 0) + (run.args.aet_batch_size if run.alpha > 0.0 else 0))
    speed = throughput(state.timing, samples_per_step, run.first_step_runtime)
    accelerator.log({f"train/{k}": v for k, v in speed.items() if v is not None}, step=state.global_step)
    return RunResults(
        schema_version=RESULTS_SCHEMA_VERSION, config=run.resolved, alpha=run.alpha, seed=run.args.seed,
        history=state.history, final=final, steps=state.global_step, wall_time_seconds=wall, **speed,
        data=data.summary(), environment=environment(accelerator),
    )


def _done_line(results: RunResults, output_dir: Path) -> str:
    final = results.final
    lwlrap = f"{final.aet_lwlrap:.4f}" if final.aet_lwlrap is not None else "n/a"
    floor = f" (floor {final.floor_asc_macro_accuracy:.4f})" if final.floor_asc_macro_accuracy is not None else ""
    return (
        f"done: alpha={results.alpha} test asc_macro_accuracy={final.asc_macro_accuracy:.4f}{floor} test aet_lwlrap={lwlrap} "
        f"best_epoch={final.best_epoch} (by {final.selected_by}) steps={results.steps} "
        f"{results.train_samples_per_second:.1f} samples/s wall={results.wall_time_seconds:.0f}s → {output_dir}"
    )
