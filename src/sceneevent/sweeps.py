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
  holds checkpoints but no results is continued with `--resume_from_checkpoint=latest`.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .checkpointing import RESULTS_FILE, checkpoint_dirs

LOG_FILE = "train.log"
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
    for swept, parameters in expand_grid(config):
        name = run_name(swept) or "run"
        if name in folders:
            raise ValueError(f"runs {folders[name]} and {swept} would share the folder {name!r}; make the values' last path parts differ")
        folders[name] = swept
        output_dir = Path(output_root) / sweep_name / name
        passed = {key: value for key, value in parameters.items() if key not in ("output_dir", MODE_PARAMETER)}
        command = [*launcher_prefix(launcher), program_for(config, parameters), *format_flags(passed), f"--output_dir={output_dir}"]
        if checkpoint_dirs(output_dir):
            command.append("--resume_from_checkpoint=latest")
        command += list(extra_args or [])  # last, so they override the sweep's values (argparse keeps the last)
        runs.append(SweepRun(name=name, parameters=parameters, output_dir=output_dir, command=command))
    return runs


def is_finished(run: SweepRun) -> bool:
    return (run.output_dir / RESULTS_FILE).is_file()


def execute(run: SweepRun, cwd: str | os.PathLike | None = None) -> str | None:
    """Run one command with its output in `<run dir>/train.log`; return None on success, else the reason."""
    run.output_dir.mkdir(parents=True, exist_ok=True)
    with open(run.output_dir / LOG_FILE, "a") as log:
        log.write(f"$ {shlex.join(run.command)}\n")
        log.flush()
        try:
            code = subprocess.run(run.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd).returncode
        except OSError as error:  # e.g. `accelerate` not on PATH
            return f"could not start {run.command[0]!r}: {error}"
    if code != 0:
        return f"exit code {code} (see {run.output_dir / LOG_FILE})"
    if not is_finished(run):
        return f"exit code 0 but no {RESULTS_FILE} in {run.output_dir}"
    return None


def run_sweep(runs: list[SweepRun], parallel: int = 1, cwd: str | os.PathLike | None = None, progress: bool = True) -> SweepOutcome:
    """Run the unfinished runs, `parallel` at a time; a failure is recorded and the others go on."""
    if parallel < 1:
        raise ValueError(f"--parallel must be at least 1, got {parallel}")
    from tqdm.auto import tqdm

    outcome, pending = SweepOutcome(), []
    for run in runs:
        (outcome.skipped if is_finished(run) else pending).append(run)
    with tqdm(total=len(runs), initial=len(outcome.skipped), desc="runs", unit="run", disable=not progress) as bar:
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            futures = {pool.submit(execute, run, cwd): run for run in pending}
            for future in as_completed(futures):
                run, error = futures[future], future.result()
                if error is None:
                    outcome.done.append(run)
                else:
                    outcome.failed.append((run, error))
                    bar.write(f"FAILED {run.name}: {error}")
                bar.set_postfix(failed=len(outcome.failed))
                bar.update()
    return outcome
