"""GPU placement by the local sweep runner: every run on GPUs of its own (CUDA_VISIBLE_DEVICES), as many runs at
once as the GPUs hold, the next one starting as soon as one ends; `--gpus_per_run K` through
`accelerate launch --num_processes K --multi_gpu`; `--gpus` checked; `--dry_run` places every run.

The runs are a stand-in trainer that records the CUDA_VISIBLE_DEVICES and process count it was given and when it
ran. The runner only hands out GPU ids, so none of this needs a GPU: the machine's GPU count is patched.
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from sceneevent.study import sweep_runner, sweeps

ROOT = Path(__file__).resolve().parents[1]

STAND_IN = r"""
import json, os, sys, time
from pathlib import Path
args = dict(arg[2:].split("=", 1) for arg in sys.argv[1:] if arg.startswith("--") and "=" in arg)
out = Path(args["output_dir"])
out.mkdir(parents=True, exist_ok=True)
rank = int(os.environ.get("RANK", "0"))
started = time.time()
time.sleep(float(os.environ.get("STAND_IN_SECONDS", "1.5")))
(out / f"placement-{rank}.json").write_text(json.dumps({
    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "processes": int(os.environ.get("WORLD_SIZE", "1")),
    "rank": rank, "start": started, "end": time.time()}))
if rank == 0:
    (out / "results.json").write_text(json.dumps({"schema_version": 2, "seed": int(args["seed"])}))
"""


def load_run_sweep():
    spec = importlib.util.spec_from_file_location("run_sweep_placement", ROOT / "scripts" / "run_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def stand_in_sweep(tmp_path, monkeypatch):
    """A sweep of `seeds` grid points of the stand-in; the runner sees four GPUs (ids only)."""
    program = tmp_path / "stand_in.py"
    program.write_text(STAND_IN)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # this venv's accelerate
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    script = load_run_sweep()
    monkeypatch.setattr(script, "visible_gpu_count", lambda: 4)

    def make(seeds: int) -> Path:
        config = {"program": str(program), "method": "grid", "parameters": {"seed": {"values": list(range(seeds))}}}
        path = tmp_path / "placed.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    return script, make, tmp_path / "runs"


def placements(root: Path) -> dict[str, list[dict]]:
    """Per run, what each of its processes recorded."""
    return {run.name: [json.loads(path.read_text()) for path in sorted(run.glob("placement-*.json"))]
            for run in sorted((root / "placed").iterdir()) if run.is_dir()}


def overlap(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def test_four_gpus_run_four_runs_at_once_each_on_its_own_and_the_fifth_when_one_ends(stand_in_sweep, capsys):
    script, make, root = stand_in_sweep
    code = script.main([str(make(5)), "--output_root", str(root), "--launcher", "python", "--gpus", "0,1,2,3"])
    assert code == 0, capsys.readouterr()

    runs = sorted((records[0] for records in placements(root).values()), key=lambda record: record["start"])
    assert len(runs) == 5 and all(record["processes"] == 1 for record in runs)
    assert {record["cuda_visible_devices"] for record in runs} <= {"0", "1", "2", "3"}
    first, fifth = runs[:4], runs[4]
    assert max(record["start"] for record in first) < min(record["end"] for record in first)  # four at once
    assert sorted(record["cuda_visible_devices"] for record in first) == ["0", "1", "2", "3"]  # on four GPUs
    for a in runs:  # never two runs on one GPU
        for b in runs:
            if a is not b and a["cuda_visible_devices"] == b["cuda_visible_devices"]:
                assert not overlap(a, b), (a, b)
    freed = [record for record in first if record["end"] <= fifth["start"]]
    assert freed and fifth["cuda_visible_devices"] in {record["cuda_visible_devices"] for record in freed}
    assert fifth["start"] - min(record["end"] for record in first) < 5  # it started when a GPU came free
    record = json.loads((root / "placed" / "seed=0" / sweeps.RUN_RECORD_FILE).read_text())
    assert record["processes"] == 1 and record["cuda_visible_devices"] in {"0", "1", "2", "3"} and record["wall_seconds"] > 1


def test_two_gpus_per_run_start_accelerate_with_two_processes_on_disjoint_pairs(stand_in_sweep, capsys):
    script, make, root = stand_in_sweep
    code = script.main([str(make(3)), "--output_root", str(root), "--gpus", "0,1,2,3", "--gpus_per_run", "2"])
    output = capsys.readouterr()
    assert code == 0, output

    found = placements(root)
    assert all(len(records) == 2 for records in found.values()), found  # two processes in every run
    runs = []
    for name, records in found.items():
        assert {record["processes"] for record in records} == {2}
        assert len({record["cuda_visible_devices"] for record in records}) == 1  # both processes see the run's pair
        runs.append({"gpus": records[0]["cuda_visible_devices"], "start": min(r["start"] for r in records),
                     "end": max(r["end"] for r in records)})
        log = (root / "placed" / name / sweeps.LOG_FILE).read_text()
        assert "accelerate launch --main_process_port=" in log and "--num_processes 2 --multi_gpu" in log
    assert {run["gpus"] for run in runs} <= {"0,1", "2,3"}
    runs.sort(key=lambda run: run["start"])
    assert overlap(runs[0], runs[1]) and runs[0]["gpus"] != runs[1]["gpus"]  # two at once, on disjoint pairs
    assert runs[2]["start"] >= min(runs[0]["end"], runs[1]["end"])  # the third when a pair came free


def test_the_pool_never_hands_out_a_gpu_twice():
    pool, held, clashes = sweep_runner.GpuPool([0, 1, 2, 3, 4], per_run=2), set(), []
    lock = threading.Lock()

    def use():
        with pool.taken() as gpus:
            with lock:
                clashes.extend(gpu for gpu in gpus if gpu in held)
                held.update(gpus)
            time.sleep(0.01)
            with lock:
                held.difference_update(gpus)

    threads = [threading.Thread(target=use) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert pool.slots == 2 and clashes == [] and held == set()


@pytest.mark.parametrize("text, visible, message", [
    ("0,0,1", 4, "GPU 0 given twice"),
    ("0,-1", 4, "GPU ids are 0 or more"),
    ("0,1,2,3,4", 4, "shows GPUs 0-3 .* GPU 4 does not exist"),
    ("0", 0, "shows no GPU"),
    ("0,x", 4, "'x' is not a GPU id"),
])
def test_gpus_are_checked_with_errors_naming_the_flag(text, visible, message):
    with pytest.raises(ValueError, match=f"--gpus '{text}': .*{message}"):
        sweeps.parse_gpus(text, visible)


def test_gpus_default_to_every_visible_one_and_follow_an_inherited_cuda_visible_devices():
    assert sweeps.parse_gpus(None, 3) == [0, 1, 2] and sweeps.parse_gpus(None, 0) == []
    assert sweeps.parse_gpus("none", 2) == [] and sweeps.parse_gpus(" 3, 1 ", None) == [3, 1]
    assert sweeps.cuda_visible_devices([0, 1], inherited="") == "0,1"
    assert sweeps.cuda_visible_devices([1], inherited="4,6") == "6"  # the runner's GPU 1 is the machine's 6
    assert sweeps.cuda_visible_devices([0], inherited="GPU-aa11,GPU-bb22") == "GPU-aa11"


@pytest.mark.parametrize("flags, message", [
    (["--gpus", "0,1", "--gpus_per_run", "2", "--launcher", "python"], "--gpus_per_run 2 needs --launcher accelerate"),
    (["--gpus", "0", "--gpus_per_run", "2"], "--gpus_per_run 2 needs at least 2 GPUs"),
    (["--gpus", "none", "--gpus_per_run", "2"], "--gpus_per_run 2 needs GPUs"),
    (["--gpus", "1,1"], "--gpus '1,1': GPU 1 given twice"),
    (["--gpus", "0,1,2,3,4"], "GPU 4 does not exist"),
])
def test_the_script_refuses_bad_placements_before_anything_runs(stand_in_sweep, capsys, flags, message):
    script, make, root = stand_in_sweep
    assert script.main([str(make(2)), "--output_root", str(root), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not root.exists()


def test_dry_run_places_every_run_of_the_alpha_sweep_on_a_gpu_with_its_estimate(tmp_path, capsys):
    script = load_run_sweep()  # this machine's GPUs are not consulted: the plan may be for another machine
    assert script.main([str(ROOT / "sweeps" / "alpha.yaml"), "--output_root", str(tmp_path), "--dry_run", "--gpus", "0,1,2,3",
                        "--samples_per_second", "1000"]) == 0
    lines = capsys.readouterr().out.splitlines()
    runs = [line for line in lines if line.startswith("# alpha=")]
    assert len(runs) == 80 and all(" GPU " in line and "samples; ≈ " in line for line in runs)
    assert {line.split(": GPU ")[1][0] for line in runs} == {"0", "1", "2", "3"}
    commands = [line for line in lines if not line.startswith("#")]
    assert len(commands) == 80 and all(line.startswith("CUDA_VISIBLE_DEVICES=") for line in commands)
    assert all("accelerate launch --num_processes 1 scripts/train_joint.py" in line for line in commands)
    summary = "\n".join(lines)
    assert "# plan: 80 runs, 0 finished, 80 to run on GPUs 0,1,2,3, 1 per run, 4 run(s) at a time" in summary
    assert "GPU-hours, wall time" in summary and "# disk: 80 run folders" in summary
    assert "TUT-urban-acoustic-scenes-2018-development's documented size" in summary  # the data is not on this machine
    assert not tmp_path.joinpath("alpha").exists()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_ctrl_c_stops_placed_runs_and_a_rerun_resumes_them_on_the_gpus_again(tmp_path, monkeypatch, capsys):
    """Placement changes nothing of the stop and resume: the runs on GPUs 0 and 1 stop, the third never starts,
    and the rerun continues the two from their checkpoints."""
    from test_sweep_runner import FAKE_TRAINER, assert_all_gone, end, finish, starts, wait_for

    program, record, root = tmp_path / "fake_trainer.py", tmp_path / "starts.jsonl", tmp_path / "runs"
    program.write_text(FAKE_TRAINER)
    sweep = tmp_path / "placed.yaml"
    sweep.write_text(yaml.safe_dump({"program": str(program), "method": "grid", "parameters": {"seed": {"values": [0, 1, 2]}}}))
    flags = [str(sweep), "--output_root", str(root), "--launcher", "python", "--gpus", "0,1", "--stop_timeout", "1"]
    # The runner in a session of its own (a terminal's Ctrl-C reaches its group), seeing four GPUs.
    wrapper = ("import runpy, sys; from sceneevent.study import sweeps; sweeps.visible_gpu_count = lambda: 4; "
               f"sys.argv = {['run_sweep.py', *flags]!r}; runpy.run_path({str(ROOT / 'scripts' / 'run_sweep.py')!r}, run_name='__main__')")
    env = {**os.environ, "FAKE_RECORD": str(record), "FAKE_EPOCH_SECONDS": "0.2,60"}
    process = subprocess.Popen([sys.executable, "-c", wrapper], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env, start_new_session=True)
    try:
        first = [root / "placed" / f"seed={seed}" / "checkpoints" / "step_1" / "trainer_state.json" for seed in (0, 1)]
        wait_for(lambda: all(path.exists() for path in first), process)
        os.killpg(process.pid, signal.SIGINT)
        code, output = finish(process, timeout=30)
        assert code == 128 + signal.SIGINT, output
        assert "interrupted by SIGINT: 2 run(s) stopped, 1 not started" in output
        assert sorted(start["run"] for start in starts(record)) == ["seed=0", "seed=1"]
        assert_all_gone(record)
        logs = {seed: (root / "placed" / f"seed={seed}" / sweeps.LOG_FILE).read_text() for seed in (0, 1)}
        assert {log.split("CUDA_VISIBLE_DEVICES=")[1][0] for log in logs.values()} == {"0", "1"}

        monkeypatch.setenv("FAKE_RECORD", str(record))
        monkeypatch.setenv("FAKE_EPOCH_SECONDS", "0")
        script = load_run_sweep()
        monkeypatch.setattr(script, "visible_gpu_count", lambda: 4)
        assert script.main(flags) == 0, capsys.readouterr()
        later = {start["run"]: start["argv"] for start in starts(record)[2:]}
        assert sorted(later) == ["seed=0", "seed=1", "seed=2"]
        assert all("--resume_from_checkpoint=latest" in later[f"seed={seed}"] for seed in (0, 1))
        assert all((root / "placed" / f"seed={seed}" / "results.json").exists() for seed in (0, 1, 2))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        for start in starts(record):
            end(start)
