"""Issue 12: odd and absurd sampling rates, streamed reading, file modes and secret scrubbing."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf
import torch

from sceneevent import LogMelFeatureExtractor
from sceneevent.data.audio import AudioDecodeError, StreamingResampler, load_audio
from sceneevent.data.feature_store import FeatureStore
from sceneevent.models.feature_extraction_sceneevent import MAX_KERNEL_TAPS, resample, resampler, resampling_ratio
from sceneevent.io_utils import atomic_write_text, replace_files_from, scrub_secrets

REPO_ROOT = Path(__file__).resolve().parents[1]


def tone(seconds: float, rate: int, frequency: float = 1000.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def write_wav_claiming_rate(path: Path, claimed_rate: int, samples: int = 1600) -> Path:
    """A valid 16-bit WAV whose header says `claimed_rate` (libsndfile writes any rate)."""
    sf.write(path, np.zeros(samples, dtype=np.float32), claimed_rate, subtype="PCM_16")
    return path


# ---------------------------------------------------------------------------------------------- fault 8


# Run in a child with a 6 GiB address-space cap: before the fix, 44,101 -> 32,000 Hz built a
# 1.4 G-tap float64 kernel (11 GB) and died here; now the kernel has at most MAX_KERNEL_TAPS taps.
BOUNDED_RESAMPLE = textwrap.dedent(
    """
    import importlib.util, resource, sys
    cap = 6 * 2**30
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import numpy as np
    # The extractor's own file (as the Hub ships it): no need to import the whole package.
    spec = importlib.util.spec_from_file_location("extractor", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    LogMelFeatureExtractor = module.LogMelFeatureExtractor
    rate = 44101
    clip = np.sin(2 * np.pi * 1000 * np.arange(2 * rate) / rate).astype(np.float32)
    features = LogMelFeatureExtractor(sampling_rate=32000, clip_seconds=2.0)(clip, sampling_rate=rate, return_tensors="np")
    print(features["input_features"].shape)
    """
)


def test_coprime_rate_resamples_within_a_memory_cap():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    extractor_file = REPO_ROOT / "src" / "sceneevent" / "models" / "feature_extraction_sceneevent.py"
    done = subprocess.run([sys.executable, "-c", BOUNDED_RESAMPLE, str(extractor_file)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("(1, 128, 201)")


@pytest.mark.parametrize("orig_rate", [44101, 47969, 1000, 384000, 333_337])
def test_resampling_ratio_is_close_and_its_kernel_small(orig_rate: int):
    orig, new = resampling_ratio(orig_rate, 32000)
    assert abs((new / orig) / (32000 / orig_rate) - 1) < 6e-4
    assert resampler(orig_rate, 32000).kernel.numel() <= MAX_KERNEL_TAPS


def test_common_rates_keep_their_exact_ratio():
    assert resampling_ratio(44100, 32000) == (441, 320)
    assert resampling_ratio(48000, 16000) == (3, 1)
    assert resampling_ratio(8000, 44100) == (80, 441)


def test_odd_rate_keeps_a_tone_in_place():
    extractor = LogMelFeatureExtractor(num_mel_bins=64, sampling_rate=16000, clip_seconds=1.0, hop_length=160, n_fft=512)
    peaks = [int(extractor(tone(1.0, rate), sampling_rate=rate, return_tensors="np")["input_features"][0].mean(axis=1).argmax())
             for rate in (16000, 44101)]
    assert abs(peaks[0] - peaks[1]) <= 1


@pytest.mark.parametrize("claimed_rate", [1_000_003, 999])
def test_absurd_rate_is_bad_audio_named_by_file(tmp_path: Path, claimed_rate: int):
    path = write_wav_claiming_rate(tmp_path / f"header_{claimed_rate}.wav", claimed_rate)
    with pytest.raises(AudioDecodeError, match=rf"header_{claimed_rate}\.wav: sampling rate {claimed_rate} Hz"):
        load_audio(path)


def test_cache_build_skips_an_absurd_rate_and_names_it(tmp_path: Path):
    good = tmp_path / "good.wav"
    sf.write(good, tone(0.5, 16000), 16000)
    bad = write_wav_claiming_rate(tmp_path / "claims_1MHz.wav", 1_000_003)
    rows = datasets.Dataset.from_dict({"audio": [{"bytes": None, "path": str(good)}, {"bytes": None, "path": str(bad)}],
                                       "scene": [0, 1]})
    extractor = LogMelFeatureExtractor(num_mel_bins=16, sampling_rate=8000, clip_seconds=0.5, hop_length=80, n_fft=256)
    cached, dropped = FeatureStore(tmp_path / "store", extractor).store_split(rows, split_name="odd_rates", skip_bad_audio=True)
    assert len(cached) == 1 and cached.dataset[0]["scene"] == 0
    assert len(dropped) == 1 and "claims_1MHz.wav" in dropped[0] and "1000003 Hz" in dropped[0]


def test_extractor_refuses_an_absurd_rate():
    extractor = LogMelFeatureExtractor(num_mel_bins=16, sampling_rate=8000, clip_seconds=0.5)
    with pytest.raises(ValueError, match="sampling_rate 1000003 Hz"):
        extractor(np.zeros(100), sampling_rate=1_000_003)


# ---------------------------------------------------------------------------------------------- fault 9


@pytest.mark.parametrize(("orig_rate", "new_rate"), [(44100, 8000), (16000, 32000), (44101, 32000), (8000, 8000)])
def test_streaming_resampler_equals_resampling_the_whole_signal(orig_rate: int, new_rate: int):
    signal = torch.from_numpy(np.random.default_rng(0).standard_normal(50_003).astype(np.float32))
    streaming = StreamingResampler(orig_rate, new_rate)
    pieces, start = [], 0
    for size in (1, 4999, 333, 20_000, 7):  # odd sizes, some shorter than the kernel
        pieces.append(streaming.push(signal[start : start + size]))
        start += size
    pieces += [streaming.push(signal[start:]), streaming.finish()]
    whole = resample(signal, orig_rate, new_rate)
    streamed = torch.cat(pieces)
    assert streamed.shape == whole.shape and streaming.emitted == whole.numel()
    torch.testing.assert_close(streamed, whole, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------- file modes


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def test_replace_files_from_gives_files_the_umask_mode(tmp_path: Path):
    expected = 0o666 & ~_umask()
    if expected == 0o600:
        pytest.skip("the process umask itself gives 0600")
    staging, destination = tmp_path / ".tmp_model", tmp_path / "run"
    staging.mkdir()
    weights = staging / "model.safetensors"
    weights.write_bytes(b"weights")
    weights.chmod(0o600)  # what safetensors leaves
    replace_files_from(staging, destination)
    assert stat.S_IMODE((destination / "model.safetensors").stat().st_mode) == expected
    assert not staging.exists()


def test_atomic_write_does_not_touch_the_process_umask(tmp_path: Path, monkeypatch):
    def no_umask(mask):
        raise AssertionError("os.umask flips the process umask: not thread-safe")

    monkeypatch.setattr(os, "umask", no_umask)
    atomic_write_text(tmp_path / "a.txt", "hello")
    assert (tmp_path / "a.txt").read_text() == "hello"


# ---------------------------------------------------------------------------------------------- secrets


WANDB_KEY = "0123456789abcdef0123456789abcdef01234567"


def test_scrub_secrets_keeps_commit_ids_and_masks_named_or_prefixed_secrets():
    snapshot = f"/cache/huggingface/hub/models--me--tagger/snapshots/{WANDB_KEY}/config.json"
    assert scrub_secrets({"model_name_or_path": snapshot}) == {"model_name_or_path": snapshot}
    assert scrub_secrets(f"revision {WANDB_KEY}") == f"revision {WANDB_KEY}"
    assert scrub_secrets({"wandb_api_key": WANDB_KEY, "hub_token": "x", "ok": 1}) == {"wandb_api_key": "***", "hub_token": "***", "ok": 1}
    assert scrub_secrets(f"WANDB_API_KEY={WANDB_KEY} python train.py") == "WANDB_API_KEY=*** python train.py"
    assert scrub_secrets("--hub_token hf_A1b2C3d4E5f6G7h8I9j0K1l2M3 --alpha 0.5") == "--hub_token *** --alpha 0.5"
    assert scrub_secrets("run leak-hf_A1b2C3d4E5f6G7h8I9j0K1l2M3") == "run leak-***"
    assert scrub_secrets("id AKIAIOSFODNN7EXAMPLE") == "id ***"
    assert scrub_secrets("ghp_" + "a" * 36) == "***"
    assert scrub_secrets(f"https://oauth2:{WANDB_KEY}@gitlab.com/x/y.git") == "https://***@gitlab.com/x/y.git"
    assert scrub_secrets('{"db_password": "hunter2"}') == '{"db_password": "***"}'
    prose = "pass a token with --hub_token or log in first"
    assert scrub_secrets(prose) == prose


def test_scrub_secrets_takes_linear_time_whatever_the_text():
    """Issue 28.3: a 30,000-character --run_name took 34 s: the named-secret pattern was tried at every position of
    a run of name characters, each try scanning the rest of the run. 100,000 characters of any shape: under 1 s."""
    import signal
    import time

    def too_slow(*_):
        raise TimeoutError("scrub_secrets took over 10 s for 100,000 characters")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(10)  # the quadratic version needs about 15 minutes for the first shape
    try:
        for unit in ("a", "token", "api", "-", "a ", "token   ", "hf_", "xoxa-", "://", "passw"):
            text = (unit * (100_000 // len(unit) + 1))[:100_000]
            started = time.perf_counter()
            scrub_secrets({"run_name": text, "config": [text]})
            assert time.perf_counter() - started < 1.0, unit
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    # what the rewritten pattern must still find: names after punctuation, inside and around other name characters
    assert scrub_secrets("x;SECRET:abc&y") == "x;SECRET:***&y"
    assert scrub_secrets("a_token_b = 'v2'") == "a_token_b = '***'"
    assert scrub_secrets("url?apikey=abc123&x=1") == "url?apikey=***&x=1"
    assert scrub_secrets("tokens are nice") == "tokens are nice"
