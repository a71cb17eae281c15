"""The scene model's regularisers as the studies set them: the training defaults, the named settings of the
regulariser comparison (`sweeps/regularisers.yaml`), and the label the report gives a run's setting.

The regularisers are dropout on the pooled embedding, stochastic depth (drop-path) in the encoder, AdamW weight
decay, MixUp on the scene sub-batch and SpecAugment on the scene clips. A run records every flag in its
results.json `config`; a flag it does not record had its default.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..training.arguments import JointTrainingArguments, ModelArguments

REGULARISATION_FLAGS = ("dropout", "drop_path_rate", "weight_decay", "mixup", "mixup_alpha", "specaugment",
                        "freq_mask_width", "time_mask_width")
_OWNERS = {field.name: field.default for cls in (ModelArguments, JointTrainingArguments) for field in dataclasses.fields(cls)}
TRAINING_DEFAULTS = {name: _OWNERS[name] for name in REGULARISATION_FLAGS}
DEFAULTS, CUSTOM = "defaults", "custom"

# Each regulariser switched on at the value it has when the others are off. The default drop-path rate is 0
# (off), so "on" needs a rate of its own: 0.1, timm's usual stochastic depth for a ResNet-18.
DROP_PATH_ON = 0.1
SWITCHED_ON = {
    "dropout": {"dropout": TRAINING_DEFAULTS["dropout"]},
    "drop_path": {"drop_path_rate": DROP_PATH_ON},
    "weight_decay": {"weight_decay": TRAINING_DEFAULTS["weight_decay"]},
    "mixup": {"mixup": True, "mixup_alpha": TRAINING_DEFAULTS["mixup_alpha"]},
    "specaugment": {"specaugment": True, "freq_mask_width": TRAINING_DEFAULTS["freq_mask_width"],
                    "time_mask_width": TRAINING_DEFAULTS["time_mask_width"]},
}
NONE = {**TRAINING_DEFAULTS, "dropout": 0.0, "drop_path_rate": 0.0, "weight_decay": 0.0, "mixup": False, "specaugment": False}
ALL = {**NONE, **{flag: value for switched in SWITCHED_ON.values() for flag, value in switched.items()}}
JOINT = "joint"  # the event task as the regulariser: every regulariser of `all` plus events at the balanced alpha

# The `regularisers` preset parameter of sweeps/regularisers.yaml: each name stands for these flags (alpha
# included); the sweep's `sh` command writes the same flags for the W&B agent.
REGULARISER_PRESETS: dict[str, dict[str, Any]] = {
    "none": {**NONE, "alpha": 0},
    **{name: {**NONE, **switched, "alpha": 0} for name, switched in SWITCHED_ON.items()},
    "all": {**ALL, "alpha": 0},
    JOINT: {**ALL, "alpha": "auto"},
}
PRESET_ORDER = tuple(REGULARISER_PRESETS)

# The tuned control's search space (W&B sweep distributions): sweeps/tuned_control_search.yaml searches it for the
# paper's runs, the mini study (`design.Scale.search_budget` draws) for its own.
SEARCH_SPACE: dict[str, dict[str, Any]] = {
    "dropout": {"distribution": "uniform", "min": 0.0, "max": 0.5},
    "drop_path_rate": {"distribution": "uniform", "min": 0.0, "max": 0.3},
    "weight_decay": {"distribution": "log_uniform_values", "min": 1.0e-6, "max": 1.0e-2},
    "mixup": {"values": [True, False]},
    "mixup_alpha": {"distribution": "uniform", "min": 0.1, "max": 1.0},
    "specaugment": {"values": [True, False]},
    "freq_mask_width": {"distribution": "int_uniform", "min": 0, "max": 24},
    "time_mask_width": {"distribution": "int_uniform", "min": 0, "max": 40},
}


def regularisation_of(config: dict) -> dict[str, Any]:
    """The regularisation flags a run used: its config's, the default for any it does not record."""
    return {name: default if config.get(name) is None else config[name] for name, default in TRAINING_DEFAULTS.items()}


def same_setting(ours: dict[str, Any], theirs: dict[str, Any]) -> bool:
    """Equal regularisation. MixUp's alpha counts only with MixUp on, the mask widths only with SpecAugment on."""
    for name in REGULARISATION_FLAGS:
        if name == "mixup_alpha" and not (ours["mixup"] and theirs["mixup"]):
            continue
        if name in ("freq_mask_width", "time_mask_width") and not (ours["specaugment"] and theirs["specaugment"]):
            continue
        a, b = ours[name], theirs[name]
        if isinstance(a, bool) or isinstance(b, bool):
            if bool(a) != bool(b):
                return False
        elif not math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12):
            return False
    return True


def regularisation_label(values: dict[str, Any]) -> str:
    """`defaults` (the training defaults), a preset's name (`none`, `dropout`, ..., `all`), else `custom`."""
    if same_setting(values, TRAINING_DEFAULTS):
        return DEFAULTS
    for name, preset in REGULARISER_PRESETS.items():
        if name != JOINT and same_setting(values, {flag: preset[flag] for flag in REGULARISATION_FLAGS}):
            return name
    return CUSTOM


def setting_text(values: dict[str, Any]) -> str:
    """The setting in flags, the switched-off parts left out: `dropout=0.31 weight_decay=2.1e-05 mixup_alpha=0.4 ...`."""
    parts = [f"dropout={values['dropout']:.3g}", f"drop_path_rate={values['drop_path_rate']:.3g}",
             f"weight_decay={values['weight_decay']:.3g}"]
    parts.append(f"mixup_alpha={values['mixup_alpha']:.3g}" if values["mixup"] else "mixup off")
    parts.append(f"SpecAugment widths {values['freq_mask_width']}/{values['time_mask_width']}" if values["specaugment"]
                 else "SpecAugment off")
    return ", ".join(parts)
