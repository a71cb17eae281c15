"""Log-mel store build speed and disk, at the paper's shape, against a bare loop over the same files.

    python benchmarks/bench_feature_cache.py --num_files 768 --repeats 3   # docs/performance.md's figures (~5 min)
    python benchmarks/bench_feature_cache.py --num_files 64 --repeats 1 --arms bare,store_1   # quick look

Generated files: `--num_files` WAVs (or `--audio_format flac`) of 10 s, 44.1 kHz stereo PCM_24, so downmix and
resampling to 32 kHz are included; noise with a slow envelope. Extractor: `LogMelFeatureExtractor()` defaults
(32 kHz, 128 mels, n_fft 1024, hop 320: 128 x 1001 fp16 = 256,256 bytes a clip).

Arms (every round runs each once, in a rotated order, so that a slow phase of the machine does not always hit one):
  bare         `load_audio` + the extractor in a plain loop, in batches of the store's `_CHUNK_CLIPS`, cast to
               fp16, nothing written: the ceiling for one core.
  store_1      `FeatureStore(fresh root).store_split(files, num_workers=0)`: in this process (keys, decode,
               features, hashes, the segment's write and checksum, the record).
  store_N      the same with `num_workers=N` (N in `--workers`, N > 1), as training builds with
               `--preprocessing_num_workers N`: the store's N threads, torch at one thread each.
  processes_N  the same with the store's `featurizing` replaced, in this benchmark only, by N worker processes
               (`--process_start forkserver`: forked from a server that imports the store's module once, this
               process featurising until the first is up; `spawn`: what the store did first). The fork server
               lives as long as this process; it is stopped before each build (unless `--warm_pool`), so that
               every build pays the start-up a training run's first build pays.
  reuse        after each `store_1` build, a second `store_split` of the same files into the same store, by a new
               `FeatureStore` object: nothing decoded (keys, lookup, the segment's checksum, the split's view).
`--threads` sets torch's threads in this process (bare, store_1, reuse): 1 = one core, the issue's reference.

Checks: the features of every arm are hashed and must be identical (the bare arm's outside its timed runs).
Disk: every file in the store's folder after a build / (clips x fp16 feature bytes). Figures: median clips/s
per arm (min-max over rounds), store_1/bare (target >= 0.9), store_2/store_1 (target >= 1.7), and the process +
children CPU time per clip (what a loaded machine cannot hide).
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import multiprocessing.forkserver
import os
import resource
import sys
import tempfile
import threading
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # the store's progress bar: not timed output

import datasets
import numpy as np
import soundfile as sf
import torch
import xxhash
from transformers import HfArgumentParser

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from sceneevent import LogMelFeatureExtractor
from sceneevent.data import feature_store, featurizing
from sceneevent.data.audio import AUDIO_FEATURE, load_audio
from sceneevent.data.feature_store import FeatureStore

NAME = "bench_feature_cache"
CLIP_SECONDS = 10.0


@dataclass
class StoreBenchArguments:
    num_files: int = field(default=768, metadata={"help": "Files to generate (10 s, stereo, PCM_24): enough that a pool's start-up is amortised."})
    repeats: int = field(default=3, metadata={"help": "Timed rounds (every arm once per round, rotated order)."})
    workers: str = field(default="2", metadata={"help": "Comma-separated worker counts > 1 for store_N / threads_N."})
    arms: str = field(default="bare,store_1,store_N,processes_N",
                      metadata={"help": "Arms to run: bare, store_1 (with reuse), store_N, processes_N."})
    process_start: str = field(default="forkserver", metadata={"help": "processes_N: forkserver or spawn."})
    warm_pool: bool = field(default=False, metadata={"help": "processes_N: keep the fork server between builds."})
    threads: int = field(default=1, metadata={"help": "torch threads in this process (bare, store_1, reuse)."})
    source_rate: int = field(default=44100, metadata={"help": "Sampling rate of the generated WAVs."})
    channels: int = field(default=2, metadata={"help": "Channels of the generated WAVs."})
    audio_format: str = field(default="wav", metadata={"help": "wav or flac (PCM_24 either way)."})
    output: str | None = field(default=None, metadata={"help": "JSON path. Default: benchmarks/results/bench_feature_cache.json."})


def write_wavs(folder: Path, count: int, rate: int, channels: int, audio_format: str = "wav") -> list[str]:
    """Noise with a slow envelope per channel: realistic enough for decode, resample and FFT cost."""
    rng = np.random.default_rng(0)
    samples = int(rate * CLIP_SECONDS)
    envelope = np.linspace(0.05, 0.3, samples, dtype=np.float32)[:, None]
    paths = []
    for index in range(count):
        audio = (rng.standard_normal((samples, channels), dtype=np.float32) * envelope).clip(-1, 1)
        path = folder / f"clip_{index:05d}.{audio_format}"
        sf.write(path, audio, rate, subtype="PCM_24", format=audio_format.upper())
        paths.append(str(path))
    return paths


def file_set(paths: list[str]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"audio": [{"bytes": None, "path": path} for path in paths]},
                                      features=datasets.Features({"audio": AUDIO_FEATURE}))


def run_bare(paths: list[str], extractor: LogMelFeatureExtractor, digest: xxhash.xxh3_128 | None = None) -> int:
    """Decode + resample + log-mel in batches of the store's size, cast to fp16 as stored; nothing written
    (`digest`, when given, hashes the features: outside the timed runs, to compare them with the store's)."""
    done = 0
    for start in range(0, len(paths), feature_store._CHUNK_CLIPS):
        decoded = [load_audio({"bytes": None, "path": path}) for path in paths[start : start + feature_store._CHUNK_CLIPS]]
        features = extractor([clip.waveform for clip in decoded], sampling_rate=decoded[0].sampling_rate,
                             return_tensors="np")["input_features"].astype(np.float16)
        if digest is not None:
            digest.update(features.tobytes())
        done += len(features)
    return done


def stored_digest(store: FeatureStore) -> str:
    """xxh3-128 of the stored features' rows, in the order the split holds them (one segment: a fresh store)."""
    (segment,) = store.segments()
    return xxhash.xxh3_128_hexdigest(np.load(segment.features_path).tobytes())


def store_bytes(store: FeatureStore) -> int:
    """Every file in the store's folder (segments, keys, records, the lock)."""
    return sum(path.stat().st_size for path in store.folder.rglob("*") if path.is_file())


_process_featurizer: featurizing.Featurizer | None = None


def _start_process(settings: dict) -> None:
    global _process_featurizer
    torch.set_num_threads(1)
    _process_featurizer = featurizing.Featurizer(LogMelFeatureExtractor(**settings))


def _featurize_in_process(entries: list[dict]) -> tuple[np.ndarray, list[str]]:
    return _process_featurizer(entries)


def process_featurizing(start_method: str):
    """The store's `featurizing` with worker processes in place of its threads, the best way found for them:
    with `forkserver` the workers fork from a server that imports the store's module once (spawned workers each
    import it), and until the first worker is up this process featurises the batches itself (at one thread)."""

    @contextlib.contextmanager
    def in_processes(extractor: LogMelFeatureExtractor, num_workers: int):
        featurizer = featurizing.Featurizer(extractor)
        context = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            context.set_forkserver_preload(["__main__", feature_store.__name__])

        def here(chunk):
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                return featurizer(chunk)
            finally:
                torch.set_num_threads(threads)

        def ordered(pool, chunks, window, started):
            pending = deque()  # futures, and results computed here
            for chunk in chunks:
                up = any(call.done() for call in started)
                pending.append(pool.submit(_featurize_in_process, chunk) if up else here(chunk))
                while pending and (len(pending) >= window or isinstance(pending[0], tuple) or pending[0].done()):
                    head = pending.popleft()
                    yield head if isinstance(head, tuple) else head.result()
            while pending:
                head = pending.popleft()
                yield head if isinstance(head, tuple) else head.result()

        with ProcessPoolExecutor(num_workers, mp_context=context, initializer=_start_process,
                                 initargs=(featurizing.extractor_settings(extractor),)) as pool:
            started = []  # each submit starts a worker; with a fork server it waits for the server's imports
            threading.Thread(target=lambda: started.extend(pool.submit(os.getpid) for _ in range(num_workers)),
                             daemon=True).start()
            yield lambda chunks: ordered(pool, chunks, 2 * num_workers, started)

    return in_processes


class Arms:
    """The timed calls; each store build goes to a fresh root under `scratch` and is removed after."""

    def __init__(self, paths: list[str], extractor: LogMelFeatureExtractor, scratch: Path, threads: int):
        self.paths, self.extractor, self.scratch, self.threads = paths, extractor, scratch, threads
        self.disk: list[float] = []
        self.digests: dict[str, str] = {}  # each arm's features (the first build of each)
        self.reuse_seconds: list[float] = []
        self.log = io.StringIO()  # the store's messages (stderr), kept out of the figures' output

    def bare(self) -> int:
        torch.set_num_threads(self.threads)
        return run_bare(self.paths, self.extractor)

    def store(self, name: str, num_workers: int, processes: str | None = None, reuse: bool = False) -> tuple[float, int]:
        torch.set_num_threads(self.threads)
        with tempfile.TemporaryDirectory(prefix="bench_store_", dir=self.scratch) as root:
            store = FeatureStore(root, self.extractor)
            dataset = file_set(self.paths)
            original = feature_store.featurizing
            if processes:
                feature_store.featurizing = process_featurizing(processes)
            try:
                with contextlib.redirect_stderr(self.log):
                    seconds = common.time_call(lambda: store.store_split(dataset, split_name="bench", num_workers=num_workers))
                    if reuse:
                        again = FeatureStore(root, self.extractor)  # a new run's store object: its checks again
                        self.reuse_seconds.append(common.time_call(
                            lambda: again.store_split(dataset, split_name="bench", num_workers=num_workers)))
            finally:
                feature_store.featurizing = original
            feature_bytes = len(self.paths) * 2 * self.extractor.num_mel_bins * self.extractor.num_frames
            self.digests.setdefault(name, stored_digest(store))
            self.disk.append(store_bytes(store) / feature_bytes)
        return seconds, len(self.paths)


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(StoreBenchArguments).parse_args_into_dataclasses(args=argv)
    common.disable_progress_bars()
    extractor = LogMelFeatureExtractor()
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    wanted = [a.strip() for a in args.arms.split(",") if a.strip()]
    names = []
    for arm in wanted:
        names += [arm.replace("_N", f"_{n}") for n in workers] if arm.endswith("_N") else [arm]
    feature_bytes = 2 * extractor.num_mel_bins * extractor.num_frames
    print(f"log-mel store benchmark: {args.num_files} {args.audio_format.upper()}s, {CLIP_SECONDS:g} s {args.source_rate} Hz "
          f"x{args.channels} PCM_24 -> {extractor.num_mel_bins} x {extractor.num_frames} fp16 ({feature_bytes:,} bytes a clip); "
          f"arms {', '.join(names)}; {args.threads} torch thread(s) in this process; {args.repeats} rounds; "
          f"{os.cpu_count()} CPUs, load {common.load_average()}", flush=True)
    seconds = {name: [] for name in names}
    cpu = {name: [] for name in names}
    loads = []
    with tempfile.TemporaryDirectory(prefix="bench_wavs_") as folder:
        paths = write_wavs(Path(folder), args.num_files, args.source_rate, args.channels, args.audio_format)
        arms = Arms(paths, extractor, Path(folder), args.threads)

        def call(name: str) -> float:
            if name == "bare":
                return common.time_call(arms.bare)
            if name == "store_1":
                return arms.store(name, 0, reuse=True)[0]
            kind, count = name.rsplit("_", 1)
            if kind == "processes" and not args.warm_pool:
                multiprocessing.forkserver._forkserver._stop()  # private, but what CPython's own tests use
            return arms.store(name, int(count), processes=args.process_start if kind == "processes" else None)[0]

        # warm-up: imports, filterbank and resampling kernels, the files in the page cache; the bare arm's features.
        # The store raises glibc's mmap threshold first (`featurizing`); so does this, for the bare arm alike.
        np.empty((32 << 20) - (1 << 16), dtype=np.uint8)
        torch.set_num_threads(args.threads)
        digest = xxhash.xxh3_128()
        run_bare(paths, extractor, digest)
        arms.digests["bare"] = digest.hexdigest()
        for round_index in range(args.repeats):
            loads.append(common.load_average())
            for name in common.rotated(names, round_index):
                before = cpu_seconds()
                seconds[name].append(call(name))
                cpu[name].append(cpu_seconds() - before)
            print(f"  round {round_index + 1}/{args.repeats} (load {loads[-1]}): "
                  + ", ".join(f"{name} {args.num_files / seconds[name][-1]:.1f}" for name in names)
                  + " clips/s" + (f", reuse {arms.reuse_seconds[-1]:.2f} s" if arms.reuse_seconds else ""), flush=True)
    rate = {name: common.spread([args.num_files / s for s in values]) for name, values in seconds.items()}
    ratios = {}
    if "bare" in rate and "store_1" in rate:
        ratios["store_1_over_bare"] = rate["store_1"]["median"] / rate["bare"]["median"]
    for name in names:
        if name != "store_1" and "_" in name and "store_1" in rate:
            ratios[f"{name}_over_store_1"] = rate[name]["median"] / rate["store_1"]["median"]
    for name in names:
        r = rate[name]
        print(f"{name:>10}: {r['median']:6.1f} clips/s ({r['min']:.1f}-{r['max']:.1f}), "
              f"{1000 * common.median(cpu[name]) / args.num_files:.0f} ms CPU a clip")
    for name, value in ratios.items():
        target = 0.9 if name == "store_1_over_bare" else (1.7 if name == "store_2_over_store_1" else None)
        print(f"{name}: {value:.2f}x" + (f" (target >= {target}: {'met' if value >= target else 'NOT met'})" if target else ""))
    if arms.reuse_seconds:
        print(f"reuse (second store_split, nothing decoded): {common.median(arms.reuse_seconds):.2f} s "
              f"({min(arms.reuse_seconds):.2f}-{max(arms.reuse_seconds):.2f}) for {args.num_files} clips")
    same = len(set(arms.digests.values())) == 1
    print(f"features: {'identical in every arm' if same else 'DIFFER between arms'} "
          f"({', '.join(f'{name} {value[:8]}' for name, value in arms.digests.items())})")
    if arms.disk:
        print(f"disk: store bytes / (clips x fp16 feature bytes) = {common.median(arms.disk):.4f}")
    payload = {
        "settings": {"num_files": args.num_files, "source_rate": args.source_rate, "channels": args.channels,
                     "clip_seconds": CLIP_SECONDS, "subtype": "PCM_24", "format": args.audio_format, "workers": workers, "arms": names,
                     "threads": args.threads, "process_start": args.process_start, "warm_pool": args.warm_pool, "repeats": args.repeats, "chunk_clips": feature_store._CHUNK_CLIPS,
                     "extractor": extractor.to_dict(), "feature_bytes_per_clip": feature_bytes},
        "load_average_per_round": loads,
        "seconds": {name: common.spread(values) for name, values in seconds.items()},
        "seconds_per_round": seconds,
        "cpu_seconds_per_clip": {name: common.median(values) / args.num_files for name, values in cpu.items()},
        "clips_per_second": rate,
        "ratios": ratios,
        "reuse_seconds": common.spread(arms.reuse_seconds) if arms.reuse_seconds else None,
        "disk_ratio": common.spread(arms.disk) if arms.disk else None,
        "features_xxh3_128": arms.digests,
        "features_identical": same,
    }
    common.write_results(NAME, payload, args.output)
    return payload


if __name__ == "__main__":
    main()
