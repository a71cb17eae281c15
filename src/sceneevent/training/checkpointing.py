"""A run folder's files and their safety: the lock that keeps two runs apart, resumable checkpoints
(Accelerate's `save_state` plus our trainer state, written atomically), the checks a checkpoint passes
before a run resumes from it, and the names the sweep runner, the report and the Hub upload read too."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import safe_open

from ..io_utils import STAGING_GLOB, atomic_write_json, replace_folder, staged_folder
from .results import RESULTS_FILE

if TYPE_CHECKING:  # accelerate is slow to import; the sweep runner and the report only need the names
    from accelerate import Accelerator

CHECKPOINTS_DIR = "checkpoints"
TRAINER_STATE_FILE = "trainer_state.json"
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
        with staged_folder(output_dir, merge=True) as staging:
            accelerator.unwrap_model(model).save_pretrained(staging, save_function=accelerator.save, safe_serialization=True)
            extractor.save_pretrained(staging)
    accelerator.wait_for_everyone()
