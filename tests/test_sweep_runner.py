"""The sweep runner under signals: Ctrl-C / SIGTERM stop it and every process of its runs, nothing more
starts, and a rerun finishes what was left (resuming from checkpoints) without ever a second writer.

The runs are a small fake trainer (real processes, in seconds): it writes a model, a checkpoint per epoch
when asked to, refuses a folder that holds a run unless told to resume or overwrite (as train_joint.py
does), and starts a "data worker" that ignores stop signals, like a stuck loader process.
"""

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sceneevent.study import sweep_runner, sweeps

RUN_SWEEP = Path(__file__).resolve().parents[1] / "scripts" / "run_sweep.py"

FAKE_TRAINER = r"""
import json, os, shutil, signal, sys, time
from pathlib import Path

args = {}
for arg in sys.argv[1:]:
    key, has_value, value = arg[2:].partition("=")
    args[key] = value if has_value else True
out = Path(args["output_dir"])
out.mkdir(parents=True, exist_ok=True)
if os.environ.get("FAKE_IGNORE_STOP"):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
worker = os.fork()  # forked, as DataLoader workers are
if worker == 0:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(300)
    os._exit(0)
with open(os.environ["FAKE_RECORD"], "a") as record:
    record.write(json.dumps({"run": out.name, "pid": os.getpid(), "pgid": os.getpgid(0), "worker": worker,
                             "argv": sys.argv[1:]}) + "\n")
checkpoints = out / "checkpoints"
holds_run = any((out / name).exists() for name in ("results.json", "checkpoints", "model.safetensors"))
if holds_run and not args.get("resume_from_checkpoint") and not args.get("overwrite_output_dir"):
    sys.exit(f"--output_dir {out} already holds a run")
start = 0
if args.get("resume_from_checkpoint"):
    start = max(int(path.name.split("_")[1]) for path in checkpoints.glob("step_*"))
elif args.get("overwrite_output_dir"):
    shutil.rmtree(checkpoints, ignore_errors=True)
epoch_seconds = [float(value) for value in os.environ["FAKE_EPOCH_SECONDS"].split(",")]
for epoch in range(start + 1, 4):
    (out / "model.safetensors").write_text(str(epoch))
    time.sleep(epoch_seconds[min(epoch, len(epoch_seconds)) - 1])
    if args.get("checkpointing_steps") == "epoch":
        (checkpoints / f"step_{epoch}").mkdir(parents=True, exist_ok=True)
        (checkpoints / f"step_{epoch}" / "trainer_state.json").write_text("{}")
(out / "results.json").write_text(json.dumps({"resumed_from": start}))
os.kill(worker, signal.SIGKILL)
os.waitpid(worker, 0)
"""


@pytest.fixture
def sweep(tmp_path):
    """A two-run sweep of the fake trainer; the processes it starts are all killed at teardown."""
    program = tmp_path / "fake_trainer.py"
    program.write_text(FAKE_TRAINER)
    config = {
        "program": str(program), "method": "grid",
        "metric": {"name": "eval/asc_macro_accuracy", "goal": "maximize"},
        "parameters": {"seed": {"values": [0, 1]}, "alpha": {"value": 0.5}},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    record = tmp_path / "starts.jsonl"
    yield path, record, tmp_path / "runs"
    for start in starts(record):
        end(start)


def starts(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def end(start: dict) -> None:
    """Kill a fake run's group, or its two processes where it shares this test's group (a runner without
    its own group for each run)."""
    if start["pgid"] != os.getpgrp():
        kill_group(start["pgid"])
        return
    for pid in (start["pid"], start["worker"]):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_group(group: int) -> None:
    assert group != os.getpgrp()
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass


def runner(sweep_file: Path, root: Path, record: Path, epoch_seconds: str, *flags: str, ignore_stop: bool = False):
    """`run_sweep.py` in a session of its own: a signal to its group is what a terminal's Ctrl-C sends."""
    env = {**os.environ, "FAKE_RECORD": str(record), "FAKE_EPOCH_SECONDS": epoch_seconds}
    if ignore_stop:
        env["FAKE_IGNORE_STOP"] = "1"
    return subprocess.Popen(
        [sys.executable, str(RUN_SWEEP), str(sweep_file), "--output_root", str(root), "--launcher", "python", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
    )


def rerun(sweep_file: Path, root: Path, record: Path, monkeypatch, capsys, *flags: str) -> tuple[int, str]:
    """The same command again, in this process (it starts faster), with quick epochs."""
    monkeypatch.setenv("FAKE_RECORD", str(record))
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "0")
    monkeypatch.delenv("FAKE_IGNORE_STOP", raising=False)
    spec = importlib.util.spec_from_file_location("run_sweep_script", RUN_SWEEP)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    capsys.readouterr()
    code = script.main([str(sweep_file), "--output_root", str(root), "--launcher", "python", *flags])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def wait_for(condition, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Running, not a zombie (a zombie has ended; only its exit status is left)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def group_alive(group: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == group and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def assert_all_gone(record: Path) -> None:
    for start in starts(record):
        assert not alive(start["pid"]) and not alive(start["worker"]), start
        assert group_alive(start["pgid"]) == [], start


def finish(process: subprocess.Popen, timeout: float = 60) -> tuple[int, str]:
    try:
        output = process.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        kill_group(process.pid)
        output = process.communicate()[0]
        pytest.fail(f"the runner did not end within {timeout} s:\n{output[-3000:]}")
    return process.returncode, output


pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")


def test_ctrl_c_stops_the_runner_and_every_process_of_its_run_and_a_rerun_resumes(sweep, monkeypatch, capsys):
    path, record, root = sweep
    first_run = root / "tiny" / "seed=0"
    # Epoch 1 takes 0.2 s, epoch 2 would take a minute: Ctrl-C arrives after the first checkpoint.
    process = runner(path, root, record, "0.2,60", "--stop_timeout", "1")
    wait_for(lambda: (first_run / "checkpoints" / "step_1" / "trainer_state.json").exists(), process)

    os.killpg(process.pid, signal.SIGINT)  # what the terminal does: the runner's group, not the run's
    code, output = finish(process, timeout=30)

    assert code == 128 + signal.SIGINT, output
    assert "interrupted by SIGINT: 1 run(s) stopped, 1 not started" in output
    assert f"INTERRUPTED {first_run}" in output
    assert [start["run"] for start in starts(record)] == ["seed=0"]  # no further run started
    assert_all_gone(record)  # the trainer and its worker (which ignores SIGINT) are gone
    assert not (first_run / "results.json").exists()

    code, output = rerun(path, root, record, monkeypatch, capsys)
    assert code == 0, output
    later = starts(record)[1:]
    assert sorted(start["run"] for start in later) == ["seed=0", "seed=1"]
    resumed = next(start for start in later if start["run"] == "seed=0")
    assert "--resume_from_checkpoint=latest" in resumed["argv"]
    assert json.loads((first_run / "results.json").read_text()) == {"resumed_from": 1}
    assert all("--checkpointing_steps=epoch" in start["argv"] for start in starts(record))
    assert_all_gone(record)


def test_sigterm_kills_a_run_that_ignores_it_and_a_rerun_starts_it_again(sweep, monkeypatch, capsys):
    path, record, root = sweep
    first_run = root / "tiny" / "seed=0"
    # The trainer ignores stop signals and is stopped before its first checkpoint (a model, no checkpoint).
    process = runner(path, root, record, "60", "--stop_timeout", "1", ignore_stop=True)
    wait_for(lambda: starts(record) and (first_run / "model.safetensors").exists(), process)

    process.send_signal(signal.SIGTERM)  # to the runner alone, as `kill PID` or a job scheduler does
    code, output = finish(process, timeout=30)

    assert code == 128 + signal.SIGTERM, output
    assert "interrupted by SIGTERM: 1 run(s) stopped, 1 not started" in output
    assert len(starts(record)) == 1
    assert_all_gone(record)  # killed after --stop_timeout, no orphan left writing

    code, output = rerun(path, root, record, monkeypatch, capsys)
    assert code == 0, output  # not "already holds a run"
    restarted = next(start for start in starts(record)[1:] if start["run"] == "seed=0")
    assert "--overwrite_output_dir" in restarted["argv"]
    assert json.loads((first_run / "results.json").read_text()) == {"resumed_from": 0}
    assert all((root / "tiny" / f"seed={seed}" / "results.json").exists() for seed in (0, 1))


def test_a_rerun_never_starts_a_second_writer_beside_runs_that_outlived_their_runner(sweep, monkeypatch, capsys):
    path, record, root = sweep
    process = runner(path, root, record, "60", "--parallel", "2")
    wait_for(lambda: len(starts(record)) == 2, process)
    process.send_signal(signal.SIGKILL)  # the one signal a runner cannot pass on: its runs go on, orphaned
    process.wait()
    orphans = starts(record)
    assert all(alive(start["pid"]) for start in orphans)

    code, output = rerun(path, root, record, monkeypatch, capsys, "--parallel", "2")

    assert code == 1, output
    assert "is in use by another run_sweep.py" in output and str(root / "tiny") in output
    assert starts(record) == orphans  # nothing started beside them
    assert all(alive(start["pid"]) for start in orphans)  # and they were left alone


def test_runs_checkpoint_every_epoch_unless_the_sweep_or_the_user_says_otherwise(tmp_path):
    config = {"program": "train.py", "method": "grid", "parameters": {"seed": {"values": [0, 1]}}}
    plain = sweeps.plan_runs(config, "s", tmp_path, launcher="python")[0].command
    assert "--checkpointing_steps=epoch" in plain and "--save_total_limit=1" in plain
    assert plain.index("--save_total_limit=1") < plain.index(f"--output_dir={tmp_path / 's' / 'seed=0'}")

    by_user = sweeps.plan_runs(config, "s", tmp_path, launcher="python",
                               extra_args=["--checkpointing_steps", "100", "--save_total_limit=3"])[0].command
    assert "--checkpointing_steps=epoch" not in by_user and "--save_total_limit=1" not in by_user
    config["parameters"]["checkpointing_steps"] = {"value": 50}
    by_sweep = sweeps.plan_runs(config, "s", tmp_path, launcher="python")[0].command
    assert [arg for arg in by_sweep if arg.startswith("--checkpointing_steps")] == ["--checkpointing_steps=50"]


def test_a_folder_left_before_its_first_checkpoint_is_started_again(tmp_path):
    config = {"program": "train.py", "method": "grid", "parameters": {"seed": {"values": [0, 1, 2]}}}
    left = tmp_path / "s" / "seed=0"
    (left / "checkpoints" / ".tmp_step_4").mkdir(parents=True)  # a checkpoint save that never completed
    (left / "model.safetensors").write_text("")
    only_log = tmp_path / "s" / "seed=1"
    only_log.mkdir()
    (only_log / sweeps.LOG_FILE).write_text("$ python train.py\n")  # stopped before it wrote anything
    commands = {run.name: run.command for run in sweeps.plan_runs(config, "s", tmp_path, launcher="python")}
    assert "--overwrite_output_dir" in commands["seed=0"] and "--resume_from_checkpoint=latest" not in commands["seed=0"]
    assert "--overwrite_output_dir" not in commands["seed=1"] and "--overwrite_output_dir" not in commands["seed=2"]


def test_a_finished_run_made_with_other_flags_is_not_taken_for_the_plans_own(sweep, monkeypatch):
    """A study resumed after its flags changed (a new scale, a new default) would silently mix old runs with new
    ones: the runner records each finished run's flags and refuses a plan that gives that folder other flags."""
    path, record, root = sweep
    monkeypatch.setenv("FAKE_RECORD", str(record))
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "0")
    config = sweeps.load_sweep(path)
    first = sweeps.plan_runs(config, "tiny", root, launcher="python")
    assert len(sweep_runner.run_sweep(first, progress=False).done) == 2
    again = sweeps.plan_runs(config, "tiny", root, launcher="python")  # the same plan: both kept, nothing runs
    assert len(sweep_runner.run_sweep(again, progress=False).skipped) == 2 and len(starts(record)) == 2
    changed = sweeps.plan_runs(config, "tiny", root, launcher="python", extra_args=["--learning_rate=0.003"])
    with pytest.raises(ValueError, match=r"2 finished run\(s\) were made with other flags .*seed=0 \(--learning_rate: "
                                         r"was \(not given\), now 0.003\)"):
        sweep_runner.run_sweep(changed, progress=False)
    assert len(starts(record)) == 2  # nothing started
    # Where and how a run writes is not what it measures: a plan may change those.
    moved = sweeps.plan_runs(config, "tiny", root, launcher="python", extra_args=["--save_total_limit=3", "--logging_steps=5"])
    assert len(sweep_runner.run_sweep(moved, progress=False).skipped) == 2


def test_a_run_from_before_the_record_is_checked_against_the_config_its_results_hold(tmp_path):
    """Runs made before the runner recorded flags (reports/mini's lr 0.01 runs) carry their resolved config in
    results.json: a plan whose flags name other values there must not take them for its own."""
    config = {"program": "train.py", "method": "grid", "parameters": {"seed": {"values": [0]}, "alpha": {"value": "auto"}}}
    flags = ["--learning_rate=0.003", "--mixup=false", "--encoder=test_resnet", "--logging_steps=5", "--not_in_config=1"]
    run, = sweeps.plan_runs(config, "s", tmp_path, launcher="python", extra_args=flags)
    run.output_dir.mkdir(parents=True)
    made_with = {"seed": 0, "alpha": 0.9147, "learning_rate": 0.01, "mixup": True, "encoder": "test_resnet", "logging_steps": 10}
    (run.output_dir / "results.json").write_text(json.dumps({"schema_version": 2, "config": made_with}))
    # alpha "auto" was resolved to a number and cannot be compared; logging_steps says how a run logs, not what it measures
    assert sweeps.changed_flags(run) == ["--learning_rate: was 0.01, now 0.003", "--mixup: was True, now false"]
    with pytest.raises(ValueError, match=r"1 finished run\(s\) were made with other flags .*--learning_rate: was 0.01, now 0.003"):
        sweep_runner.run_sweep([run], progress=False)
    same, = sweeps.plan_runs(config, "s", tmp_path, launcher="python",
                             extra_args=["--learning_rate=1e-2", "--mixup", "--encoder=test_resnet", "--logging_steps=5"])
    assert sweeps.changed_flags(same) == [] and len(sweep_runner.run_sweep([same], progress=False).skipped) == 1


def test_a_sweep_given_twice_is_refused_before_anything_runs(tmp_path):
    config = {"program": "train.py", "method": "grid", "parameters": {"seed": {"values": [0]}}}
    runs = sweeps.plan_runs(config, "s", tmp_path, launcher="python")
    with pytest.raises(ValueError, match="two runs .* would write into"):
        sweep_runner.run_sweep(runs + runs, parallel=2, progress=False)
    assert not (tmp_path / "s").exists()


# --- the plan's estimate against a real sweep ------------------------------------------------------------


def test_the_estimate_of_a_tiny_cpu_sweep_is_within_a_quarter_of_the_time_it_then_takes(tmp_path, capsys):
    """Two real runs of train_joint.py give the throughput and per-run overhead; the plan of the same sweep grown by
    two seeds estimates those two, which then run: the estimate must be within ±25 % of their measured wall time."""
    from test_train_joint import SMALL

    from sceneevent.training.arguments import DataArguments, JointTrainingArguments, ModelArguments, parse_args
    from sceneevent.training.preparation import make_feature_extractor, prepare_data

    store = tmp_path / "store"
    # One torch thread: on a shared 2-core machine a second busy process then slows a run far less.
    flags = [*SMALL, "--feature_store_dir", str(store), "--report_to", "none", "--num_cpu_threads", "1"]
    data_args = parse_args((ModelArguments, DataArguments, JointTrainingArguments), flags)[1]
    prepare_data(data_args, make_feature_extractor(data_args), need_events=True)  # built once, as a sweep's first run would
    program = Path(__file__).resolve().parents[1] / "scripts" / "train_joint.py"
    sweep_files = []
    for name, seeds in (("first", [0, 1]), ("grown", [0, 1, 2, 3])):
        path = tmp_path / name / "tiny.yaml"
        path.parent.mkdir()
        path.write_text(yaml.safe_dump({"program": str(program), "method": "grid", "parameters": {"seed": {"values": seeds}}}))
        sweep_files.append(path)
    script = importlib.util.module_from_spec(spec := importlib.util.spec_from_file_location("run_sweep_estimate", RUN_SWEEP))
    spec.loader.exec_module(script)
    common = ["--output_root", str(tmp_path / "runs"), "--launcher", "python", "--gpus", "none", "--extra_args", " ".join(flags)]

    assert script.main([str(sweep_files[0]), *common]) == 0, capsys.readouterr()
    capsys.readouterr()
    assert script.main([str(sweep_files[1]), *common, "--dry_run"]) == 0
    plan = capsys.readouterr().out
    assert "# plan: 4 runs, 2 finished, 2 to run on no GPU, 1 run(s) at a time" in plan
    assert "median train_steady_samples_per_second of 2 finished runs in the sweep folder" in plan
    assert "wall time as the runner measured it" in plan and "2 run(s) from --max_train_steps" in plan
    assert "log-mel store " + str(store) in plan and ": built" in plan

    assert script.main([str(sweep_files[1]), *common]) == 0
    report = capsys.readouterr().out
    line = next(line for line in report.splitlines() if line.startswith("estimate against measured"))
    print(line)
    estimated, measured = (float(value) for value in re.findall(r"([\d.]+) s (?:estimated|measured)", line))
    walls = {folder.name: round(json.loads((folder / sweeps.RUN_RECORD_FILE).read_text())["wall_seconds"], 1)
             for folder in sorted((tmp_path / "runs" / "tiny").iterdir()) if folder.is_dir()}
    print(f"{line}; each run's wall time: {walls}")
    assert abs(estimated / measured - 1) <= 0.25, f"{line}; each run's wall time: {walls}"
