"""The sweep files (W&B schema, grid sizes, the agent's command) and the local runner (resume, failures)."""

import importlib.util
import itertools
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from sceneevent.study import regularisation, sweeps
from tool_gate import tool_missing

ROOT = Path(__file__).resolve().parents[1]
SWEEP_DIR = ROOT / "sweeps"
SEEDS = [0, 1, 2, 3]
ALPHAS = sorted({round(0.1 * i, 2) for i in range(10)} | {round(0.9 + 0.01 * i, 2) for i in range(11)})
EXPECTED = {  # file -> (swept values other than seed, runs)
    "alpha": ({"alpha": ALPHAS}, 20 * 4),
    "strategy": ({"aet_dataset": [f"data/aet_subsets/k=35_hours=90_strategy_{s}" for s in ("random", "correlated", "uncorrelated")]}, 3 * 4),
    "hours": ({"aet_dataset": [f"data/aet_subsets/k=115_hours={t}_strategy_random" for t in (11, 22, 45, 90, 180, 360)]}, 6 * 4),
    "k": ({"aet_dataset": ["data/aet_subsets/k=2_hours=90_strategy_speech_music"]
           + [f"data/aet_subsets/k={k}_hours=90_strategy_random" for k in (5, 10, 20, 35, 70, 115)]}, 7 * 4),
    "pretrain_vs_joint": ({"mode": ["joint", "pretrain_finetune"]}, 2 * 4),
    "regularisers": ({"regularisers": ["none", "dropout", "drop_path", "weight_decay", "mixup", "specaugment", "all", "joint"]}, 8 * 4),
    "batch_composition": ({"asc_batch_size": [8, 16, 32, 64, 128, 256]}, 6 * 4),
    "alpha_hours": ({"aet_dataset": [f"data/aet_subsets/k=115_hours={t}_strategy_random" for t in (11, 22, 45, 90, 180, 360)],
                     "alpha": ALPHAS[1:]}, 19 * 6 * 4),
    "alpha_search": ({"alpha": ALPHAS[1:-1]}, 18),
    "tuned_control_search": ({}, 18),  # random: run_cap draws
}
SEARCHES = ("alpha_search", "tuned_control_search")  # on the search seed, for choosing on validation only
SEARCH_SEED = 100
GRIDS = sorted(name for name in EXPECTED if name != "tuned_control_search")


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_yaml(name: str) -> dict:
    return yaml.safe_load((SWEEP_DIR / f"{name}.yaml").read_text())


def test_every_sweep_file_is_covered():
    assert sorted(path.stem for path in SWEEP_DIR.glob("*.yaml")) == sorted(EXPECTED)
    assert len(ALPHAS) == 20 and ALPHAS[:2] == [0.0, 0.1] and ALPHAS[-3:] == [0.98, 0.99, 1.0]


# --- the YAML files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sweep_follows_the_documented_wandb_keys(name):
    config = read_yaml(name)
    assert sweeps.documented_key_violations(config) == []
    assert sweeps.schema_violations(config) == []
    assert config["method"] == ("random" if name == "tuned_control_search" else "grid")
    assert config["metric"] == {"name": "eval/asc_macro_accuracy", "goal": "maximize"}
    assert config["parameters"]["seed"] == ({"value": SEARCH_SEED} if name in SEARCHES else {"values": SEEDS})
    assert config["parameters"]["report_to"] == {"value": "wandb"}
    assert config["program"] in sweeps.MODE_PROGRAMS.values()
    assert config["command"][-2:] == ["${program}", "${args}"]


def wandb_sweeps():
    """W&B's `sweeps` package (wandb's sweep-config schema); skipped when missing, a failure under CI=true.

    Its metadata pins numpy < 2, so it cannot be a dev extra; installed without dependencies it works
    with numpy 2.4 (jsonschema and jsonref, which it needs, are dev extras). `import sweeps` can also
    find this repository's sweeps/ folder (a namespace package without the schema), hence the check.
    """
    try:
        package = importlib.import_module("sweeps")
    except ImportError:
        package = None
    if getattr(package, "schema_violations_from_proposed_config", None) is None:
        tool_missing("W&B's sweep schema (the `sweeps` package)", "pip install --no-deps -c constraints.txt sweeps (what .ci/run does)")
    return package


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sweep_passes_wandbs_own_schema(name):
    wandb_schema = wandb_sweeps()
    config = read_yaml(name)
    assert wandb_schema.schema_violations_from_proposed_config(config) == []
    assert sweeps.schema_violations(config) == []  # load_sweep's check, through W&B's schema now


def test_wandbs_schema_rejects_what_wandb_would_reject():
    wandb_schema = wandb_sweeps()
    from jsonschema.exceptions import ValidationError
    from sweeps.config.schema import fill_validate_schema

    misspelled = {**read_yaml("alpha"), "methd": "grid"}
    assert any("'methd' was unexpected" in v for v in wandb_schema.schema_violations_from_proposed_config(misspelled))
    assert any("'methd' was unexpected" in v for v in sweeps.schema_violations(misspelled))
    with pytest.raises(ValidationError, match="methd"):
        fill_validate_schema(misspelled)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"methd": "grid"}, "unknown top-level key 'methd'"),
        ({"method": "exhaustive"}, "method must be one of"),
        ({"metric": {"name": "eval/x", "goal": "max"}}, "metric.goal"),
        ({"parameters": {"seed": {"values": []}}}, "non-empty list"),
        ({"parameters": {"seed": {"values": [0, 0]}}}, "repeated entries"),
        ({"parameters": {"seed": {"vals": [0]}}}, "unknown key 'vals'"),
        ({"parameters": {"seed": {"distribution": "uniform", "min": 0, "max": 1}}}, "grid search needs"),
        ({"command": "accelerate launch"}, "command must be a list"),
    ],
)
def test_validator_reports_bad_configs(change, message):
    config = {**read_yaml("alpha"), **change}
    found = sweeps.documented_key_violations(config)
    assert any(message in violation for violation in found), found


def test_load_sweep_names_the_file_and_violation(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"method": "grid", "parameters": {"seed": {"values": []}}}))
    with pytest.raises(ValueError, match=r"(?s)bad\.yaml is not a valid W&B sweep.*seed"):
        sweeps.load_sweep(path)


# --- grid expansion -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GRIDS)
def test_grid_expands_to_every_combination(name, tmp_path):
    swept, count = EXPECTED[name]
    config = sweeps.load_sweep(SWEEP_DIR / f"{name}.yaml")
    runs = sweeps.plan_runs(config, name, tmp_path, launcher="accelerate", extra_args=["--max_train_steps", "2"])
    assert len(runs) == count
    assert len({run.output_dir for run in runs}) == count
    seeds = [SEARCH_SEED] if name in SEARCHES else SEEDS
    combos = {(*(run.parameters[factor] for factor in swept), run.parameters["seed"]) for run in runs}
    assert combos == set(itertools.product(*swept.values(), seeds))
    constants = {key: spec["value"] for key, spec in config["parameters"].items() if "value" in spec}
    for run in runs:
        assert run.command[:2] == ["accelerate", "launch"]
        assert run.output_dir.parent == tmp_path / name
        assert run.command[-3:] == [f"--output_dir={run.output_dir}", "--max_train_steps", "2"]
        assert f"--seed={run.parameters['seed']}" in run.command
        assert all(f"--{key}={value}" in run.command for key, value in constants.items())
        assert not any(arg.startswith(("--mode=", "--regularisers=")) for arg in run.command)
        expected_program = sweeps.MODE_PROGRAMS[run.parameters["mode"]] if "mode" in swept else "scripts/train_joint.py"
        assert run.command[2] == expected_program
        for factor in swept:
            if factor not in ("mode", "regularisers"):
                assert f"--{factor}={run.parameters[factor]}" in run.command


# The regulariser comparison's settings as flags, written out here (alpha 0 unless said).
OFF = {"dropout": "0.0", "drop_path_rate": "0.0", "weight_decay": "0.0", "mixup": "False", "specaugment": "False"}
ON = {"dropout": {"dropout": "0.2"}, "drop_path": {"drop_path_rate": "0.1"}, "weight_decay": {"weight_decay": "0.0001"},
      "mixup": {"mixup": "True", "mixup_alpha": "0.3"},
      "specaugment": {"specaugment": "True", "freq_mask_width": "8", "time_mask_width": "10"}}
ALL_ON = {flag: value for flags in ON.values() for flag, value in flags.items()}
SETTINGS = {"none": {**OFF, "alpha": "0"}, **{name: {**OFF, **flags, "alpha": "0"} for name, flags in ON.items()},
            "all": {**ALL_ON, "alpha": "0"}, "joint": {**ALL_ON, "alpha": "auto"}}


def test_regulariser_settings_pass_their_flags_and_joint_balances_alpha(tmp_path):
    runs = sweeps.plan_runs(sweeps.load_sweep(SWEEP_DIR / "regularisers.yaml"), "regularisers", tmp_path)
    for run in runs:
        flags = dict(arg[2:].split("=", 1) for arg in run.arguments if arg.startswith("--") and "=" in arg)
        setting = SETTINGS[run.parameters["regularisers"]]
        assert {flag: flags[flag] for flag in setting} == setting, run.name
        assert flags["asc_baseline"] == "outputs/sweeps/alpha/alpha=0.0_seed=0"
        assert flags["aet_baseline"] == "outputs/sweeps/alpha/alpha=1.0_seed=0"
    bad = {"program": "p.py", "method": "grid", "parameters": {"regularisers": {"values": ["none", "everything"]}}}
    with pytest.raises(ValueError, match="`regularisers` must be one of none, dropout"):
        sweeps.plan_runs(bad, "bad", tmp_path)
    clash = {"program": "p.py", "method": "grid", "parameters": {"regularisers": {"value": "none"}, "dropout": {"value": 0.5}}}
    with pytest.raises(ValueError, match="sets .*dropout.* which the sweep also gives"):
        sweeps.plan_runs(clash, "bad", tmp_path)


def test_random_search_draws_run_cap_settings_the_same_for_a_seed(tmp_path):
    config = sweeps.load_sweep(SWEEP_DIR / "tuned_control_search.yaml")
    assert config["run_cap"] == len(EXPECTED["alpha_search"][0]["alpha"]) == 18  # the same budget as the alpha search
    runs = sweeps.plan_runs(config, "search", tmp_path)
    again = sweeps.plan_runs(config, "search", tmp_path)
    other = sweeps.plan_runs(config, "search", tmp_path, random_seed=1)
    assert [run.name for run in runs] == [f"trial={i:02d}" for i in range(18)]
    assert [run.command for run in runs] == [run.command for run in again]
    assert [run.parameters for run in runs] != [run.parameters for run in other]
    specs = config["parameters"]
    # The mini study searches the same space (regularisation.SEARCH_SPACE).
    assert {name: specs[name] for name in regularisation.SEARCH_SPACE} == regularisation.SEARCH_SPACE
    for run in runs:
        drawn = run.parameters
        assert drawn["seed"] == SEARCH_SEED and drawn["alpha"] == 0
        for name in ("dropout", "drop_path_rate", "weight_decay", "mixup_alpha", "freq_mask_width", "time_mask_width"):
            assert specs[name]["min"] <= drawn[name] <= specs[name]["max"], name
        assert isinstance(drawn["freq_mask_width"], int) and drawn["mixup"] in (True, False)
    weight_decays = np.log10([run.parameters["weight_decay"] for run in runs])
    assert weight_decays.min() < -4 < weight_decays.max()  # log-uniform over 1e-6..1e-2: both sides of the middle
    assert len({run.parameters["mixup"] for run in runs}) == 2


@pytest.mark.parametrize(
    "parameters, error",
    [({"x": {"distribution": "normal", "mu": 0, "sigma": 1}}, "distribution 'normal' is not drawn by the local runner"),
     ({"x": {"values": [1, 2]}}, None)],
)
def test_random_search_names_what_it_cannot_draw(parameters, error, tmp_path):
    config = {"program": "p.py", "method": "random", "run_cap": 3, "parameters": parameters}
    if error is None:
        assert len(sweeps.plan_runs(config, "ok", tmp_path)) == 3
    else:
        with pytest.raises(ValueError, match=error):
            sweeps.plan_runs(config, "bad", tmp_path)
    uncapped = {key: value for key, value in config.items() if key != "run_cap"}
    assert any("needs `run_cap`" in found for found in sweeps.documented_key_violations(uncapped))


def test_alpha_runs_are_named_by_their_values(tmp_path):
    runs = sweeps.plan_runs(sweeps.load_sweep(SWEEP_DIR / "alpha.yaml"), "alpha", tmp_path, launcher="python")
    names = {run.name for run in runs}
    assert {"alpha=0.0_seed=0", "alpha=0.95_seed=3", "alpha=1.0_seed=2"} <= names
    assert runs[0].command[0] == sys.executable


# --- the W&B agent's command --------------------------------------------------------------------------


def agent_command(config: dict, parameters: dict) -> list[str]:
    """The command `wandb agent` builds: the macros of `command:` replaced as wandb_agent.Agent does it."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    values = create_sweep_command_args({"args": {key: {"value": value} for key, value in parameters.items()}})
    values.update(program=[config["program"]], interpreter=["python"], env=["/usr/bin/env"])
    command = []
    for chunk in config["command"]:
        command += values.get(chunk[2:-1], []) if chunk.startswith("${") and chunk.endswith("}") else [chunk]
    return command


@pytest.fixture
def fake_accelerate(tmp_path):
    """An `accelerate` on PATH that records its arguments, one per line."""
    record = tmp_path / "argv.txt"
    program = tmp_path / "bin" / "accelerate"
    program.parent.mkdir()
    program.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    program.chmod(program.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{program.parent}{os.pathsep}{os.environ['PATH']}", "WANDB_RUN_ID": "abc123"}
    return env, record


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_agent_runs_accelerate_launch_with_a_folder_per_run(name, fake_accelerate, tmp_path):
    env, record = fake_accelerate
    config = read_yaml(name)
    points = sweeps.expand_sweep(config)
    root = "outputs/search" if name in SEARCHES else "outputs/sweeps"
    local = sweeps.plan_runs(config, name, root, launcher="accelerate")
    for _, parameters in points[:2] + points[-1:] + ([points[-5]] if name == "regularisers" else []):  # and its `all`
        subprocess.run(agent_command(config, parameters), env=env, check=True, cwd=tmp_path)
        argv = record.read_text().splitlines()
        program = sweeps.program_for(config, parameters)
        assert argv[:2] == ["launch", program] and argv[-1] == f"--output_dir={root}/{name}/abc123"
        flags = dict(arg[2:].split("=", 1) for arg in argv[2:-1])
        passed = {key: str(value) for key, value in parameters.items() if key not in ("mode", "regularisers")}
        setting = SETTINGS[parameters["regularisers"]] if name == "regularisers" else {}
        assert len(flags) == len(argv) - 3 and flags.items() >= {**passed, **setting}.items()
        if not setting:
            assert argv[2:-1] == [f"--{key}={value}" for key, value in parameters.items() if key != "mode"]
        # The local runner launches the same program with the same flags (and its own folder), plus the
        # per-epoch checkpoints that let an interrupted local sweep resume.
        twin = next(run for run in local if run.parameters == parameters)
        checkpointing = [f"--{key}={value}" for key, value in sweeps.SWEEP_CHECKPOINTING.items()]
        assert twin.command[1:-1] == argv[:-1] + checkpointing


# --- the local runner ---------------------------------------------------------------------------------


FAKE_PROGRAM = """
import json, sys
from pathlib import Path
args = dict(arg[2:].split("=", 1) for arg in sys.argv[1:] if arg.startswith("--") and "=" in arg)
with open({counter!r}, "a") as handle:
    handle.write(" ".join(sys.argv[1:]) + "\\n")
print("training", args)
if args["alpha"] == "0.5":
    sys.exit(3)
Path(args["output_dir"]).mkdir(parents=True, exist_ok=True)
(Path(args["output_dir"]) / "results.json").write_text(json.dumps({{"alpha": float(args["alpha"]), "seed": int(args["seed"])}}))
"""


@pytest.fixture
def tiny_sweep(tmp_path):
    counter = tmp_path / "executions.txt"
    program = tmp_path / "fake_train.py"
    program.write_text(FAKE_PROGRAM.format(counter=str(counter)))
    config = {
        "name": "tiny", "program": str(program), "method": "grid",
        "metric": {"name": "eval/asc_macro_accuracy", "goal": "maximize"},
        "parameters": {"alpha": {"values": [0.1, 0.5, 0.9]}, "seed": {"values": [0, 1]}, "report_to": {"value": "none"}},
        "command": ["${env}", "${interpreter}", "${program}", "${args}"],
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, counter, tmp_path / "runs"


def executions(counter: Path) -> list[str]:
    return counter.read_text().splitlines() if counter.exists() else []


def test_runner_resumes_and_survives_a_failing_run(tiny_sweep, capsys):
    path, counter, root = tiny_sweep
    finished = root / "tiny" / "alpha=0.1_seed=0"
    finished.mkdir(parents=True)
    (finished / "results.json").write_text("{}")
    run_sweep = load_script("run_sweep")

    code = run_sweep.main([str(path), "--output_root", str(root), "--launcher", "python", "--parallel", "2",
                           "--extra_args", "--max_train_steps 2"])

    assert code == 1
    first = executions(counter)
    assert len(first) == 5  # 6 runs, 1 already finished
    assert all(line.endswith("--max_train_steps 2") for line in first)
    out = capsys.readouterr().out
    assert "3 run, 1 already finished, 2 failed" in out
    listed = sorted(line.split()[1] for line in out.splitlines() if line.startswith("  FAILED"))
    assert listed == [f"{root / 'tiny' / f'alpha=0.5_seed={seed}'}:" for seed in (0, 1)]
    for name in ("alpha=0.1_seed=1", "alpha=0.9_seed=0", "alpha=0.9_seed=1"):
        assert json.loads((root / "tiny" / name / "results.json").read_text())["alpha"] in (0.1, 0.9)
        assert "training" in (root / "tiny" / name / "train.log").read_text()
    assert (finished / "results.json").read_text() == "{}"  # not re-run
    assert "exit code 3" in out

    # Again, the same command: only the two failed runs are retried (without the same extra flags the finished
    # runs would not be this plan's, and the runner would refuse: test_sweep_runner.py).
    assert run_sweep.main([str(path), "--output_root", str(root), "--launcher", "python", "--extra_args", "--max_train_steps 2"]) == 1
    retried = executions(counter)[len(first):]
    assert len(retried) == 2 and all("--alpha=0.5" in line for line in retried)


def test_runner_dry_run_prints_commands_and_runs_nothing(tiny_sweep, capsys):
    path, counter, root = tiny_sweep
    assert load_script("run_sweep").main([str(path), "--output_root", str(root), "--launcher", "python", "--dry_run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    commands = [line for line in lines if not line.startswith("#")]  # the plan's notes are shell comments
    assert len(commands) == 6 and all("--output_dir=" in line for line in commands)
    assert "# plan: 6 runs, 0 finished, 6 to run on no GPU, 1 run(s) at a time" in lines
    assert not counter.exists() and not root.exists()


def test_runner_continues_a_run_that_has_checkpoints(tiny_sweep):
    path, _, root = tiny_sweep
    checkpoint = root / "tiny" / "alpha=0.9_seed=1" / "checkpoints" / "step_10"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")  # what makes a checkpoint complete
    runs = sweeps.plan_runs(sweeps.load_sweep(path), "tiny", root, launcher="python", extra_args=["--x", "1"])
    resumed = [run.name for run in runs if "--resume_from_checkpoint=latest" in run.command]
    assert resumed == ["alpha=0.9_seed=1"]


@pytest.mark.parametrize(
    "parameters, error",
    [
        ({"mode": {"values": ["joint", "finetune_only"]}}, "parameter `mode` must be one of"),
        ({"aet_dataset": {"values": ["a/k=2", "b/k=2"]}}, "would share the folder"),
    ],
)
def test_runner_rejects_ambiguous_sweeps(parameters, error, tmp_path):
    config = {"program": "scripts/train_joint.py", "method": "grid", "parameters": parameters}
    with pytest.raises(ValueError, match=error):
        sweeps.plan_runs(config, "bad", tmp_path)


def test_runner_needs_a_grid_or_a_capped_random_search(tmp_path):
    config = {"program": "p.py", "method": "bayes", "parameters": {"seed": {"values": [0]}}}
    with pytest.raises(ValueError, match="only `method: grid` and `method: random`"):
        sweeps.plan_runs(config, "bad", tmp_path)
    with pytest.raises(ValueError, match="needs `run_cap`"):
        sweeps.plan_runs({**config, "method": "random"}, "bad", tmp_path)
