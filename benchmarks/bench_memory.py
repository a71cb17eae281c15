"""Peak memory of training vs cache size: 10k and 100k cached clips, same steps, fresh process each.

    python benchmarks/bench_memory.py                           # 10k and 100k clips of 32 x 51, 60 steps
    python benchmarks/bench_memory.py --sizes 10000,100000,400000 --steps 100

The caches are generated fp16 log-mels written as one segment file of the log-mel store's layout, their
labels with `datasets` (`save_to_disk`), read as the training loop reads a stored split. Each size trains
in its own subprocess (so that no allocation of another size is counted) through the real
`MultiTaskLoader` (scene and event streams both read the cache), the real augmentation/joining path and
a small `SceneEventModel` (resnet10t) for a fixed number of steps; the subprocess reports its peak RSS
(`ru_maxrss`).

Target: the 100k run's peak within 10 % of the 10k run's, i.e. memory does not grow with the data
set. The reader copies each batch out of the segment file with one `pread` per row;
reading through the memory map instead left the pages around every read row resident (about 1.27x
at 100k clips, 60 steps), and a map made per batch 1.027x.
`--steps 0` trains a whole epoch of each size.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

NAME = "bench_memory"


@dataclass
class MemoryArguments(common.SmallModelArguments):
    sizes: str = field(default="10000,100000", metadata={"help": "Comma-separated cache sizes (clips); the first is the reference."})
    steps: int = field(default=60, metadata={"help": "Training steps per size (the same for every size); 0: a whole epoch."})
    num_workers: int = field(default=0, metadata={"help": "Reader threads per stream (inside the measured process)."})
    output: str | None = field(default=None, metadata={"help": "JSON path. Default: benchmarks/results/bench_memory.json."})
    # Internal: run one size in this process and print its figures as JSON.
    child_cache: str | None = field(default=None, metadata={"help": "(internal) cache folder to train on in this process."})


def train_steps(args: MemoryArguments) -> dict:
    """The child: load the cache, train `steps` steps, report peak RSS."""
    baseline = common.rss_breakdown_mib().get("VmRSS", 0.0)  # after imports: what every Python+torch process costs
    split = common.load_synthetic_cache(args.child_cache)
    trainer = common.SmallTrainer(args)
    loader = common.cache_loader(split, args.asc_batch_size, args.aet_batch_size, num_workers=args.num_workers)
    started, steps, peak_anon = time.perf_counter(), 0, 0.0
    for batch in loader.epoch(0):
        trainer.step(batch)
        steps += 1
        peak_anon = max(peak_anon, common.rss_breakdown_mib().get("RssAnon", 0.0))
        if steps == args.steps:
            break
    return {"rows": len(split), "steps": steps, "seconds": time.perf_counter() - started,
            "peak_rss_mib": common.rss_breakdown_mib().get("VmHWM", common.peak_rss_mib()), "import_rss_mib": baseline,
            "peak_anon_rss_mib": peak_anon, "ru_maxrss_mib": common.peak_rss_mib(),
            "final_rss_mib": common.rss_breakdown_mib()}


def run_child(cache: Path, args: MemoryArguments) -> dict:
    command = [sys.executable, __file__, "--child_cache", str(cache), "--steps", str(args.steps),
               "--num_mel_bins", str(args.num_mel_bins), "--frames", str(args.frames), "--encoder", args.encoder,
               "--asc_batch_size", str(args.asc_batch_size), "--aet_batch_size", str(args.aet_batch_size),
               "--num_workers", str(args.num_workers)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child for {cache} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(MemoryArguments).parse_args_into_dataclasses(args=argv)
    common.disable_progress_bars()
    if args.child_cache:
        print(json.dumps(train_steps(args)))
        return {}
    sizes = [int(value) for value in args.sizes.split(",") if value.strip()]
    print(f"memory benchmark: caches of {sizes} clips of {args.num_mel_bins} x {args.frames} fp16, {args.encoder}, "
          f"{args.steps or 'a whole epoch of'} steps of {args.asc_batch_size} + {args.aet_batch_size}, {args.num_workers} reader threads, "
          "one fresh process per size", flush=True)
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as folder:
        for size in sizes:
            cache = Path(folder) / f"cache_{size}"
            common.build_synthetic_cache(cache, size, args.num_mel_bins, args.frames, seed=size)
            megabytes = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) / 2**20
            runs[str(size)] = result = {**run_child(cache, args), "cache_mib": megabytes}
            print(f"  {size:>7} clips ({megabytes:.0f} MiB on disk): peak RSS {result['peak_rss_mib']:.0f} MiB, peak anonymous "
                  f"{result['peak_anon_rss_mib']:.0f} MiB (after imports {result['import_rss_mib']:.0f} MiB; at the end file-backed "
                  f"{result['final_rss_mib'].get('RssFile', float('nan')):.0f} MiB), {result['steps']} steps in {result['seconds']:.1f} s",
                  flush=True)
    reference, largest = runs[str(sizes[0])], str(sizes[-1])
    ratios = {size: run["peak_rss_mib"] / reference["peak_rss_mib"] for size, run in runs.items()}
    anon_ratios = {size: run["peak_anon_rss_mib"] / reference["peak_anon_rss_mib"] for size, run in runs.items()}
    print(f"peak RSS {largest} / {sizes[0]} clips = {ratios[largest]:.3f} (+{runs[largest]['peak_rss_mib'] - reference['peak_rss_mib']:.0f} MiB) "
          f"→ target <= 1.10 {'met' if ratios[largest] <= 1.10 else 'NOT met'}; "
          f"peak anonymous RSS ratio {anon_ratios[largest]:.3f}")
    payload = {"settings": {key: getattr(args, key) for key in ("num_mel_bins", "frames", "encoder", "steps",
                                                                 "asc_batch_size", "aet_batch_size", "num_workers")},
               "sizes": sizes, "runs": runs, "ratio_to_first": ratios, "anon_ratio_to_first": anon_ratios, "target_ratio": 1.10,
               "meets_target": ratios[largest] <= 1.10}
    common.write_results(NAME, payload, args.output)
    return payload


if __name__ == "__main__":
    main()
