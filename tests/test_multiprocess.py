"""A real 2-process CPU training run (torchrun, gloo): sharded training and evaluation that sees each clip once."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sceneevent import SceneEventModel
from sceneevent.training.arguments import DataArguments
from sceneevent.data.loader import BatchPlan, BatchReader, batch_loader
from sceneevent.metrics import lwlrap, macro_accuracy
from sceneevent.training.preparation import make_feature_extractor, prepare_data

ROOT = Path(__file__).resolve().parents[1]
# 31 evaluation clips: shards of 16 and 15, so padding in the gather would duplicate a clip.
EVAL_CLIPS = 31
TINY = [
    "--encoder", "resnet10t", "--max_train_steps", "2", "--asc_batch_size", "8", "--aet_batch_size", "8",
    "--max_asc_train_samples", "64", "--max_aet_train_samples", "64", "--max_eval_samples", str(EVAL_CLIPS),
    "--eval_batch_size", "4", "--logging_steps", "1",
]

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is needed")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(output_dir: Path, processes: int = 2) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        # Two processes share the test machine's cores: one thread each, or they oversubscribe.
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        # No ACCELERATE_USE_CPU: train() itself asks Accelerate for the CPU (gloo) under a GPU-less torchrun.
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
               str(ROOT / "scripts" / "train_joint.py"), "--output_dir", str(output_dir), *TINY]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)


def single_process_scores(run_dir: Path) -> dict[str, float]:
    """Both metrics of the saved model on the same evaluation clips, in one process, without Accelerate."""
    data_args = DataArguments(max_asc_train_samples=64, max_aet_train_samples=64, max_eval_samples=EVAL_CLIPS)
    data = prepare_data(data_args, make_feature_extractor(data_args), need_events=True)
    model = SceneEventModel.from_pretrained(run_dir).eval()
    scores = {}
    for split, column, key in ((data.scene_test, "scene", "scene"), (data.event_test, "events", "event")):
        reader = BatchReader(split, column, len(data.scene_labels if key == "scene" else data.event_labels))
        logits, labels = [], []
        with torch.no_grad():
            for batch in batch_loader(reader, list(BatchPlan(len(reader), 8, seed=0).eval_batches())):
                logits.append(model(input_features=batch["input_features"])[f"{key}_logits"])
                labels.append(batch[f"{key}_labels"])
        logits, labels = torch.cat(logits).numpy(), torch.cat(labels).numpy()
        if key == "scene":
            scores["asc_macro_accuracy"] = macro_accuracy(labels, logits.argmax(axis=1))
        else:
            scores["aet_lwlrap"] = lwlrap(labels.astype(np.int8), logits)
    return scores


def test_two_process_cpu_run_shards_training_and_evaluates_every_clip_once(tmp_path):
    out = tmp_path / "run"
    done = torchrun(out)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    results = json.loads((out / "results.json").read_text())
    assert results["environment"]["num_processes"] == 2
    assert results["environment"]["device"].startswith("cpu")
    assert results["steps"] == 2
    assert results["data"]["rows"]["scene_test"] == EVAL_CLIPS and results["data"]["rows"]["event_test"] == EVAL_CLIPS
    # Only the main process reports: one `done:` line, not one per process.
    assert done.stdout.count("done: alpha=") == 1, done.stdout[-2000:]
    # The gathered evaluation equals a plain 1-process evaluation of the saved model on the same clips:
    # a missing or duplicated clip (e.g. padding in the gather) would change lwlrap.
    expected = single_process_scores(out)
    final = results["final"]
    assert final["asc_macro_accuracy"] == pytest.approx(expected["asc_macro_accuracy"], abs=1e-6)
    assert final["aet_lwlrap"] == pytest.approx(expected["aet_lwlrap"], abs=1e-5)


def _balancer_worker(rank: int, world_size: int, port: int, folder: str) -> None:
    """One of two gloo processes: rank-dependent losses, then the cross-process averaging under test."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size), "OMP_NUM_THREADS": "1"})
    from accelerate import Accelerator

    from sceneevent.training.balancing import LossBalancer
    from sceneevent.training.epoch_losses import EpochLossSums

    accelerator = Accelerator(cpu=True)
    balancer = LossBalancer("uncertainty")
    loss_asc, loss_aet = torch.tensor(1.0 + rank), torch.tensor(3.0 * (rank + 1))
    balancer(loss_asc, loss_aet).backward()
    balancer.average_gradients(accelerator)
    outputs = lambda step: type("Outputs", (), {"loss": torch.tensor(10.0 * rank + step), "loss_asc": None, "loss_aet": None})()  # noqa: E731
    sums = EpochLossSums("cpu")
    for step in range(4):  # per-process losses differ: rank 0 sees 0..3 and rank 1 sees 10..13
        sums.add(outputs(step))
    # the same epoch checkpointed after 2 steps and resumed (the checkpoint holds what the main process saw)
    interrupted = EpochLossSums("cpu")
    for step in range(2):
        interrupted.add(outputs(step))
    resumed = EpochLossSums("cpu", interrupted.to_json(accelerator))
    for step in range(2, 4):
        resumed.add(outputs(step))
    result = {"num_processes": accelerator.num_processes, "grad": balancer.log_vars.grad.tolist(),
              "means": sums.means(accelerator), "resumed_means": resumed.means(accelerator),
              "latest": sums.latest(outputs(3), accelerator)}
    Path(folder, f"rank{rank}.json").write_text(json.dumps(result))
    accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()


def test_balancer_weights_and_epoch_losses_are_averaged_over_processes(tmp_path):
    torch.multiprocessing.spawn(_balancer_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["num_processes"] for r in results] == [2, 2]
    # d/ds_i of exp(-s_i) L_i + s_i at s = 0 is 1 - L_i: rank 0 has L = (1, 3), rank 1 has L = (2, 6)
    expected = [np.mean([1 - 1.0, 1 - 2.0]), np.mean([1 - 3.0, 1 - 6.0])]
    for result in results:
        np.testing.assert_allclose(result["grad"], expected)  # the same on both: the weights stay in step
        assert result["means"] == result["resumed_means"] == {"train_loss": pytest.approx(np.mean([0, 1, 2, 3, 10, 11, 12, 13]))}
        assert result["latest"] == {"train/loss": pytest.approx(8.0)}  # (3 + 13) / 2 on both processes


# --- a frozen rank, a killed launcher (issue 28.8) -----------------------------------------------------

# Two ranks set up as a training run sets them up (make_accelerator), then: "freeze" stops rank 1 (SIGSTOP) while
# rank 0 waits at a barrier; "sleep" keeps both busy for a minute.
RANK_SCRIPT = """
import os, signal, sys, time
from pathlib import Path
from sceneevent.training.arguments import JointTrainingArguments
from sceneevent.training.launch import make_accelerator

timeout, action, folder = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
# Both ranks imported (seconds on a loaded machine): only now start the rendezvous, which the timeout also bounds.
(folder / f"ready{os.environ['RANK']}").touch()
while len(list(folder.glob("ready*"))) < 2:
    time.sleep(0.05)
accelerator = make_accelerator(JointTrainingArguments(output_dir=str(folder), distributed_timeout=timeout), folder)
# One write of the whole line: two ranks share the pipe, and print() writes the text and its newline apart.
os.write(1, f"rank {accelerator.process_index} pid {os.getpid()}\\n".encode())
if action == "freeze" and accelerator.process_index == 1:
    os.kill(os.getpid(), signal.SIGSTOP)
if action == "sleep":
    time.sleep(60)
accelerator.wait_for_everyone()
"""


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaps counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_a_frozen_rank_stops_the_other_after_the_timeout_with_a_message(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    port, ranks = free_port(), []
    for rank in (0, 1):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
        ranks.append(subprocess.Popen([sys.executable, str(script), "3", "freeze", str(tmp_path)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        _, stderr = ranks[0].communicate(timeout=60)  # before the fix: blocked for torch's default 30 minutes
    finally:
        for rank in ranks:
            rank.kill()
            rank.communicate()
    assert ranks[0].returncode != 0
    assert "rank 0 stopped: it waited --distributed_timeout 3 s for the other process(es) in torch.distributed.barrier" in stderr, stderr[-3000:]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_ranks_stop_when_their_torchrun_launcher_is_killed(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), str(script), "60", "sleep", str(tmp_path)]
    launcher = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    pids = []
    try:
        while len(pids) < 2:
            line = launcher.stdout.readline()
            assert line, f"the ranks ended before both said they started (pids so far: {pids}): {launcher.stderr.read()[-3000:]}"
            pids += [int(line.split()[-1])] if line.startswith("rank ") else []
        launcher.kill()
        launcher.wait()
        deadline = time.monotonic() + 15  # the ranks look for their launcher every second
        while any(map(_alive, pids)) and time.monotonic() < deadline:
            time.sleep(0.2)
        survivors = [pid for pid in pids if _alive(pid)]
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        launcher.kill()
    assert not survivors, "ranks kept running without their launcher"
    stderr = launcher.stderr.read()
    assert all(f"rank {rank} stopped: its launcher (torchrun, pid {launcher.pid}) is gone" in stderr for rank in (0, 1)), stderr[-3000:]
