"""A run folder's files and their safety: the lock that keeps two runs apart, resumable checkpoints
(Accelerate's `save_state` plus our trainer state, written atomically), the checks a checkpoint passes
before a run resumes from it, and the names the sweep runner, the report and the Hub upload read too."""

from __future__ import annotations

import fcntl
import logging
import json
import os
import re
import shutil
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import safe_open

from ..io_utils import STAGING_GLOB, atomic_write_json, remove_staging_leftovers, replace_folder, staged_file, staged_folder
from .results import RESULTS_FILE

if TYPE_CHECKING:  # accelerate is slow to import; the sweep runner and the report only need the names
    from accelerate import Accelerator

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
TRAINER_STATE_FILE = "trainer_state.json"
MODEL_FILE = "model.safetensors"
# The run folder's model when the checkpoint was saved (the epoch selected so far): a resumed run publishes the
# model it reports, not one a killed run saved after this checkpoint.
SELECTED_MODEL_FILE = "selected_model.safetensors"
LOCK_FILE = ".lock"
# What a training run writes into its folder: an overwrite removes exactly these (never `pretrain/`, the
# first stage of a pre-train → fine-tune run, nor files a user put there).
RUN_FILES = (RESULTS_FILE, CHECKPOINTS_DIR, "model.safetensors", "config.json", "preprocessor_config.json", "wandb")
_STEP_DIR = re.compile(r"step_(\d+)")


class OutputDirInUse(RuntimeError):
    pass


class CheckpointError(ValueError):
    pass


def lock_output_dir(output_dir: Path):
    """An exclusive OS lock on `output_dir` for this process's lifetime (the kernel drops it on any exit, so a
    crash never leaves it stuck). Returns the open lock file; keep it referenced until the run ends."""
    output_dir.mkdir(parents=True, exist_ok=True)
    handle = open(output_dir / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise OutputDirInUse(
            f"--output_dir {output_dir} is in use by another run (pid {holder}); wait for it to finish or choose another folder"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def clear_run(output_dir: Path) -> None:
    """Remove everything an earlier run wrote into `output_dir` (for --overwrite_output_dir), a killed save's
    staging folder included."""
    for path in [output_dir / name for name in RUN_FILES] + list(output_dir.glob(STAGING_GLOB)):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    """Complete checkpoints (`step_N` with a trainer state), oldest first; anything else is not a checkpoint."""
    root = output_dir / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.fullmatch(p.name) and (p / TRAINER_STATE_FILE).is_file()]
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


def read_checkpoint_state(checkpoint: Path) -> dict:
    """The trainer state of `checkpoint`, after checking that its files are whole (before any long work)."""
    try:
        state = json.loads((checkpoint / TRAINER_STATE_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(_damaged(checkpoint, checkpoint / TRAINER_STATE_FILE, error)) from None
    for path in sorted(checkpoint.iterdir()):
        try:
            _check_whole(path)
        except Exception as error:  # noqa: BLE001 - any failure to read means the file is damaged
            raise CheckpointError(_damaged(checkpoint, path, error)) from None
    return state


def _check_whole(path: Path) -> None:
    if path.suffix == ".safetensors":
        with safe_open(path, framework="pt"):  # checks that the header parses and its tensors cover the file
            pass
    elif path.suffix in (".bin", ".pt", ".pth") and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # reads every member and checks its CRC
            if bad is not None:
                raise ValueError(f"member {bad} fails its checksum")
    elif path.suffix in (".bin", ".pt", ".pth"):
        raise ValueError("not a torch.save archive")


def _damaged(checkpoint: Path, path: Path, error: Exception) -> str:
    earlier = [p for p in checkpoint_dirs(checkpoint.parent.parent) if p != checkpoint]
    hint = f"; resume from the previous one with --resume_from_checkpoint {earlier[-1]}" if earlier else ""
    return f"checkpoint {checkpoint} is damaged: {path.name} cannot be read ({type(error).__name__}: {error}){hint}"


def check_resume_matches(checkpoint: Path, saved: dict | None, current: dict, defaults: dict | None = None) -> None:
    """A checkpoint resumes only with what it was trained with; lists every difference.

    `saved` / `current` map a setting's name to its value (`training.run_signature`); the settings that may
    change at resume are simply not in it. A setting added after the checkpoint was written is not in `saved`:
    that run had the setting's value from `defaults`, if given. A setting the signature no longer holds (the
    raw feature flags, now compared resolved as `feature_*`) is not compared.
    """
    if saved is None:
        raise CheckpointError(f"--resume_from_checkpoint {checkpoint}: it records no run signature (written by an older "
                              "sceneevent); start the run afresh")
    saved = {**{key: value for key, value in (defaults or {}).items() if key in current}, **saved}
    keys = sorted(current)
    differences = [f"{key}: checkpoint {saved.get(key)!r} vs now {current.get(key)!r}" for key in keys if saved.get(key) != current.get(key)]
    if differences:
        raise CheckpointError(f"--resume_from_checkpoint {checkpoint} does not match this run:\n  " + "\n  ".join(differences))


def save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, state: dict, limit: int | None) -> None:
    """`save_state` into a temporary folder, then rename: a killed save never looks complete."""
    final = output_dir / CHECKPOINTS_DIR / f"step_{step}"
    # Every process writes into the staging folder (its own RNG state), so its name is fixed, not drawn.
    staging = output_dir / CHECKPOINTS_DIR / f".step_{step}.tmp"
    accelerator.save_state(str(staging))
    if accelerator.is_main_process:
        if (output_dir / MODEL_FILE).exists():
            _link_or_copy(output_dir / MODEL_FILE, staging / SELECTED_MODEL_FILE)
        atomic_write_json(staging / TRAINER_STATE_FILE, state)
        replace_folder(staging, final)
        if limit:
            for old in checkpoint_dirs(output_dir)[:-limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def save_model(accelerator: Accelerator, model, extractor, output_dir: Path) -> None:
    """`save_pretrained` of model + feature extractor into the run folder, each file replaced atomically."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with staged_folder(output_dir, merge=True) as staging, _quiet_transformers_bars():
            accelerator.unwrap_model(model).save_pretrained(staging, save_function=accelerator.save, safe_serialization=True)
            extractor.save_pretrained(staging)
    accelerator.wait_for_everyone()


def restore_selected_model(accelerator: Accelerator, checkpoint: Path, output_dir: Path, selected: bool) -> None:
    """Put back the model the checkpoint's run had `selected`; none selected yet: remove a later run's model."""
    if accelerator.is_main_process:
        saved = checkpoint / SELECTED_MODEL_FILE
        if saved.exists():
            with staged_file(output_dir / MODEL_FILE) as temporary:
                temporary.unlink()
                _link_or_copy(saved, temporary)
        elif not selected:
            (output_dir / MODEL_FILE).unlink(missing_ok=True)
        else:  # a checkpoint of an older version
            logger.warning("checkpoint %s holds no copy of the selected model: %s may hold a later epoch's model if "
                           "the run was killed after this checkpoint", checkpoint, output_dir / MODEL_FILE)
    accelerator.wait_for_everyone()


def _link_or_copy(source: Path, target: Path) -> None:
    # A hard link costs no space: the run folder's model is replaced by a rename, never rewritten in place.
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


@contextmanager
def _quiet_transformers_bars():
    """No "Writing model shards" bar at every epoch's save (one shard: a bar is noise in every log)."""
    from transformers.utils import logging as transformers_logging

    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


def remove_abandoned_staging(output_dir: Path) -> None:
    """What a killed write left in the run folder (`.results.json.*.tmp`, a half-saved model or checkpoint).
    Call only while holding the folder's lock: then no write of this run is in progress."""
    for folder in (output_dir, output_dir / CHECKPOINTS_DIR):
        remove_staging_leftovers(folder)
