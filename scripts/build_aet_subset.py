"""Build an AudioSet subset for acoustic event tagging: k classes by a strategy, T hours of training audio.

    python scripts/build_aet_subset.py --source agkphysics/AudioSet --audioset_config unbalanced \\
        --k 35 --hours 360 --strategy random --seed 0 --output_dir data/aet_k35_T360_random_s0
    python scripts/build_aet_subset.py --source /data/audioset --strategy correlated \\
        --ranking outputs/ranking.json --k 10 --hours 50 --output_dir data/aet_k10_T50_corr
    python scripts/build_aet_subset.py --source synthetic --k 5 --output_dir data/aet_synthetic
    python scripts/build_aet_subset.py --config subset.yaml    # the same arguments from a file

`--source` is a Hub id (layout of agkphysics/AudioSet), a folder with the official segment CSVs and
`audio/`, a `save_to_disk` folder, a parquet folder, or `synthetic`. The output folder (written
atomically) loads with `datasets.load_from_disk` or as `--aet_dataset` of train_joint.py, and holds a
data card (README.md) and subset_info.json. `--help` lists every argument.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import datasets

from sceneevent.training.arguments import parse_args
from sceneevent.data.subsets import STRATEGIES, build_aet_subset, save_aet_subset


@dataclass
class SubsetArguments:
    source: str = field(
        default="agkphysics/AudioSet",
        metadata={"help": "AudioSet source: Hub id, segment-CSV folder (+ audio/), save_to_disk folder, parquet folder, or 'synthetic'."},
    )
    output_dir: str = field(default="data/aet_subset", metadata={"help": "Folder to write the subset to (save_to_disk + README.md)."})
    audioset_config: str = field(
        default="balanced",
        metadata={"help": "AudioSet training list: 'balanced', 'unbalanced' or 'full' (both). Large T needs 'unbalanced' or 'full'."},
    )
    k: int | None = field(default=None, metadata={"help": "Number of event classes (2..115 in the paper). Not needed with --events."})
    events: list[str] | None = field(
        default=None, metadata={"help": "Explicit class display names (e.g. --events Speech Music); overrides --strategy."}
    )
    hours: float | None = field(default=None, metadata={"help": "Hours of training audio to draw (T, 11..360 in the paper). Default: all."})
    strategy: str = field(default="random", metadata={"help": f"How to choose the classes: one of {', '.join(STRATEGIES)}."})
    ranking: str | None = field(
        default=None, metadata={"help": "Ranking JSON from scripts/rank_events.py (needed by 'correlated' / 'uncorrelated')."}
    )
    seed: int = field(default=0, metadata={"help": "Seed for the random classes and the drawn training clips (and, with "
                                           "--source synthetic, of the generated event set)."})
    synthetic_difficulty: float = field(
        default=0.6, metadata={"help": "With --source synthetic: the event set's difficulty (match train_joint.py's "
                               "--synthetic_difficulty so the subset comes from the same world)."}
    )
    num_proc: int | None = field(default=None, metadata={"help": "Processes for datasets filter/map."})
    cache_dir: str | None = field(default=None, metadata={"help": "datasets cache folder for Hub / parquet sources."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace --output_dir if it exists."})


def main(args: list[str] | None = None) -> dict:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    datasets.enable_progress_bars()
    arguments = parse_args((SubsetArguments,), args)
    load_kwargs = {}
    if arguments.source == "synthetic":
        load_kwargs["difficulty"] = arguments.synthetic_difficulty
    else:
        load_kwargs["config"] = arguments.audioset_config
        if arguments.cache_dir:
            load_kwargs["cache_dir"] = arguments.cache_dir
    subset, info = build_aet_subset(
        arguments.source,
        k=arguments.k,
        events=arguments.events,
        hours=arguments.hours,
        strategy=arguments.strategy,
        ranking=arguments.ranking,
        seed=arguments.seed,
        num_proc=arguments.num_proc,
        return_info=True,
        **load_kwargs,
    )
    out = save_aet_subset(subset, arguments.output_dir, info, overwrite=arguments.overwrite_output_dir)
    summary = info.to_dict()
    print(json.dumps({k: summary[k] for k in ("k", "events", "strategy", "seed", "train_hours", "train_clips", "validation_clips", "missing_audio")}, indent=2))
    print(f"Saved to {out}")
    return summary


if __name__ == "__main__":
    main()
