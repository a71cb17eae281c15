"""One training step, the same for the loop and the step benchmarks: the loader's two sub-batches → the device,
each task's augmentation, one joined batch → forward → the objective → backward → optimiser step."""

from __future__ import annotations

from collections.abc import Callable

import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device

from ..data.loader import join_task_batches
from ..models.configuration_sceneevent import SceneEventConfig
from .arguments import JointTrainingArguments
from .augment import MixUp, SpecAugment
from .balancing import LossBalancer


def build_augmenters(train_args: JointTrainingArguments) -> torch.nn.ModuleDict:
    """The augmentations the flags switch on, per task: `{asc,aet}_{specaugment,mixup}`."""
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
    # On a GPU the loader's batches are there already (or on their way, non_blocking); on the CPU this is the
    # tensor itself.
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


def training_step(accelerator: Accelerator, model, config: SceneEventConfig, batch: dict, augment: torch.nn.ModuleDict,
                  optimizer, scheduler=None, *, balancer: LossBalancer | None = None,
                  before_backward: Callable[[object], None] | None = None):
    """Forward, the objective, backward and an optimiser step on one multi-task batch of the loader.

    `model` is the prepared (and possibly compiled) model and `config` its configuration (looked up once:
    `accelerator.unwrap_model` costs 0.2 ms a call); `before_backward(outputs)` sees the losses while their graph
    is alive (the loop's task-gradient statistics). Returns the model's outputs.
    """
    inputs = prepare_batch(batch, augment, accelerator.device, config)
    with accelerator.accumulate(model):
        outputs = model(**inputs)
        # Fixed alpha: the model's own `loss`, the same formula users and the Hub see.
        objective = outputs.loss if balancer is None else balancer(outputs.loss_asc, outputs.loss_aet)
        if before_backward is not None:
            before_backward(outputs)
        accelerator.backward(objective)
        if balancer is not None and accelerator.sync_gradients:
            balancer.average_gradients(accelerator)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return outputs
