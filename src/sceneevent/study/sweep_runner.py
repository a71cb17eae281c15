"""The local sweep runner: the unfinished runs `sweeps.plan_runs` planned, `parallel` at a time or one per free
GPU set, each in its own process group with its output in `<run dir>/train.log`; a failed run is recorded and
the others go on.

- GPU placement: a pool of free GPU ids; a run takes `gpus_per_run` of them when it starts (as
  `CUDA_VISIBLE_DEVICES` in its environment, with its own rendezvous port) and gives them back when it ends, so a
  run starts as soon as enough GPUs are free and no two runs share one. The pool only hands out ids: it needs
  no GPU itself.
- Each run is its own process group; SIGINT / SIGTERM to the runner stop them all and start no more.
- A lock on the sweep folder, inherited by the runs, keeps a second runner out while any of them lives.
- A finished run's wall time as the runner saw it (process start to end, start-up included) goes to
  `<run dir>/sweep_run.json`: what the sweep plan measures its per-run overhead from.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..io_utils import atomic_write_json
from ..training.results import RESULTS_FILE
from .sweeps import LOG_FILE, RUN_RECORD_FILE, SweepRun, changed_flags, cuda_visible_devices, is_finished

SWEEP_LOCK_FILE = ".run_sweep.lock"  # in OUTPUT_ROOT/<sweep>/
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
DEFAULT_STOP_TIMEOUT = 30.0  # seconds a run gets to exit after a forwarded stop signal, then it is killed
LEFTOVER_GRACE_SECONDS = 5.0  # for what a finished run's process group still holds (SIGTERM, then SIGKILL)
KILL_WAIT_SECONDS = 5.0  # for the kernel to end SIGKILLed processes


@dataclass
class SweepOutcome:
    done: list[SweepRun] = field(default_factory=list)
    skipped: list[SweepRun] = field(default_factory=list)
    failed: list[tuple[SweepRun, str]] = field(default_factory=list)
    interrupted: list[SweepRun] = field(default_factory=list)  # stopped by a signal part-way; a rerun resumes them
    not_started: list[SweepRun] = field(default_factory=list)  # left when a signal stopped the sweep
    stopped_by: str | None = None  # the signal's name, e.g. "SIGINT"
    wall_seconds: float | None = None  # from the first run's start to the last one's end; None when nothing ran


class SweepBusyError(RuntimeError):
    """Another runner, or a run an earlier runner started, still works in this sweep's folder."""


class RunNotStarted(Exception):
    """A stop signal arrived before this run started."""


class RunInterrupted(Exception):
    """A stop signal ended this run before it finished."""


class _Children:
    """The sweep's running children (each the leader of its own process group) and the stop signal, if any.

    Children run in their own session, so a terminal's Ctrl-C reaches only the runner: the runner then
    forwards the signal to every child's whole group (launcher, trainer, cache-build workers), starts nothing
    more, and after `stop_timeout` seconds (or a second signal) kills the groups."""

    def __init__(self, stop_timeout: float):
        self.stop_timeout = stop_timeout
        self._lock = threading.RLock()  # the handler may run again inside itself (a second signal)
        self._running: dict[int, subprocess.Popen] = {}
        self.signal_number: int | None = None
        self._stop_requested_at: float | None = None

    @property
    def stopping(self) -> bool:
        return self.signal_number is not None

    def start(self, command: list[str], **popen_options) -> subprocess.Popen:
        """Start `command` in a new session, unless a stop was requested (then raise RunNotStarted)."""
        with self._lock:  # a signal arriving meanwhile waits for the child to be registered, then stops it
            if self.stopping:
                raise RunNotStarted
            child = subprocess.Popen(command, start_new_session=True, **popen_options)
            self._running[child.pid] = child
            return child

    def wait(self, child: subprocess.Popen) -> int:
        """The child's exit code; its group is killed once the stop timeout has passed."""
        while True:
            try:
                return child.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                if self._stop_requested_at is not None and time.monotonic() - self._stop_requested_at > self.stop_timeout:
                    _signal_group(child.pid, signal.SIGKILL)

    def finish(self, child: subprocess.Popen) -> None:
        """End whatever the child's group still holds (e.g. a cache-build worker), so no writer outlives its run."""
        try:
            end_process_group(child.pid, grace=min(LEFTOVER_GRACE_SECONDS, self.stop_timeout))
        finally:
            with self._lock:
                self._running.pop(child.pid, None)

    def request_stop(self, signal_number: int, frame=None) -> None:
        """Signal handler: forward the first signal to every child's group; a second one kills them."""
        with self._lock:
            first = not self.stopping
            if first:
                self.signal_number, self._stop_requested_at = signal_number, time.monotonic()
            forwarded = signal_number if first else signal.SIGKILL
            for pid in self._running:
                _signal_group(pid, forwarded)
        name = signal.Signals(signal_number).name
        note = (f"\n{name}: stopping the running run(s) (killed after {self.stop_timeout:g} s; send it again to kill "
                "them now); no further run starts\n") if first else f"\n{name} again: killing the running run(s)\n"
        os.write(sys.stderr.fileno(), note.encode())

    @contextmanager
    def handling_signals(self):
        """SIGINT and SIGTERM stop the sweep while the block runs (signal handlers live in the main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {number: signal.signal(number, self.request_stop) for number in STOP_SIGNALS}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)


def _signal_group(group: int, signal_number: int) -> None:
    try:
        os.killpg(group, signal_number)
    except (ProcessLookupError, PermissionError):  # the group is gone
        pass


def end_process_group(group: int, grace: float = LEFTOVER_GRACE_SECONDS) -> None:
    """SIGTERM what is left of a process group, SIGKILL it after `grace` seconds; return once it is gone."""
    for signal_number, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, KILL_WAIT_SECONDS)):
        if not group_members(group):
            return
        _signal_group(group, signal_number)
        deadline = time.monotonic() + wait
        while group_members(group) and time.monotonic() < deadline:
            time.sleep(0.05)


def group_members(group: int) -> list[int]:
    """Live (not zombie) processes of a process group, read from /proc; elsewhere, whether any answers a signal."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        try:
            os.killpg(group, 0)
            return [group]
        except (ProcessLookupError, PermissionError):
            return []
    members = []
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):  # ended while we looked
                continue
            if int(fields[2]) == group and fields[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


# --- GPU placement -----------------------------------------------------------------------------------


class GpuPool:
    """The GPUs no run holds. A run takes `per_run` of them as it starts and gives them back when it ends;
    `slots` runs fit at once. Ids only: it needs no GPU, and knows nothing of what a GPU does."""

    def __init__(self, gpus: Sequence[int], per_run: int = 1):
        if per_run < 1:
            raise ValueError(f"--gpus_per_run must be at least 1, got {per_run}")
        if len(gpus) < per_run:
            raise ValueError(f"--gpus_per_run {per_run} needs at least {per_run} GPUs, --gpus gives {len(gpus)}")
        self.per_run, self.slots = per_run, len(gpus) // per_run
        self._free = list(gpus)
        self._condition = threading.Condition()

    @contextmanager
    def taken(self) -> Iterator[tuple[int, ...]]:
        with self._condition:
            self._condition.wait_for(lambda: len(self._free) >= self.per_run)
            gpus = tuple(self._free[: self.per_run])
            del self._free[: self.per_run]
        try:
            yield gpus
        finally:
            with self._condition:
                self._free.extend(gpus)
                self._condition.notify()


def _free_port() -> int:
    """A TCP port no process listens on now: each multi-process run's rendezvous (two on port 29500 would clash)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def placed_command(command: list[str], gpus: Sequence[int] | None) -> tuple[list[str], dict[str, str] | None]:
    """The command and environment of a run on `gpus` (None: as planned, the runner's own environment)."""
    if gpus is None:
        return command, None
    if command[:2] == ["accelerate", "launch"]:
        command = [*command[:2], f"--main_process_port={_free_port()}", *command[2:]]
    return command, {**os.environ, "CUDA_VISIBLE_DEVICES": cuda_visible_devices(gpus)}


# --- running ---------------------------------------------------------------------------------------------


def execute(run: SweepRun, cwd: str | os.PathLike | None = None, children: _Children | None = None,
            inherit_fds: tuple[int, ...] = (), gpus: Sequence[int] | None = None) -> str | None:
    """Run one command with its output in `<run dir>/train.log`, on `gpus` when given (its CUDA_VISIBLE_DEVICES);
    return None on success, else the reason. A finished run's timing goes to `<run dir>/sweep_run.json`.

    Raises RunNotStarted or RunInterrupted when a stop signal came before or during the run."""
    children = children or _Children(stop_timeout=DEFAULT_STOP_TIMEOUT)
    if children.stopping:
        raise RunNotStarted
    run.output_dir.mkdir(parents=True, exist_ok=True)
    command, env = placed_command(run.command, gpus)
    with open(run.output_dir / LOG_FILE, "a") as log:
        placement = f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} " if env else ""
        log.write(f"$ {placement}{shlex.join(command)}\n")
        log.flush()
        started, clock = time.time(), time.monotonic()
        try:
            child = children.start(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd,
                                   pass_fds=inherit_fds, env=env)
        except OSError as error:  # e.g. `accelerate` not on PATH
            return f"could not start {command[0]!r}: {error}"
        try:
            code = children.wait(child)
        finally:
            children.finish(child)
    if children.stopping and not is_finished(run):
        raise RunInterrupted
    if code != 0:
        return f"exit code {code} (see {run.output_dir / LOG_FILE})"
    if not is_finished(run):
        return f"exit code 0 but no {RESULTS_FILE} in {run.output_dir}"
    atomic_write_json(run.output_dir / RUN_RECORD_FILE, {
        "wall_seconds": time.monotonic() - clock, "started": started, "ended": time.time(), "processes": run.processes,
        "gpus": list(gpus) if gpus is not None else None, "cuda_visible_devices": env["CUDA_VISIBLE_DEVICES"] if env else None,
        "arguments": run.arguments,  # what a later plan's run in this folder must match (`changed_flags`)
    })
    return None


def lock_sweep_folders(runs: list[SweepRun]) -> list[int]:
    """An exclusive OS lock on each sweep folder, as open descriptors. The runs inherit them, so the lock
    holds while any of them lives, even past a runner that was killed: a second runner never starts a
    second writer into a run folder. The kernel drops the lock when the last holder exits."""
    descriptors = []
    try:
        for folder in sorted({run.output_dir.parent for run in runs}):
            folder.mkdir(parents=True, exist_ok=True)
            descriptors.append(_lock(folder / SWEEP_LOCK_FILE))
    except BaseException:
        for descriptor in descriptors:
            os.close(descriptor)
        raise
    return descriptors


def _lock(path: Path) -> int:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(descriptor, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(descriptor)
        raise SweepBusyError(
            f"{path.parent} is in use by another run_sweep.py (pid {holder}) or by a run it started that is still going "
            f"(they hold {path}); wait for them to end or stop them, then run this again"
        ) from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, str(os.getpid()).encode(), 0)
    return descriptor


def run_sweep(runs: list[SweepRun], parallel: int | None = None, cwd: str | os.PathLike | None = None, progress: bool = True,
              stop_timeout: float = DEFAULT_STOP_TIMEOUT, gpus: Sequence[int] = (), gpus_per_run: int = 1) -> SweepOutcome:
    """Run the unfinished runs; a failure is recorded and the others go on. Without `gpus`, `parallel` at a time
    (default 1); with them, each run on `gpus_per_run` GPUs of its own, as many at once as they allow (at most
    `parallel`, when given), each starting as soon as enough GPUs are free.

    SIGINT / SIGTERM stop the running runs (their whole process groups) and start no more: the outcome
    then names the signal and the interrupted runs, which a rerun resumes from their last checkpoint.
    Raises SweepBusyError when another runner (or a run left by one) works in the same sweep folder."""
    if parallel is not None and parallel < 1:
        raise ValueError(f"--parallel must be at least 1, got {parallel}")
    if stop_timeout < 0:
        raise ValueError(f"--stop_timeout must be at least 0 seconds, got {stop_timeout}")
    pool = GpuPool(gpus, gpus_per_run) if gpus else None
    workers = min(parallel or pool.slots, pool.slots) if pool else parallel or 1
    _refuse_shared_folders(runs)
    from tqdm.auto import tqdm

    outcome, pending = SweepOutcome(), []
    for run in runs:
        (outcome.skipped if is_finished(run) else pending).append(run)
    changed = [f"{run.output_dir} ({'; '.join(flags)})" for run in outcome.skipped if (flags := changed_flags(run))]
    if changed:
        raise ValueError(f"{len(changed)} finished run(s) were made with other flags than this plan gives them, so they are "
                         "not its runs: " + ", ".join(changed) + ". Give the plan another output folder, or move those runs away.")
    if not pending:
        return outcome
    children = _Children(stop_timeout)
    locks = lock_sweep_folders(pending)
    try:
        with children.handling_signals(), tqdm(total=len(runs), initial=len(outcome.skipped), desc="runs", unit="run",
                                               disable=not progress) as bar:
            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=workers) as executor:
                futures = {executor.submit(_placed, pool, run, cwd, children, tuple(locks)): run for run in pending}
                for future in as_completed(futures):
                    _record(outcome, futures[future], future, bar)
            outcome.wall_seconds = time.monotonic() - started
    finally:
        for descriptor in locks:
            os.close(descriptor)
    if children.stopping:
        outcome.stopped_by = signal.Signals(children.signal_number).name
    return outcome


def _placed(pool: GpuPool | None, run: SweepRun, cwd, children: _Children, inherit_fds: tuple[int, ...]) -> str | None:
    """`execute` on GPUs taken from `pool` (held until the run ends), or as planned without one."""
    if pool is None:
        return execute(run, cwd, children, inherit_fds)
    if children.stopping:  # no GPUs taken for a run that will not start
        raise RunNotStarted
    with pool.taken() as gpus:
        return execute(run, cwd, children, inherit_fds, gpus=gpus)


def _refuse_shared_folders(runs: list[SweepRun]) -> None:
    """Two runs into one folder (e.g. a sweep file given twice) would be two writers into it."""
    seen: dict[Path, str] = {}
    for run in runs:
        if run.output_dir in seen:
            raise ValueError(f"two runs ({seen[run.output_dir]} and {run.name}) would write into {run.output_dir}; "
                             "give each sweep file once")
        seen[run.output_dir] = run.name


def _record(outcome: SweepOutcome, run: SweepRun, future, bar) -> None:
    try:
        error = future.result()
    except RunNotStarted:
        outcome.not_started.append(run)
        return
    except RunInterrupted:
        outcome.interrupted.append(run)
        bar.write(f"INTERRUPTED {run.name}")
        return
    if error is None:
        outcome.done.append(run)
    else:
        outcome.failed.append((run, error))
        bar.write(f"FAILED {run.name}: {error}")
    bar.set_postfix(failed=len(outcome.failed))
    bar.update()
