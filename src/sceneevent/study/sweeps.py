"""W&B sweep files (`sweeps/*.yaml`) for a local run, without a W&B server: read and checked against W&B's
schema, expanded into runs, each with its folder and command, and the GPU ids they may use (`--gpus`, a run's
CUDA_VISIBLE_DEVICES). `sweep_runner` runs them.

The same YAML serves `wandb sweep` + `wandb agent` and this runner. Here the grid is expanded the way
W&B's grid search does it (every combination of the `values` lists; `value` entries are constants),
each run gets its own folder `ROOT/<sweep>/<p1>=<v1>_<p2>=<v2>...` (swept parameters only), and the
flags are formatted the way the W&B agent formats `${args}` (`--name=value`).

Conventions shared with the YAML files:
- `output_dir` in `parameters` is ignored: the runner chooses every run's folder.
- A `mode` parameter picks the program (`MODE_PROGRAMS`) and is not passed on; this is how one sweep
  compares `scripts/pretrain_finetune.py` with `scripts/train_joint.py` (W&B allows one program).
- A preset parameter (`PRESET_PARAMETERS`, e.g. `regularisers`) names a setting of several flags at once (a W&B
  grid crosses independent parameters only): its flags are passed instead of it, as the sweep's `sh` command
  does for the W&B agent.
- `method: random` draws `run_cap` runs here from a seeded generator (`--random_seed`), so the same command draws
  the same settings and resumes them; each run is named `trial=NN`. (W&B draws its own on its server.)
- A run whose folder already holds `results.json` is finished and skipped (resume); a run whose folder
  holds checkpoints but no results is continued with `--resume_from_checkpoint=latest`; a folder left
  before its first checkpoint is started again with `--overwrite_output_dir`. Runs checkpoint every
  epoch (`SWEEP_CHECKPOINTING`) unless the sweep or the extra flags say otherwise.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..training.arguments import BoundedYamlLoader
from ..training.checkpointing import LOCK_FILE, checkpoint_dirs
from ..training.results import RESULTS_FILE, has_results
from .regularisation import REGULARISER_PRESETS
from .run_readings import OUTPUT_FIELDS

LOG_FILE = "train.log"
RUN_RECORD_FILE = "sweep_run.json"  # the runner's own timing of a finished run (its wall time, GPUs, processes)
RUNNER_FILES = {LOG_FILE, LOCK_FILE, RUN_RECORD_FILE}  # what a run folder may hold and still count as never started
SWEEP_CHECKPOINTING = {"checkpointing_steps": "epoch", "save_total_limit": 1}
MODE_PARAMETER = "mode"
MODE_PROGRAMS = {"joint": "scripts/train_joint.py", "pretrain_finetune": "scripts/pretrain_finetune.py"}
LAUNCHERS = ("accelerate", "python")
PRESET_PARAMETERS = {"regularisers": REGULARISER_PRESETS}  # parameter -> {value: the flags it stands for}
TRIAL = "trial"  # the name part of a random search's runs: trial=00, trial=01, ...
# What the local runner draws for `method: random`; W&B has more (normal, beta, ...), which it refuses here by name.
LOCAL_DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "uniform", "q_uniform", "log_uniform_values")

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
    program: str = ""  # the script the command runs
    processes: int = 1  # processes (GPUs) the launcher starts for it: `accelerate launch --num_processes`

    @property
    def arguments(self) -> list[str]:
        """The flags the program gets (everything after it in the command)."""
        return self.command[self.command.index(self.program) + 1:] if self.program in self.command else []


def load_sweep(path: str | os.PathLike) -> dict:
    """Read a sweep YAML; raise ValueError naming the file and every schema violation."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"sweep file {path}: no such file")
    try:
        with open(path, encoding="utf-8") as handle:
            config = yaml.load(handle, Loader=BoundedYamlLoader)  # an alias bomb would expand into the run grid
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"sweep file {path}: not valid UTF-8 YAML ({error})") from None
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
    return list(schema_violations_from_proposed_config(config)) + _grid_violations(config) + _random_violations(config)


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
    return found + _grid_violations(config) + _random_violations(config)


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


def _random_violations(config: dict) -> list[str]:
    """A random search here needs a `run_cap` (how many runs to draw: the search's budget)."""
    if config.get("method") != "random" or "run_cap" in config:
        return []
    return ["a `method: random` sweep needs `run_cap` (the number of runs it draws: the search's budget)"]


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


def expand_sweep(config: dict, random_seed: int = 0) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The runs of a grid (`expand_grid`) or of a random search: `run_cap` draws from a generator seeded with
    `random_seed`, each named by its trial number. Returns (name parts, all parameters) pairs."""
    if config.get("method") == "grid":
        return expand_grid(config)
    if config.get("method") != "random":
        raise ValueError(f"only `method: grid` and `method: random` sweeps can be run locally, got method {config.get('method')!r}")
    cap = config.get("run_cap")
    if not isinstance(cap, int) or cap < 1:
        raise ValueError(f"a `method: random` sweep needs `run_cap` (a positive number of runs), got {cap!r}")
    rng = np.random.default_rng(random_seed)
    width = len(str(cap - 1))
    return [({TRIAL: f"{trial:0{width}d}"}, {name: draw(name, spec, rng) for name, spec in config["parameters"].items()})
            for trial in range(cap)]


def draw(name: str, spec: dict, rng: np.random.Generator) -> Any:
    """One value of parameter `name` as W&B's random search draws it (floats kept to 4 significant digits)."""
    if "value" in spec:
        return spec["value"]
    distribution = spec.get("distribution", "categorical" if "values" in spec else None)
    if distribution not in LOCAL_DISTRIBUTIONS:
        raise ValueError(f"parameter {name!r}: distribution {distribution!r} is not drawn by the local runner "
                         f"(one of {', '.join(LOCAL_DISTRIBUTIONS)}; W&B itself draws the others)")
    if distribution == "constant":
        return spec["value"]
    if distribution == "categorical":
        values = spec["values"]
        return values[int(rng.choice(len(values), p=spec.get("probabilities")))]
    low, high = spec["min"], spec["max"]
    if distribution == "int_uniform":
        return int(rng.integers(low, high + 1))
    if distribution == "log_uniform_values":
        value = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    else:
        value = float(rng.uniform(low, high))
    if distribution == "q_uniform":
        q = spec.get("q", 1.0)
        return round(round(value / q) * q, 10)
    return float(f"{value:.4g}")


def preset_flags(parameters: dict[str, Any]) -> dict[str, Any]:
    """`parameters` with each preset parameter replaced by the flags its value stands for (in its place)."""
    flags = {}
    for name, value in parameters.items():
        if name not in PRESET_PARAMETERS:
            flags[name] = value
            continue
        presets = PRESET_PARAMETERS[name]
        if value not in presets:
            raise ValueError(f"parameter `{name}` must be one of {', '.join(presets)}, got {value!r}")
        clash = sorted(set(presets[value]) & (set(parameters) - {name}))
        if clash:
            raise ValueError(f"parameter `{name}`={value} sets {', '.join(clash)}, which the sweep also gives: give it in one place")
        flags.update(presets[value])
    return flags


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


def launcher_prefix(launcher: str, processes: int | None = None) -> list[str]:
    """The launcher's part of a run's command. `processes` (the GPUs a run gets) is passed on as
    `--num_processes` (with `--multi_gpu` above one), so that no machine-wide `accelerate config` decides it;
    None leaves it to that config, as `wandb agent` does."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"--launcher must be one of {LAUNCHERS}, got {launcher!r}")
    if processes is not None and processes < 1:
        raise ValueError(f"--gpus_per_run must be at least 1, got {processes}")
    if launcher == "python":
        if processes is not None and processes > 1:
            raise ValueError(f"--gpus_per_run {processes} needs --launcher accelerate (python starts one process)")
        return [sys.executable]
    if processes is None:
        return ["accelerate", "launch"]
    return ["accelerate", "launch", "--num_processes", str(processes), *(["--multi_gpu"] if processes > 1 else [])]


def plan_runs(
    config: dict, sweep_name: str, output_root: str | os.PathLike, launcher: str = "accelerate", extra_args: list[str] | None = None,
    processes_per_run: int | None = None, random_seed: int = 0,
) -> list[SweepRun]:
    """One SweepRun per grid point (or random draw, seeded with `random_seed`), each with its own output folder
    and full command; `processes_per_run` (the GPUs of each run, when the runner places runs on GPUs) goes to the
    launcher."""
    runs, folders = [], {}
    extra_args = list(extra_args or [])
    for swept, parameters in expand_sweep(config, random_seed):
        name = run_name(swept) or "run"
        if name in folders:
            raise ValueError(f"runs {folders[name]} and {swept} would share the folder {name!r}; make the values' last path parts differ")
        folders[name] = swept
        output_dir = Path(output_root) / sweep_name / name
        passed = preset_flags({key: value for key, value in parameters.items() if key not in ("output_dir", MODE_PARAMETER)})
        program = program_for(config, parameters)
        command = [
            *launcher_prefix(launcher, processes_per_run), program, *format_flags(passed),
            *checkpointing_flags(passed, extra_args), *continuation_flags(output_dir), f"--output_dir={output_dir}",
            *extra_args,  # last, so they override the sweep's values (argparse keeps the last)
        ]
        runs.append(SweepRun(name=name, parameters=parameters, output_dir=output_dir, command=command, program=program,
                             processes=processes_per_run or 1))
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
    if has_results(output_dir):  # finished: skipped, never run again
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
    return has_results(run.output_dir)


def changed_flags(run: SweepRun) -> list[str]:
    """For a finished run, each flag the plan now gives otherwise than the run was made with, as "--name: was X,
    now Y"; [] when they agree. A plan whose flags changed (a new scale, a new default) must not take an old run
    for one of its own; flags that say where a run writes, not what it measures (`run_readings.OUTPUT_FIELDS`, as
    run identity has them), may change.

    What the run was made with: the flags its runner recorded (`RUN_RECORD_FILE`); for runs from before that
    record, the resolved config in its results.json, for the flags found there whose text can be read as the
    config's value (`--alpha auto` resolved to a number cannot, and is not compared)."""
    now = _flag_values(run.arguments)
    recorded = _read_json(run.output_dir / RUN_RECORD_FILE).get("arguments")
    if isinstance(recorded, list):
        was = _flag_values(recorded)
        return [f"--{name}: was {was.get(name, '(not given)')}, now {now.get(name, '(not given)')}"
                for name in sorted((set(was) | set(now)) - OUTPUT_FIELDS) if was.get(name) != now.get(name)]
    config = _read_json(run.output_dir / RESULTS_FILE).get("config")
    if not isinstance(config, dict):
        return []
    return [f"--{name}: was {config[name]}, now {text}" for name, text in sorted(now.items())
            if name not in OUTPUT_FIELDS and name in config and _names_other_value(text, config[name])]


def _read_json(path: Path) -> dict:
    """The JSON object in `path`, or {} where there is none (no file, not JSON, not an object)."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return payload if isinstance(payload, dict) else {}


def _names_other_value(text: str, value: Any) -> bool:
    """Whether flag text `text` names another value than a resolved config's `value`; False where it cannot be
    read as that value's type."""
    if isinstance(value, bool):  # before int: a bool is an int
        words = {"true": True, "1": True, "yes": True, "": True, "false": False, "0": False, "no": False}
        return text.lower() in words and words[text.lower()] != value
    if isinstance(value, (int, float)):
        try:
            return float(text) != float(value)
        except ValueError:
            return False
    return isinstance(value, str) and text != value


def _flag_values(arguments: list[str]) -> dict[str, str]:
    """["--a=1", "--b", "2", "--c"] -> {"a": "1", "b": "2", "c": ""} (the last of a repeated flag wins, as argparse's)."""
    values, pending = {}, None
    for token in arguments:
        if token.startswith("--"):
            name, has_value, value = token[2:].partition("=")
            values[name], pending = value, (None if has_value else name)
        elif pending is not None:
            values[pending], pending = token, None
    return values


# --- GPUs ----------------------------------------------------------------------------------------------


def visible_gpu_count() -> int:
    """The GPUs this process sees (torch's count, which follows an inherited CUDA_VISIBLE_DEVICES)."""
    import torch

    return torch.cuda.device_count()


def parse_gpus(text: str | None, visible: int | None) -> list[int]:
    """`--gpus`: "0,1,2,3" → [0, 1, 2, 3]; None → every visible GPU; "none" or "" → none (runs as `--parallel`).

    Ids index the GPUs this process sees. `visible` None skips the check against them (a plan for another machine)."""
    if text is None:
        return list(range(visible or 0))
    if text.strip().lower() in ("", "none"):
        return []
    gpus = []
    for part in text.split(","):
        try:
            gpus.append(int(part.strip()))
        except ValueError:
            raise ValueError(f"--gpus {text!r}: {part.strip()!r} is not a GPU id (give ids like 0,1,2,3, or none)") from None
    if any(gpu < 0 for gpu in gpus):
        raise ValueError(f"--gpus {text!r}: GPU ids are 0 or more, got {min(gpus)}")
    repeated = sorted({gpu for gpu in gpus if gpus.count(gpu) > 1})
    if repeated:
        raise ValueError(f"--gpus {text!r}: GPU {', '.join(map(str, repeated))} given twice (two runs would share it)")
    if visible is not None and max(gpus) >= visible:
        seen = f"GPUs 0-{visible - 1}" if visible else "no GPU"
        raise ValueError(f"--gpus {text!r}: this machine shows {seen} (CUDA_VISIBLE_DEVICES="
                         f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')!r}), so GPU {max(gpus)} does not exist")
    return gpus


def cuda_visible_devices(gpus: Sequence[int], inherited: str | None = None) -> str:
    """A run's CUDA_VISIBLE_DEVICES for `gpus` (ids among the GPUs the runner sees): the runner's own
    CUDA_VISIBLE_DEVICES entries at those positions when it has one (`inherited`, default the environment's),
    else the ids themselves."""
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES", "") if inherited is None else inherited
    entries = [entry.strip() for entry in inherited.split(",") if entry.strip()]
    return ",".join(entries[gpu] if gpu < len(entries) else str(gpu) for gpu in gpus)
