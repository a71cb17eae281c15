"""What a run sets up around the loop: the Accelerator and its threads, the lock on the output folder, the
loader's reader threads, the W&B run."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch
import transformers
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from .arguments import JointTrainingArguments
from .checkpointing import OutputDirInUse, lock_output_dir


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


def reader_threads(requested: int | None, device: torch.device) -> int:
    """`--dataloader_num_workers`, or its default: one reader thread on a GPU, whose step leaves the host free to
    read ahead (`bench_loader.py --step_ms 30` at the paper's shape: 41 ms a step with one thread, 53 ms
    reading in the loop); none on a CPU, whose step takes every core."""
    if requested is not None:
        return requested
    return 1 if device.type == "cuda" else 0


def wandb_init_kwargs(output_dir: Path, run_name: str | None) -> dict:
    # No login → offline, so that nothing ever prompts on stdin.
    if "WANDB_MODE" not in os.environ and not os.environ.get("WANDB_API_KEY"):
        netrc = Path.home() / ".netrc"
        if not (netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")):
            os.environ["WANDB_MODE"] = "offline"
    (output_dir / "wandb").mkdir(parents=True, exist_ok=True)
    return {"wandb": {"name": run_name or output_dir.name, "dir": str(output_dir)}}


def environment(accelerator: Accelerator) -> dict:
    """What the run ran on, for results.json."""
    return {
        "num_processes": accelerator.num_processes,
        "device": str(accelerator.device),
        "mixed_precision": accelerator.mixed_precision,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
