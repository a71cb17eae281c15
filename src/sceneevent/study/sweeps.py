"""Run a W&B sweep file (`sweeps/*.yaml`) locally, without a W&B server.

The same YAML serves `wandb sweep` + `wandb agent` and this runner. Here the grid is expanded the way
W&B's grid search does it (every combination of the `values` lists; `value` entries are constants),
each run gets its own folder `ROOT/<sweep>/<p1>=<v1>_<p2>=<v2>...` (swept parameters only), and the
flags are formatted the way the W&B agent formats `${args}` (`--name=value`).

Conventions shared with the YAML files:
- `output_dir` in `parameters` is ignored: the runner chooses every run's folder.
- A `mode` parameter picks the program (`MODE_PROGRAMS`) and is not passed on; this is how one sweep
  compares `scripts/pretrain_finetune.py` with `scripts/train_joint.py` (W&B allows one program).
- A run whose folder already holds `results.json` is finished and skipped (resume); a run whose folder
  holds checkpoints but no results is continued with `--resume_from_checkpoint=latest`; a folder left
  before its first checkpoint is started again with `--overwrite_output_dir`. Runs checkpoint every
  epoch (`SWEEP_CHECKPOINTING`) unless the sweep or the extra flags say otherwise.
- Each run is its own process group; SIGINT / SIGTERM to the runner stop them all and start no more.
  A lock on the sweep folder, inherited by the runs, keeps a second runner out while any of them lives.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..training.checkpointing import LOCK_FILE, RESULTS_FILE, checkpoint_dirs

LOG_FILE = "train.log"
SWEEP_LOCK_FILE = ".run_sweep.lock"  # in OUTPUT_ROOT/<sweep>/
RUNNER_FILES = {LOG_FILE, LOCK_FILE}  # what a run folder may hold and still count as never started
SWEEP_CHECKPOINTING = {"checkpointing_steps": "epoch", "save_total_limit": 1}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
DEFAULT_STOP_TIMEOUT = 30.0  # seconds a run gets to exit after a forwarded stop signal, then it is killed
LEFTOVER_GRACE_SECONDS = 5.0  # for what a finished run's process group still holds (SIGTERM, then SIGKILL)
KILL_WAIT_SECONDS = 5.0  # for the kernel to end SIGKILLed processes
MODE_PARAMETER = "mode"
MODE_PROGRAMS = {"joint": "scripts/train_joint.py", "pretrain_finetune": "scripts/pretrain_finetune.py"}
LAUNCHERS = ("accelerate", "python")

# Top-level keys of W&B's sweep configuration schema (wandb/sweeps, config/schema.json), used when
# that package (`pip install wandb[sweeps]`) is not installed.
SWEEP_KEYS = {
    "apiVersion", "kind", "controller", "description", "program", "job", "image_uri", "entity", "project",
    "method", "command", "name", "run_cap", "metric", "metrics", "scheduler", "early_terminate", "parameters",
}
METHODS = {"grid", "random", "bayes", "custom"}
METRIC_KEYS = {"name", "goal", "target", "impute", "impute_while_running"}
DISTRIBUTIONS = {
    "constant", "categorical", "int_uniform", "uniform", "q_uniform", "log_uniform", "log_uniform_values",
    "q_log_uniform", "q_log_uniform_values", "inv_log_uniform", "inv_log_uniform_values", "normal", "q_normal",
    "log_normal", "q_log_normal", "beta", "q_beta",
}
PARAMETER_KEYS = {"value", "values", "distribution", "probabilities", "min", "max", "mu", "sigma", "q", "a", "b", "parameters"}
_PARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


@dataclass
class SweepRun:
    """One run of a sweep: its name, every parameter passed on, and the command that runs it."""

    name: str
    parameters: dict[str, Any]
    output_dir: Path
    command: list[str] = field(default_factory=list)


@dataclass
class SweepOutcome:
    done: list[SweepRun] = field(default_factory=list)
    skipped: list[SweepRun] = field(default_factory=list)
    failed: list[tuple[SweepRun, str]] = field(default_factory=list)
    interrupted: list[SweepRun] = field(default_factory=list)  # stopped by a signal part-way; a rerun resumes them
    not_started: list[SweepRun] = field(default_factory=list)  # left when a signal stopped the sweep
    stopped_by: str | None = None  # the signal's name, e.g. "SIGINT"


def load_sweep(path: str | os.PathLike) -> dict:
    """Read a sweep YAML; raise ValueError naming the file and every schema violation."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"sweep file {path}: no such file")
    with open(path) as handle:
        config = yaml.safe_load(handle)
    violations = schema_violations(config)
    if violations:
        raise ValueError(f"sweep file {path} is not a valid W&B sweep configuration:\n  " + "\n  ".join(violations))
    return config


def schema_violations(config: Any) -> list[str]:
    """W&B's own schema check when `sweeps` (wandb[sweeps]) is installed, else a check of the documented keys."""
    if not isinstance(config, dict):
        return ["a sweep configuration must be a mapping"]
    try:
        from sweeps import schema_violations_from_proposed_config
    except ImportError:
        return documented_key_violations(config)
    return list(schema_violations_from_proposed_config(config)) + _grid_violations(config)


def documented_key_violations(config: dict) -> list[str]:
    """Check the keys documented for W&B sweep configurations (method, metric, parameters, program, command)."""
    found = [f"unknown top-level key {key!r} (expected one of {sorted(SWEEP_KEYS)})" for key in config if key not in SWEEP_KEYS]
    if config.get("method") not in METHODS:
        found.append(f"method must be one of {sorted(METHODS)}, got {config.get('method')!r}")
    metric = config.get("metric")
    if metric is not None:
        if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
            found.append("metric must be a mapping with a string `name`")
        else:
            found += [f"metric: unknown key {key!r}" for key in metric if key not in METRIC_KEYS]
            if metric.get("goal", "minimize") not in ("minimize", "maximize"):
                found.append(f"metric.goal must be minimize or maximize, got {metric['goal']!r}")
    for key in ("program", "name", "description"):
        if key in config and not isinstance(config[key], str):
            found.append(f"{key} must be a string")
    if "command" in config and not isinstance(config["command"], list):
        found.append("command must be a list")
    if "run_cap" in config and not (isinstance(config["run_cap"], int) and config["run_cap"] > 0):
        found.append("run_cap must be a positive integer")
    parameters = config.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        return found + ["parameters must be a non-empty mapping"]
    for name, spec in parameters.items():
        found += _parameter_violations(str(name), spec)
    return found + _grid_violations(config)


def _parameter_violations(name: str, spec: Any) -> list[str]:
    if not _PARAMETER_NAME.match(name):
        return [f"parameter name {name!r} must match {_PARAMETER_NAME.pattern}"]
    if not isinstance(spec, dict):
        return [f"parameter {name!r} must be a mapping (value, values or distribution)"]
    found = [f"parameter {name!r}: unknown key {key!r}" for key in spec if key not in PARAMETER_KEYS]
    if "value" in spec and "values" in spec:
        found.append(f"parameter {name!r}: give `value` or `values`, not both")
    if "values" in spec and not (isinstance(spec["values"], list) and spec["values"]):
        found.append(f"parameter {name!r}: `values` must be a non-empty list")
    if not {"value", "values", "distribution", "parameters"} & set(spec):
        found.append(f"parameter {name!r}: needs `value`, `values` or `distribution`")
    if "distribution" in spec and spec["distribution"] not in DISTRIBUTIONS:
        found.append(f"parameter {name!r}: unknown distribution {spec['distribution']!r}")
    return found


def _grid_violations(config: dict) -> list[str]:
    """W&B's grid search only enumerates `value`/`values` parameters (so does this runner), and runs a repeated value twice."""
    if config.get("method") != "grid":
        return []
    found = []
    for name, spec in (config.get("parameters") or {}).items():
        if not isinstance(spec, dict):
            continue
        if not {"value", "values"} & set(spec):
            found.append(f"parameter {name!r}: grid search needs `value` or `values`")
        values = spec.get("values")
        if isinstance(values, list) and len({repr(value) for value in values}) < len(values):
            found.append(f"parameter {name!r}: repeated entries in `values` (the grid would run them twice)")
    return found


def expand_grid(config: dict) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every combination of the `values` lists, in file order; returns (swept, all parameters) pairs."""
    if config.get("method") != "grid":
        raise ValueError(f"only `method: grid` sweeps can be run locally, got method {config.get('method')!r}")
    specs = config["parameters"]
    swept = {name: list(spec["values"]) for name, spec in specs.items() if "values" in spec}
    combinations = []
    for combination in itertools.product(*swept.values()):
        chosen = dict(zip(swept, combination))
        # File order, like the agent's `${args}`.
        parameters = {name: chosen[name] if name in chosen else spec["value"] for name, spec in specs.items()}
        combinations.append((chosen, parameters))
    return combinations


def run_name(swept: dict[str, Any]) -> str:
    """`alpha=0.95_seed=0`; a path-like value contributes its last component (`aet_dataset=k=35`)."""
    return "_".join(f"{name}={_name_part(value)}" for name, value in swept.items())


def _name_part(value: Any) -> str:
    text = str(value).rstrip("/")
    text = text.rsplit("/", 1)[-1] if "/" in text else text
    return re.sub(r"[^A-Za-z0-9_.=+-]", "-", text)


def format_flags(parameters: dict[str, Any]) -> list[str]:
    """`--name=value` for each parameter, exactly as the W&B agent's `${args}` macro writes them."""
    try:
        from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

        return create_sweep_command_args({"args": {name: {"value": value} for name, value in parameters.items()}})["args"]
    except ImportError:  # the same format, for an environment without wandb
        return [f"--{name}={value}" for name, value in parameters.items()]


def program_for(config: dict, parameters: dict[str, Any]) -> str:
    """The script a run executes: the sweep's `program`, or the one its `mode` parameter names."""
    if MODE_PARAMETER in parameters:
        mode = parameters[MODE_PARAMETER]
        if mode not in MODE_PROGRAMS:
            raise ValueError(f"parameter `{MODE_PARAMETER}` must be one of {sorted(MODE_PROGRAMS)}, got {mode!r}")
        return MODE_PROGRAMS[mode]
    if not config.get("program"):
        raise ValueError("the sweep has no `program` (the training script to run)")
    return config["program"]


def launcher_prefix(launcher: str) -> list[str]:
    if launcher == "accelerate":
        return ["accelerate", "launch"]
    if launcher == "python":
        return [sys.executable]
    raise ValueError(f"--launcher must be one of {LAUNCHERS}, got {launcher!r}")


def plan_runs(
    config: dict, sweep_name: str, output_root: str | os.PathLike, launcher: str = "accelerate", extra_args: list[str] | None = None
) -> list[SweepRun]:
    """One SweepRun per grid point, each with its own output folder and full command."""
    runs, folders = [], {}
    extra_args = list(extra_args or [])
    for swept, parameters in expand_grid(config):
        name = run_name(swept) or "run"
        if name in folders:
            raise ValueError(f"runs {folders[name]} and {swept} would share the folder {name!r}; make the values' last path parts differ")
        folders[name] = swept
        output_dir = Path(output_root) / sweep_name / name
        passed = {key: value for key, value in parameters.items() if key not in ("output_dir", MODE_PARAMETER)}
        command = [
            *launcher_prefix(launcher), program_for(config, parameters), *format_flags(passed),
            *checkpointing_flags(passed, extra_args), *continuation_flags(output_dir), f"--output_dir={output_dir}",
            *extra_args,  # last, so they override the sweep's values (argparse keeps the last)
        ]
        runs.append(SweepRun(name=name, parameters=parameters, output_dir=output_dir, command=command))
    return runs


def checkpointing_flags(parameters: dict[str, Any], extra_args: list[str]) -> list[str]:
    """Sweep runs save a checkpoint every epoch (the newest kept) so that an interrupted sweep resumes;
    a value the sweep or the user's extra flags give wins."""
    return [f"--{name}={value}" for name, value in SWEEP_CHECKPOINTING.items()
            if name not in parameters and not _sets_flag(name, extra_args)]


def _sets_flag(name: str, args: list[str]) -> bool:
    return any(arg == f"--{name}" or arg.startswith(f"--{name}=") for arg in args)


def continuation_flags(output_dir: Path) -> list[str]:
    """How a run folder left by an interrupted run is taken up: from its newest complete checkpoint, else
    started again (a folder with a model or a half-written checkpoint but nothing to resume from)."""
    if (output_dir / RESULTS_FILE).is_file():  # finished: skipped, never run again
        return []
    if checkpoint_dirs(output_dir):
        return ["--resume_from_checkpoint=latest"]
    if holds_leftovers(output_dir):
        return ["--overwrite_output_dir"]
    return []


def holds_leftovers(output_dir: Path) -> bool:
    """Anything but the runner's log and the training lock: the folder would be refused as 'already holds a run'."""
    return output_dir.is_dir() and any(entry.name not in RUNNER_FILES for entry in output_dir.iterdir())


def is_finished(run: SweepRun) -> bool:
    return (run.output_dir / RESULTS_FILE).is_file()


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


def execute(run: SweepRun, cwd: str | os.PathLike | None = None, children: _Children | None = None,
            inherit_fds: tuple[int, ...] = ()) -> str | None:
    """Run one command with its output in `<run dir>/train.log`; return None on success, else the reason.

    Raises RunNotStarted or RunInterrupted when a stop signal came before or during the run."""
    children = children or _Children(stop_timeout=DEFAULT_STOP_TIMEOUT)
    if children.stopping:
        raise RunNotStarted
    run.output_dir.mkdir(parents=True, exist_ok=True)
    with open(run.output_dir / LOG_FILE, "a") as log:
        log.write(f"$ {shlex.join(run.command)}\n")
        log.flush()
        try:
            child = children.start(run.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd,
                                   pass_fds=inherit_fds)
        except OSError as error:  # e.g. `accelerate` not on PATH
            return f"could not start {run.command[0]!r}: {error}"
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


def run_sweep(runs: list[SweepRun], parallel: int = 1, cwd: str | os.PathLike | None = None, progress: bool = True,
              stop_timeout: float = DEFAULT_STOP_TIMEOUT) -> SweepOutcome:
    """Run the unfinished runs, `parallel` at a time; a failure is recorded and the others go on.

    SIGINT / SIGTERM stop the running runs (their whole process groups) and start no more: the outcome
    then names the signal and the interrupted runs, which a rerun resumes from their last checkpoint.
    Raises SweepBusyError when another runner (or a run left by one) works in the same sweep folder."""
    if parallel < 1:
        raise ValueError(f"--parallel must be at least 1, got {parallel}")
    if stop_timeout < 0:
        raise ValueError(f"--stop_timeout must be at least 0 seconds, got {stop_timeout}")
    _refuse_shared_folders(runs)
    from tqdm.auto import tqdm

    outcome, pending = SweepOutcome(), []
    for run in runs:
        (outcome.skipped if is_finished(run) else pending).append(run)
    if not pending:
        return outcome
    children = _Children(stop_timeout)
    locks = lock_sweep_folders(pending)
    try:
        with children.handling_signals(), tqdm(total=len(runs), initial=len(outcome.skipped), desc="runs", unit="run",
                                               disable=not progress) as bar:
            with ThreadPoolExecutor(max_workers=parallel) as pool:
                futures = {pool.submit(execute, run, cwd, children, tuple(locks)): run for run in pending}
                for future in as_completed(futures):
                    _record(outcome, futures[future], future, bar)
    finally:
        for descriptor in locks:
            os.close(descriptor)
    if children.stopping:
        outcome.stopped_by = signal.Signals(children.signal_number).name
    return outcome


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
