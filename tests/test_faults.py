"""Runs that survive: kill and resume, bad audio, atomic writes, non-finite losses, secrets."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf

from sceneevent import LogMelFeatureExtractor
from sceneevent.data.audio import AUDIO_FEATURE
from sceneevent.data.feature_store import BadAudioError, FeatureStore
from sceneevent.io_utils import atomic_write_json, scrub_secrets
from sceneevent.training.loop import NonFiniteLossError

from test_feature_store import read_rows
from test_train_joint import ROOT, SMALL, in_process

RESUME_FLAGS = [
    "--asc_batch_size", "8", "--aet_batch_size", "8", "--max_asc_train_samples", "64", "--max_aet_train_samples", "48",
    "--max_eval_samples", "24", "--num_train_epochs", "2", "--checkpointing_steps", "3", "--encoder", "resnet10t",
    "--logging_steps", "1", "--seed", "7",
]


def launch(out: Path, *extra):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train_joint.py"), "--output_dir", str(out), *RESUME_FLAGS, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )


def test_sigkilled_run_resumes_to_the_same_final_metrics(tmp_path):
    straight = launch(tmp_path / "straight")
    out = straight.communicate(timeout=600)[0]
    assert straight.returncode == 0, out[-3000:]
    expected = json.loads((tmp_path / "straight" / "results.json").read_text())

    killed_dir = tmp_path / "killed"
    victim = launch(killed_dir)
    # 8 steps per epoch: step_9 is a mid-epoch checkpoint of epoch 2; kill as soon as it is complete
    deadline = time.time() + 600
    while not (killed_dir / "checkpoints" / "step_9" / "trainer_state.json").exists():
        assert victim.poll() is None, "run ended before the kill"
        assert time.time() < deadline
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (killed_dir / "results.json").exists()

    resumed = launch(killed_dir, "--resume_from_checkpoint", "latest")
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out[-3000:]
    assert "resumed from" in out
    got = json.loads((killed_dir / "results.json").read_text())
    assert got["steps"] == expected["steps"] == 16
    for key in ("asc_macro_accuracy", "aet_lwlrap", "loss_asc", "loss_aet", "best_epoch"):
        assert got["final"][key] == pytest.approx(expected["final"][key], rel=1e-5, abs=1e-6), key
    for a, b in zip(got["history"], expected["history"], strict=True):
        assert a.pop("loss_weights") == pytest.approx(b.pop("loss_weights"))
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)


def test_checkpoints_rotate_and_resume_refuses_other_labels(tmp_path):
    out = tmp_path / "run"
    in_process("--output_dir", str(out), *RESUME_FLAGS, "--save_total_limit", "2", "--num_train_epochs", "1",
               "--checkpointing_steps", "2")
    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert kept == ["step_6", "step_8"]  # steps 2 and 4 rotated out
    with pytest.raises(ValueError, match="alpha"):
        in_process("--output_dir", str(out), *RESUME_FLAGS, "--resume_from_checkpoint", "latest", "--alpha", "0.5")
    with pytest.raises(ValueError, match="no complete checkpoint"):
        in_process("--output_dir", str(tmp_path / "empty"), *RESUME_FLAGS, "--resume_from_checkpoint", "latest")


# --- bad audio ---------------------------------------------------------------------------------------


def write_wav(path: Path, data: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> str:
    sf.write(path, data, rate, subtype=subtype)
    return str(path)


@pytest.fixture
def audio_files(tmp_path):
    rng = np.random.default_rng(0)
    good = write_wav(tmp_path / "good.wav", rng.uniform(-0.5, 0.5, 16000))
    good_stereo_48k = write_wav(tmp_path / "stereo48k.wav", rng.uniform(-0.5, 0.5, (48000, 2)), rate=48000)
    silence = write_wav(tmp_path / "silence.wav", np.zeros(16000))
    very_short = write_wav(tmp_path / "short.wav", rng.uniform(-0.5, 0.5, 50))
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" + bytes(100))
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(Path(good).read_bytes()[:30])  # cut inside the header
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    wrong_format = tmp_path / "notes.wav"
    wrong_format.write_text("this is not audio\n")
    nan_data = rng.uniform(-0.5, 0.5, 16000).astype(np.float32)
    nan_data[100] = np.nan
    nan_file = write_wav(tmp_path / "nan.wav", nan_data, subtype="FLOAT")
    inf_data = nan_data.copy()
    inf_data[100] = np.inf
    inf_file = write_wav(tmp_path / "inf.wav", inf_data, subtype="FLOAT")
    no_samples = write_wav(tmp_path / "no_samples.wav", np.zeros(0))
    valid = [good, good_stereo_48k, silence, very_short]
    bad = [str(corrupt), str(truncated), str(empty), str(wrong_format), nan_file, inf_file, no_samples]
    return valid, bad


def as_dataset(paths):
    return datasets.Dataset.from_dict(
        {"audio": [{"bytes": None, "path": p} for p in paths], "scene": [0] * len(paths)},
        features=datasets.Features({"audio": AUDIO_FEATURE, "scene": datasets.ClassLabel(names=["a", "b"])}),
    )


EXTRACTOR = LogMelFeatureExtractor(num_mel_bins=16, sampling_rate=16000, clip_seconds=0.5, hop_length=160, n_fft=400)


def test_every_bad_file_is_listed_in_one_error(tmp_path, audio_files):
    valid, bad = audio_files
    with pytest.raises(BadAudioError) as caught:
        FeatureStore(tmp_path / "store", EXTRACTOR).store_split(as_dataset(valid + bad), split_name="scene_train")
    message = str(caught.value)
    assert f"{len(bad)} bad audio file(s) in scene_train:\n" in message
    lines = message.splitlines()
    for path in bad:  # each on a line of its own, with its reason
        (line,) = [line for line in lines if line.strip().startswith(f"{path}: ")]
        assert len(line.strip()) > len(f"{path}: "), line
    for path in valid:
        assert path not in message
    assert "--skip_bad_audio" in message


def test_skip_bad_audio_keeps_every_good_clip(tmp_path, audio_files):
    valid, bad = audio_files
    stored, dropped = FeatureStore(tmp_path / "store", EXTRACTOR).store_split(
        as_dataset(valid + bad), split_name="x", skip_bad_audio=True)
    assert len(stored) == len(valid) and len(dropped) == len(bad)
    assert stored.sources == valid  # every good clip, in order
    features = read_rows(stored).astype(np.float32)
    assert features.shape == (len(valid), 16, 51)
    assert np.isfinite(features).all()  # silence and very short clips give finite log-mels


def test_skip_bad_audio_in_a_run_is_counted_in_results(tmp_path, audio_files):
    valid, bad = audio_files
    source = datasets.DatasetDict({"train": as_dataset(valid * 4 + bad[:2]), "test": as_dataset(valid)})
    source.save_to_disk(tmp_path / "scenes")
    flags = ["--output_dir", str(tmp_path / "run"), "--asc_dataset", str(tmp_path / "scenes"), "--alpha", "0",
             "--asc_batch_size", "4", "--max_train_steps", "1", "--encoder", "resnet10t", "--sampling_rate", "16000",
             "--clip_seconds", "0.5", "--num_mel_bins", "16", "--asc_validation_split", "0",
             "--feature_store_dir", str(tmp_path / "store")]
    with pytest.raises(BadAudioError):
        in_process(*flags)
    results = in_process(*flags, "--skip_bad_audio", "--overwrite_output_dir")
    assert results["data"]["bad_audio"]["scene_train"] and len(results["data"]["bad_audio"]["scene_train"]) == 2
    assert results["data"]["rows"]["scene_train"] == 16


# --- writes, numbers, secrets --------------------------------------------------------------------------


def test_interrupted_results_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"final": {"asc_macro_accuracy": 0.5}})

    class Exploding:
        def item(self):
            raise KeyboardInterrupt("killed mid-write")

    with pytest.raises(KeyboardInterrupt):
        atomic_write_json(path, {"final": {"asc_macro_accuracy": 0.9, "value": Exploding()}})
    assert json.loads(path.read_text()) == {"final": {"asc_macro_accuracy": 0.5}}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    flags = ["--output_dir", str(out), *SMALL[2:], "--max_train_steps", "12", "--checkpointing_steps", "1",
             "--learning_rate", "1e30", "--warmup_ratio", "0", "--lr_scheduler_type", "constant", "--mixup", "false"]
    with pytest.raises(NonFiniteLossError, match=r"at step \d+|before step \d+") as caught:
        in_process(*flags)
    step = int(str(caught.value).split("step ")[1].split()[0].rstrip(";"))
    checkpoints = sorted(int(p.name.split("_")[1]) for p in (out / "checkpoints").glob("step_*"))
    assert checkpoints and max(checkpoints) < step
    assert not (out / "results.json").exists()


def test_secrets_never_reach_results(tmp_path, monkeypatch):
    token = "hf_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3"
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef0123456789abcdef01234567")
    results = in_process("--output_dir", str(tmp_path / "run"), "--run_name", f"leak-{token}", *SMALL)
    text = (tmp_path / "run" / "results.json").read_text()
    assert token not in text and "0123456789abcdef0123456789abcdef01234567" not in text
    assert results["config"]["run_name"] == "leak-***"
    assert scrub_secrets({"hub_token": "x", "nested": [{"api_key": "y"}], "ok": 1}) == {
        "hub_token": "***", "nested": [{"api_key": "***"}], "ok": 1}
