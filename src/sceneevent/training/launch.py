"""What a run sets up around the loop: the Accelerator and its threads, the lock on the output folder, the
loader's reader threads, the W&B run."""

from __future__ import annotations

import functools
import os
import platform
import sys
import threading
import time
import traceback
from datetime import timedelta
from pathlib import Path

import torch
import transformers
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, broadcast_object_list

from .arguments import JointTrainingArguments
from .checkpointing import OutputDirInUse, lock_output_dir


def make_accelerator(train_args: JointTrainingArguments, output_dir: Path) -> Accelerator:
    # torchrun without GPUs: Accelerate sets up gloo (MULTI_CPU) only when told to use the CPU.
    launched_processes = int(os.environ.get("WORLD_SIZE", "1"))
    if train_args.distributed_timeout <= 0:
        raise ValueError(f"--distributed_timeout must be a positive number of seconds, got {train_args.distributed_timeout}")
    accelerator = Accelerator(
        cpu=launched_processes > 1 and not torch.cuda.is_available(),
        gradient_accumulation_steps=train_args.gradient_accumulation_steps,
        mixed_precision=train_args.mixed_precision,
        log_with="wandb" if train_args.report_to == "wandb" else None,
        project_dir=str(output_dir),
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=train_args.distributed_timeout))],
    )
    if accelerator.num_processes != launched_processes:
        raise RuntimeError(
            f"launched as {launched_processes} processes but Accelerate sees {accelerator.num_processes}; "
            "on machines without GPUs set ACCELERATE_USE_CPU=1"
        )
    if accelerator.num_processes > 1:
        explain_wait_timeouts(accelerator.process_index, train_args.distributed_timeout)
    if "TORCHELASTIC_RUN_ID" in os.environ:  # started by torchrun (also `accelerate launch` of several processes)
        stop_when_launcher_dies(accelerator.process_index)
    threads = cpu_threads(train_args.num_cpu_threads, accelerator)
    if threads:
        torch.set_num_threads(threads)
    return accelerator


@functools.cache  # once per process, however many runs it starts
def explain_wait_timeouts(rank: int, timeout: int) -> None:
    """After the traceback of a collective that timed out, say which wait it was and what it means: gloo raises only
    "Timed out waiting 1800000ms for recv operation to complete", from deep inside torch. (NCCL's watchdog aborts
    the process itself, with a line naming the collective.)"""
    previous = sys.excepthook

    def explain(kind, error, trace):
        previous(kind, error, trace)
        if "Timed out waiting" in str(error):
            say(f"rank {rank} stopped: it waited --distributed_timeout {timeout} s for the other process(es) {_wait_site(trace)}; "
                "one of them is stopped (e.g. SIGSTOP), hung or dead, or still working alone (the main process prepares "
                "the data while the others wait: raise --distributed_timeout if that takes longer)")

    sys.excepthook = explain


def say(line: str) -> None:
    """One line to stderr in one write: every rank shares the launcher's stderr, and print() writes a line's text
    and its newline apart, so two ranks' lines could run together."""
    sys.stderr.flush()  # after what the process already wrote (e.g. the traceback before it)
    os.write(sys.stderr.fileno(), f"{line}\n".encode())


def _wait_site(trace) -> str:
    """`in torch.distributed.barrier, called from …/sceneevent/training/checkpointing.py:168 (save_checkpoint)`."""
    frames = traceback.extract_tb(trace)
    collective = next((f.name for f in reversed(frames) if f.filename.endswith("distributed_c10d.py")), None)
    ours = next((f for f in reversed(frames) if f"{os.sep}sceneevent{os.sep}" in f.filename), None)
    site = f"in torch.distributed.{collective}" if collective else "at a collective"
    return site + (f", called from {ours.filename}:{ours.lineno} ({ours.name})" if ours is not None else "")


@functools.cache  # one watch per process
def stop_when_launcher_dies(rank: int, poll_seconds: float = 1.0) -> None:
    """End this process when the torchrun launcher that started it is gone (killed): the launcher is what stops
    every rank when one fails, so ranks without it would train on unsupervised.

    A thread notices the parent change (the process is re-parented); `prctl(PR_SET_PDEATHSIG)` would be Linux
    only, fires when the launcher's *thread* that forked us ends, and misses a launcher that died before the
    call. The exit is immediate: every file the run writes is staged and renamed, so nothing is left half-written,
    and the newest checkpoint resumes the run."""
    launcher = os.getppid()

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(poll_seconds)
        say(f"rank {rank} stopped: its launcher (torchrun, pid {launcher}) is gone; resume the run from its newest "
            "checkpoint with --resume_from_checkpoint latest")
        os._exit(1)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


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
