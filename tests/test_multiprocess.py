"""A real 2-process CPU training run (torchrun, gloo): sharded training and evaluation that sees each clip once."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sceneevent import SceneEventModel
from sceneevent.arguments import DataArguments
from sceneevent.loader import BatchPlan, BatchReader, batch_loader
from sceneevent.metrics import lwlrap, macro_accuracy
from sceneevent.training import make_feature_extractor, prepare_data

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
    data = prepare_data(data_args, make_feature_extractor(data_args), need_events=True, seed=42)
    model = SceneEventModel.from_pretrained(run_dir).eval()
    scores = {}
    for split, column, key in ((data.scene_test, "scene", "scene"), (data.event_validation, "events", "event")):
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
    assert results["data"]["rows"]["scene_test"] == EVAL_CLIPS and results["data"]["rows"]["event_validation"] == EVAL_CLIPS
    # Only the main process reports: one `done:` line, not one per process.
    assert done.stdout.count("done: alpha=") == 1, done.stdout[-2000:]
    # The gathered evaluation equals a plain 1-process evaluation of the saved model on the same clips:
    # a missing or duplicated clip (e.g. padding in the gather) would change lwlrap.
    expected = single_process_scores(out)
    final = results["final"]
    assert final["asc_macro_accuracy"] == pytest.approx(expected["asc_macro_accuracy"], abs=1e-6)
    assert final["aet_lwlrap"] == pytest.approx(expected["aet_lwlrap"], abs=1e-5)
