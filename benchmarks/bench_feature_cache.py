"""Feature-cache build speed: 10 s 48 kHz stereo WAVs → the paper's log-mels, vs librosa on the same files.

    python benchmarks/bench_feature_cache.py                    # 64 files, 3 repeats
    python benchmarks/bench_feature_cache.py --num_files 256 --num_proc 4

ours:    `build_feature_cache` (datasets.map, batched) with `LogMelFeatureExtractor()` defaults
         (32 kHz, 128 mels, n_fft 1024, hop 320): soundfile decode, downmix, torchaudio resample,
         torchaudio mel, log, fp16 Arrow on disk.
librosa: the same files decoded with soundfile, downmixed, resampled with librosa (soxr_hq) to
         32 kHz, `librosa.feature.melspectrogram(n_fft=1024, hop_length=320, n_mels=128)`, log,
         fp16 in a numpy array (no Arrow write: the reference does strictly less work).

The WAVs are PCM_24, as TUT Urban Acoustic Scenes 2018 ships them. Each repeat builds the cache in a
fresh datasets cache folder (a fingerprinted map would otherwise be reused, not rebuilt).
Figures: median clips/s per method and the ratio ours/librosa (> 1: ours is faster).
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import librosa
import numpy as np
import soundfile as sf
import torch
from transformers import HfArgumentParser

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from sceneevent import LogMelFeatureExtractor
from sceneevent.data.audio import AUDIO_FEATURE
from sceneevent.data.feature_cache import build_feature_cache

NAME = "bench_feature_cache"
SOURCE_RATE, CLIP_SECONDS, CHANNELS = 48000, 10.0, 2


@dataclass
class CacheArguments:
    num_files: int = field(default=64, metadata={"help": "WAV files to generate (10 s, 48 kHz, stereo, PCM_24)."})
    repeats: int = field(default=3, metadata={"help": "Timed builds per method (alternating); the median is reported."})
    num_proc: int | None = field(default=None, metadata={"help": "datasets.map processes for our build (training's --preprocessing_num_workers)."})
    batch_size: int = field(default=32, metadata={"help": "Clips per map batch."})
    output: str | None = field(default=None, metadata={"help": "JSON path. Default: benchmarks/results/bench_feature_cache.json."})


def write_wavs(folder: Path, count: int) -> list[str]:
    """Noise with a slow envelope per channel: realistic enough for decode/resample/FFT cost."""
    rng = np.random.default_rng(0)
    samples = int(SOURCE_RATE * CLIP_SECONDS)
    envelope = np.linspace(0.05, 0.3, samples, dtype=np.float32)[:, None]
    paths = []
    for index in range(count):
        audio = (rng.standard_normal((samples, CHANNELS), dtype=np.float32) * envelope).clip(-1, 1)
        path = folder / f"clip_{index:04d}.wav"
        sf.write(path, audio, SOURCE_RATE, subtype="PCM_24")
        paths.append(str(path))
    return paths


def build_ours(paths: list[str], args: CacheArguments, extractor: LogMelFeatureExtractor) -> int:
    """One cache build into a fresh datasets cache folder; returns the clips cached."""
    dataset = datasets.Dataset.from_dict(
        {"audio": [{"bytes": None, "path": path} for path in paths]}, features=datasets.Features({"audio": AUDIO_FEATURE})
    )
    previous = datasets.config.HF_DATASETS_CACHE
    with tempfile.TemporaryDirectory(prefix="bench_cache_") as cache_dir:
        # build_feature_cache pins in-memory sources under HF_DATASETS_CACHE: point it at an empty folder.
        datasets.config.HF_DATASETS_CACHE = cache_dir
        try:
            cached, _ = build_feature_cache(dataset, extractor, num_proc=args.num_proc, batch_size=args.batch_size)
            rows = len(cached)
            del cached
        finally:
            datasets.config.HF_DATASETS_CACHE = previous
    return rows


def librosa_log_mel(path: str) -> np.ndarray:
    waveform, rate = sf.read(path, dtype="float32", always_2d=True)  # (samples, channels)
    mono = waveform.mean(axis=1)
    mono = librosa.resample(mono, orig_sr=rate, target_sr=32000, res_type="soxr_hq")
    mel = librosa.feature.melspectrogram(y=mono, sr=32000, n_fft=1024, hop_length=320, n_mels=128, power=2.0)
    return np.log(mel + 1e-6).astype(np.float16)


def build_librosa(paths: list[str]) -> int:
    features = np.stack([librosa_log_mel(path) for path in paths])
    return features.shape[0]


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(CacheArguments).parse_args_into_dataclasses(args=argv)
    common.disable_progress_bars()
    extractor = LogMelFeatureExtractor()
    print(f"feature-cache benchmark: {args.num_files} WAVs, {CLIP_SECONDS:g} s {SOURCE_RATE} Hz stereo PCM_24 → "
          f"{extractor.num_mel_bins} mels x {extractor.num_frames} frames at {extractor.sampling_rate} Hz; "
          f"num_proc={args.num_proc}, {torch.get_num_threads()} torch threads, median of {args.repeats}", flush=True)
    seconds = {"ours": [], "librosa": []}
    with tempfile.TemporaryDirectory(prefix="bench_wavs_") as folder:
        paths = write_wavs(Path(folder), args.num_files)
        runs = {"ours": lambda: build_ours(paths, args, extractor), "librosa": lambda: build_librosa(paths)}
        for name, run in runs.items():  # warm-up: imports, mel filterbanks, resampling kernels, page cache
            assert run() == args.num_files
        for repeat in range(args.repeats):
            order = ["ours", "librosa"] if repeat % 2 == 0 else ["librosa", "ours"]
            for name in order:
                seconds[name].append(common.time_call(runs[name]))
            print(f"  repeat {repeat + 1}/{args.repeats}: ours {args.num_files / seconds['ours'][-1]:.1f} clips/s, "
                  f"librosa {args.num_files / seconds['librosa'][-1]:.1f} clips/s", flush=True)
    clips_per_second = {name: args.num_files / common.median(values) for name, values in seconds.items()}
    ratio = clips_per_second["ours"] / clips_per_second["librosa"]
    print(f"ours: {clips_per_second['ours']:.1f} clips/s, librosa: {clips_per_second['librosa']:.1f} clips/s, "
          f"ours/librosa = {ratio:.2f}x")
    payload = {
        "settings": {"num_files": args.num_files, "source_rate": SOURCE_RATE, "clip_seconds": CLIP_SECONDS,
                     "channels": CHANNELS, "subtype": "PCM_24", "num_proc": args.num_proc, "batch_size": args.batch_size,
                     "repeats": args.repeats, "extractor": extractor.to_dict(), "librosa": librosa.__version__},
        "seconds": {name: common.spread(values) for name, values in seconds.items()},
        "clips_per_second": clips_per_second,
        "ratio_ours_over_librosa": ratio,
    }
    common.write_results(NAME, payload, args.output)
    return payload


if __name__ == "__main__":
    main()
