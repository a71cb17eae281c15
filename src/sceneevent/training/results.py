"""results.json, a finished run's summary: its schema and the one place that reads and writes it.

The loop writes it last; the report, the mini study, the sweep runner, `--alpha auto` and the Hub card read
it. Files of older versions still read: a field they lack is None, a key this version does not know is kept
in `extra` and written back unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..io_utils import atomic_write_json

RESULTS_FILE = "results.json"
RESULTS_SCHEMA_VERSION = 2  # what this version writes
# The first schema whose `final` holds the test metrics of the model selected on validation (later versions
# keep that): older results chose their best epoch on test data.
VALIDATION_SELECTION_SCHEMA = 2
LAST_EPOCH = "last_epoch"  # `selected_by` when no validation split chose the epoch


class ResultsError(ValueError):
    pass


@dataclass
class FinalMetrics:
    """`final`: the *test* metrics of the model selected on validation, and how it was selected."""

    asc_macro_accuracy: float | None = None
    aet_lwlrap: float | None = None
    best_epoch: int | None = None
    selected_by: str | None = None  # a validation metric's name, or LAST_EPOCH
    selected_value: float | None = None  # that metric's validation value, written under its own name
    loss_asc: float | None = None  # training-loss means of the last epoch: what --alpha auto balances
    loss_aet: float | None = None
    last_epoch: dict | None = None  # {"epoch", and the last epoch's test metrics}
    aet_lwlrap_pretrained: float | None = None  # pre-train → fine-tune runs: stage 1's event lwlrap
    # The floor (training/floor.py): a logistic regression on per-mel statistics, same splits; runs with a scene task
    floor_asc_macro_accuracy: float | None = None  # test
    floor_c: float | None = None  # its inverse L2 strength, chosen on validation
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, payload: dict) -> FinalMetrics:
        payload = dict(payload)
        selected_by = payload.get("selected_by")
        selected_value = payload.pop(selected_by, None) if selected_by and selected_by != LAST_EPOCH else None
        known = {f.name for f in dataclasses.fields(cls)} - {"selected_value", "extra"}
        return cls(**{name: payload.pop(name) for name in known if name in payload},
                   selected_value=selected_value, extra=payload)

    def to_dict(self) -> dict:
        selection = {self.selected_by: self.selected_value} if self.selected_by and self.selected_by != LAST_EPOCH else {}
        written = {
            "asc_macro_accuracy": self.asc_macro_accuracy, "aet_lwlrap": self.aet_lwlrap,
            "best_epoch": self.best_epoch, "selected_by": self.selected_by, **selection,
            "loss_asc": self.loss_asc, "loss_aet": self.loss_aet, "last_epoch": self.last_epoch,
        }
        for name in ("aet_lwlrap_pretrained", "floor_asc_macro_accuracy", "floor_c"):
            if getattr(self, name) is not None:
                written[name] = getattr(self, name)
        return written | self.extra


@dataclass
class RunResults:
    """One run's results.json. Throughput fields use HF Trainer's names."""

    schema_version: int = 1  # files before the field existed are version 1
    config: dict = field(default_factory=dict)  # the resolved flags
    alpha: float | None = None
    seed: int | None = None
    history: list[dict] = field(default_factory=list)  # per epoch: training losses, validation metrics
    final: FinalMetrics = field(default_factory=FinalMetrics)
    steps: int | None = None
    wall_time_seconds: float | None = None
    train_runtime: float | None = None  # the loop, its evaluations included
    train_samples_per_second: float | None = None
    train_steps_per_second: float | None = None
    eval_runtime: float | None = None
    first_step_runtime: float | None = None  # the compile, with --torch_compile
    train_steady_samples_per_second: float | None = None  # after each process's first step, evaluation left out
    data_wait_fraction: float | None = None
    data: dict = field(default_factory=dict)  # labels, rows, fingerprints, bad audio, the event subset
    environment: dict = field(default_factory=dict)
    pretrain: dict | None = None  # pre-train → fine-tune runs: stage 1's final, history, steps, wall time, data
    extra: dict = field(default_factory=dict)  # keys this version does not know, kept as they were

    @property
    def clears_floor(self) -> bool | None:
        """Whether the network's test scene macro accuracy is above its floor's; None without both readings."""
        if self.final.asc_macro_accuracy is None or self.final.floor_asc_macro_accuracy is None:
            return None
        return self.final.asc_macro_accuracy > self.final.floor_asc_macro_accuracy

    @property
    def selected_on_validation(self) -> bool:
        """False for files whose best epoch was chosen on test data (before VALIDATION_SELECTION_SCHEMA)."""
        return isinstance(self.schema_version, (int, float)) and self.schema_version >= VALIDATION_SELECTION_SCHEMA

    @classmethod
    def from_dict(cls, payload: dict) -> RunResults:
        if not isinstance(payload, dict):
            raise ResultsError(f"results must be a JSON object, got {type(payload).__name__}")
        payload = dict(payload)
        final = FinalMetrics.from_dict(payload.pop("final", None) or {})
        known = {f.name for f in dataclasses.fields(cls)} - {"final", "extra"}
        values = {name: payload.pop(name) for name in known if name in payload}
        for name in ("config", "data", "environment", "history"):  # null in a file: the empty default
            if values.get(name) is None:
                values.pop(name, None)
        return cls(**values, final=final, extra=payload)

    def to_dict(self) -> dict:
        written = {"schema_version": self.schema_version, "config": self.config, "alpha": self.alpha, "seed": self.seed,
                   "history": self.history, "final": self.final.to_dict()}
        for f in dataclasses.fields(self):
            if f.name not in written and f.name not in ("extra", "pretrain"):
                written[f.name] = getattr(self, f.name)
        if self.pretrain is not None:
            written["pretrain"] = self.pretrain
        return written | self.extra


def throughput(timing: dict, samples_per_step: int, first_step_runtime: float | None) -> dict:
    """The speed fields of results.json from the loop's timing (seconds) and step count."""
    runtime = timing["train"] + timing["eval"]  # HF Trainer's train_runtime: the loop, its evaluations included
    return {
        "train_runtime": runtime,
        "train_samples_per_second": timing["steps"] * samples_per_step / runtime if runtime else None,
        "train_steps_per_second": timing["steps"] / runtime if runtime else None,
        "eval_runtime": timing["eval"],
        # Part of train_runtime: the first step of this process, which holds the compile with --torch_compile
        # (evaluation compiles its own graph on its first batch, inside eval_runtime).
        "first_step_runtime": first_step_runtime,
        # The steps after it, without evaluation: the speed a long run approaches, with or without compiling.
        "train_steady_samples_per_second": steady_throughput(timing, samples_per_step),
        # Share of the training steps' time spent waiting for the next batch: near 0 when the loader keeps up.
        "data_wait_fraction": timing["data_wait"] / timing["train"] if timing["train"] else None,
    }


def steady_throughput(timing: dict, samples_per_step: int) -> float | None:
    """Samples per second of the training steps less each process's first (a resumed run has several)."""
    first_steps, count = timing.get("first_steps", 0.0), timing.get("first_step_count", 0)
    if not count or timing["steps"] <= count or timing["train"] <= first_steps:
        return None
    return (timing["steps"] - count) * samples_per_step / (timing["train"] - first_steps)


def results_path(run_dir: str | os.PathLike) -> Path:
    path = Path(run_dir)
    return path if path.name == RESULTS_FILE else path / RESULTS_FILE


def read_results(run_dir: str | os.PathLike, *, require_validation_selection: bool = True) -> RunResults:
    """The results.json of `run_dir` (a run folder or the file itself).

    With `require_validation_selection` (the default) a file whose best epoch was chosen on test data is
    refused: no reading may come from it.
    """
    path = results_path(run_dir)
    if not path.is_file():
        raise ResultsError(f"{path}: no results.json (is {path.parent} a finished run folder?)")
    try:
        results = RunResults.from_dict(json.loads(path.read_text(encoding="utf-8-sig")))
    except json.JSONDecodeError as error:
        raise ResultsError(f"{path}: not valid JSON ({error})") from error
    except (ResultsError, TypeError) as error:
        raise ResultsError(f"{path}: {error}") from error
    if require_validation_selection and not results.selected_on_validation:
        raise ResultsError(f"{path}: written by an older sceneevent whose best epoch was chosen on test data; re-run it")
    return results


def write_results(run_dir: str | os.PathLike, results: RunResults) -> Path:
    """Atomically; NaN is written as JSON's NaN (a diverged run's losses are recorded, not hidden)."""
    path = results_path(run_dir)
    atomic_write_json(path, results.to_dict())
    return path


def has_results(run_dir: str | os.PathLike) -> bool:
    """Whether `run_dir` holds a finished run (results.json is written last)."""
    return results_path(run_dir).is_file()
