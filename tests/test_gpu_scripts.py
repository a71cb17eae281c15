"""The scripts a session with a GPU runs (`benchmarks/gpu_issue13.sh`, `check_gpu_batches.py`, `bench_step.py`) still
run: device time is scarce, so they must not first fail on a typo. On the CPU the batch check compares the loader's
host batches (0, 1 and 2 reader threads, training and evaluation) with a plain read; the CUDA races it provokes
need a GPU."""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_script_parses():
    done = subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_issue13.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_gpu_batch_check_runs_on_the_cpu():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "check_gpu_batches.py"), "--device", "cpu",
                           "--num_mel_bins", "16", "--frames", "21", "--num_rows", "128"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == [f"{threads} reader threads on cpu" for threads in (0, 1, 2)]
    for line in lines[:3]:
        report = line.split("host's: ")[1]
        # both copy paths and the evaluation pass are checked, and every check found no differing tensor
        assert all(path in report for path in ("training_stream", "side_stream", "evaluation")), line
        assert re.findall(r"\d+", report) == ["0"] * 4, line
    assert lines[-1] == "identical"


def test_the_step_benchmark_runs_on_the_cpu(tmp_path):
    # As gpu_issue13.sh runs it (bf16 through the joint arm's Accelerator), at a tiny shape.
    output = tmp_path / "step.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_step.py"), "--mode", "arms", "--device", "cpu",
                           "--num_mel_bins", "16", "--frames", "21", "--asc_batch_size", "4", "--aet_batch_size", "8",
                           "--encoder", "resnet10t", "--precision", "bf16", "--channels_last", "--arms", "joint,noaug,bare",
                           "--rounds", "1", "--steps", "1", "--warmup", "1", "--output", str(output)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(output.read_text())
    assert set(figures["samples_per_second"]) == {"joint", "noaug", "bare"}
    assert figures["ratio_joint_over_bare"]["median"] > 0  # what the script's summary reads
