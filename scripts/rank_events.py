"""Rank event classes by how strongly a tagger detects them in the acoustic-scene training clips.

    python scripts/rank_events.py --tagger outputs/aet_only --asc_dataset /data/TUT-urban-acoustic-scenes-2018-development \\
        --output_file outputs/ranking.json
    python scripts/rank_events.py --tagger MIT/ast-finetuned-audioset-10-10-0.4593 --device cuda \\
        --asc_dataset wetdog/TUT-urban-acoustic-scenes-2018-development --output_file outputs/ranking_ast.json

The tagger is a run folder of this project trained with `--alpha 1` (its event head is used), or any
Hub audio-classification model whose labels are AudioSet class names (sigmoid of its logits). Each
class's score is its mean probability over the scene clips; the JSON ranking (best first) feeds
`build_aet_subset.py --strategy correlated|uncorrelated --ranking FILE`. `--help` lists every argument.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from sceneevent.training.arguments import parse_args
from sceneevent.data.ranking import load_tagger, rank_dataset, write_ranking
from sceneevent.data.sources import load_scene_source


@dataclass
class RankingArguments:
    tagger: str = field(metadata={"help": "Run folder trained with --alpha 1, or a Hub audio-classification model id."})
    output_file: str = field(default="outputs/ranking.json", metadata={"help": "Where to write the ranking JSON."})
    asc_dataset: str = field(
        default="synthetic", metadata={"help": "Scene data whose clips are scored: 'synthetic', a TUT 2018 folder, a saved dataset, or a Hub id."}
    )
    asc_label_column: str = field(default="scene", metadata={"help": "Scene label column of --asc_dataset."})
    split: str = field(default="train", metadata={"help": "Which split of --asc_dataset to score (the paper: the training clips)."})
    batch_size: int = field(default=16, metadata={"help": "Clips per forward pass."})
    max_clips: int | None = field(default=None, metadata={"help": "Score only the first N clips (quick checks)."})
    device: str = field(default="cpu", metadata={"help": "Torch device for the tagger, e.g. 'cuda'."})
    seed: int = field(default=0, metadata={"help": "Seed of the synthetic scene set / the Hub mirror's location split."})
    synthetic_difficulty: float = field(default=0.6, metadata={"help": "With --asc_dataset synthetic: the world's difficulty "
                                                              "(as train_joint.py's --synthetic_difficulty)."})
    synthetic_event_informativeness: float = field(
        default=0.5, metadata={"help": "With --asc_dataset synthetic: the world's event informativeness (as train_joint.py's "
                               "flag). Its ground-truth ranking needs no tagger: sceneevent.data.synthetic.ground_truth_ranking()."}
    )
    synthetic_swap_event_roles: bool = field(
        default=False, metadata={"help": "With --asc_dataset synthetic: the world with event roles swapped (as train_joint.py's flag)."}
    )


def main(args: list[str] | None = None) -> dict:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    arguments = parse_args((RankingArguments,), args)
    world = ({"difficulty": arguments.synthetic_difficulty, "event_informativeness": arguments.synthetic_event_informativeness,
              "swap_event_roles": arguments.synthetic_swap_event_roles}
             if arguments.asc_dataset == "synthetic" else {})  # the world the tagger's runs trained on, not the default one
    scenes = load_scene_source(arguments.asc_dataset, label_column=arguments.asc_label_column, seed=arguments.seed, **world)
    if arguments.split not in scenes:
        raise ValueError(f"--split {arguments.split!r}: --asc_dataset has splits {list(scenes)}")
    tagger = load_tagger(arguments.tagger, device=arguments.device)
    if tagger.unmatched:
        logging.warning("%d tagger labels are not AudioSet class names and are left out: %s", len(tagger.unmatched), tagger.unmatched[:10])
    start = time.perf_counter()
    ranking, clips = rank_dataset(tagger, scenes[arguments.split], batch_size=arguments.batch_size, max_clips=arguments.max_clips)
    path = write_ranking(
        arguments.output_file,
        ranking,
        tagger=arguments.tagger,
        asc_dataset=arguments.asc_dataset,
        split=arguments.split,
        clips=clips,
        unmatched_labels=tagger.unmatched,
        seconds=round(time.perf_counter() - start, 2),
    )
    print("Top 10:", ", ".join(f"{r['name']} ({r['score']:.3f})" for r in ranking[:10]))
    print(f"Wrote the ranking of {len(ranking)} classes over {clips} clips to {path}")
    return {"ranking": ranking, "clips": clips, "path": str(path)}


if __name__ == "__main__":
    main()
