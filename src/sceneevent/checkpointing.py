"""Resumable checkpoints: Accelerate's `save_state` plus our trainer state, written atomically; and
the names of a run folder's files, which the sweep runner, the report and the Hub upload read too."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from .io_utils import atomic_write_json

if TYPE_CHECKING:  # accelerate is slow to import; the sweep runner and the report only need the names
    from accelerate import Accelerator

RESULTS_FILE = "results.json"  # a finished run's summary, written last
CHECKPOINTS_DIR = "checkpoints"
TRAINER_STATE_FILE = "trainer_state.json"


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    root = output_dir / CHECKPOINTS_DIR
    found = [p for p in root.glob("step_*") if (p / TRAINER_STATE_FILE).exists()] if root.exists() else []
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def resolve_checkpoint(output_dir: Path, value: str | None) -> Path | None:
    if not value:
        return None
    if value == "latest":
        found = checkpoint_dirs(output_dir)
        if not found:
            raise ValueError(f"--resume_from_checkpoint latest: no complete checkpoint under {output_dir / CHECKPOINTS_DIR}")
        return found[-1]
    path = Path(value)
    if not (path / TRAINER_STATE_FILE).exists():
        raise ValueError(f"--resume_from_checkpoint {value}: not a complete checkpoint folder (no {TRAINER_STATE_FILE})")
    return path


def check_resume_labels(checkpoint: Path, state: dict, data, alpha: float) -> None:
    """A checkpoint only resumes on the data and alpha it was trained with."""
    problems = []
    if state.get("scene_labels") != data.scene_labels:
        problems.append(f"scene labels {state.get('scene_labels')} vs data {data.scene_labels}")
    if state.get("event_labels") != data.event_labels:
        problems.append(f"event labels {state.get('event_labels')} vs data {data.event_labels}")
    if state.get("alpha") != alpha:
        problems.append(f"alpha {state.get('alpha')} vs --alpha {alpha}")
    if problems:
        raise ValueError(f"--resume_from_checkpoint {checkpoint} does not match this run: " + "; ".join(problems))


def save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, state: dict, limit: int | None) -> None:
    """`save_state` into a temporary folder, then rename: a killed save never looks complete."""
    final = output_dir / CHECKPOINTS_DIR / f"step_{step}"
    staging = output_dir / CHECKPOINTS_DIR / f".tmp_step_{step}"
    accelerator.save_state(str(staging))
    if accelerator.is_main_process:
        atomic_write_json(staging / TRAINER_STATE_FILE, state)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        if limit:
            for old in checkpoint_dirs(output_dir)[:-limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
