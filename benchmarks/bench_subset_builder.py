"""Time `build_aet_subset` at AudioSet scale: 2,000,000 metadata-only clips, k = 35, T = 360 h.

    python benchmarks/bench_subset_builder.py
    python benchmarks/bench_subset_builder.py --clips 500000 --k 10 --hours 50 --num_proc 4

Label lists are drawn with replacement from the real balanced-train segment list shipped in the
package (so class frequencies are AudioSet's); evaluation is the real evaluation list. `audio` holds
paths that need not exist: the builder never decodes. Prints the figures and writes JSON to
benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa

from sceneevent.data.audio import AUDIO_FEATURE
from sceneevent.data._columns import dataset_from_arrow
from sceneevent.data.audioset import ONTOLOGY_DIR, events_feature, mids_to_indices, read_segments_csv
from sceneevent.data.subsets import build_aet_subset

RESULTS = Path(__file__).parent / "results"


def segment_split(table, rows: np.ndarray, prefix: str) -> datasets.Dataset:
    """A metadata-only split whose row i copies the labels and duration of segment `rows[i]`."""
    labels = pa.array(mids_to_indices(table["labels"]), pa.list_(pa.int64())).take(pa.array(rows))
    durations = (table["end_seconds"] - table["start_seconds"]).round(3).to_numpy()[rows]
    ids = pa.array([f"{prefix}{i:010d}" for i in range(len(rows))], pa.string())
    paths = pa.compute.binary_join_element_wise("/nonexistent/", ids, ".flac", "")
    arrow = pa.table(
        {
            "video_id": ids,
            "audio": pa.StructArray.from_arrays([pa.nulls(len(rows), pa.binary()), paths], names=["bytes", "path"]),
            "events": labels,
            "duration": pa.array(durations, pa.float64()),
        }
    )
    features = datasets.Features(
        {"video_id": datasets.Value("string"), "audio": AUDIO_FEATURE, "events": events_feature(), "duration": datasets.Value("float64")}
    )
    return dataset_from_arrow(arrow, features)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=2_000_000, help="training clips to synthesise")
    parser.add_argument("--k", type=int, default=35, help="event classes")
    parser.add_argument("--hours", type=float, default=360.0, help="hours of training audio")
    parser.add_argument("--seed", type=int, default=0, help="seed for the label draw and the subset")
    parser.add_argument("--num_proc", type=int, default=None, help="processes for datasets filter/map")
    args = parser.parse_args()
    datasets.disable_progress_bars()

    start = time.perf_counter()
    balanced = read_segments_csv(ONTOLOGY_DIR / "balanced_train_segments.csv")
    evaluation = read_segments_csv(ONTOLOGY_DIR / "eval_segments.csv")
    rng = np.random.default_rng(args.seed)
    source = datasets.DatasetDict(
        {
            "train": segment_split(balanced, rng.integers(0, len(balanced), size=args.clips), "t"),
            "eval": segment_split(evaluation, np.arange(len(evaluation)), "e"),
        }
    )
    setup_seconds = time.perf_counter() - start

    start = time.perf_counter()
    subset, info = build_aet_subset(source, k=args.k, hours=args.hours, seed=args.seed, num_proc=args.num_proc, return_info=True)
    build_seconds = time.perf_counter() - start

    result = {
        "benchmark": "bench_subset_builder",
        "clips": args.clips,
        "k": args.k,
        "hours": args.hours,
        "seed": args.seed,
        "num_proc": args.num_proc,
        "setup_seconds": round(setup_seconds, 2),
        "build_seconds": round(build_seconds, 2),
        "train_clips": info.train_clips,
        "train_hours": round(info.train_hours, 3),
        "validation_clips": info.validation_clips,
        "available_classes": info.available_classes,
        "events": info.events,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(), "datasets": datasets.__version__},
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    print(f"source: {args.clips:,} train clips + {source['eval'].num_rows:,} eval clips, built in {setup_seconds:.1f} s")
    print(f"subset k={args.k}, T={args.hours:g} h: {build_seconds:.1f} s -> {info.train_clips:,} train clips "
          f"({info.train_hours:.2f} h), {info.validation_clips:,} validation clips")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bench_subset_builder_{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
