"""The held-out splits every run needs: a *validation* split for every choice, a *test* split for reporting.

- Scenes: validation is carved from the training split, grouped by recording location (`identifier`, as in
  TUT 2018: no location on both sides), stratified by scene, fixed by a seed.
- Events: an evaluation set is cut into fixed `validation` and `test` halves by clip identity (the AudioSet
  `video_id`), so every event set built from one source shares the same halves, whatever k, T or the seed.
"""

from __future__ import annotations

import hashlib
import logging

import datasets
import numpy as np

from .scenes import group_split

logger = logging.getLogger(__name__)


def carve_validation(train: datasets.Dataset, fraction: float, seed: int = 0) -> tuple[datasets.Dataset, datasets.Dataset]:
    """`(train, validation)` from a scene training split; about `fraction` of the clips go to validation.

    Clips are grouped by `identifier` (recording location) when the set has one, else each clip is its
    own group (a warning says so: clips from one location may then fall on both sides).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"--asc_validation_split must be in [0, 1) (0 turns validation off), got {fraction}")
    if "identifier" in train.column_names:
        groups = [str(value) for value in train["identifier"]]
    else:
        logger.warning("the scene training set has no `identifier` column: the validation split is drawn clip by "
                       "clip, so clips of one recording location may be on both sides")
        groups = [str(index) for index in range(train.num_rows)]
    keep, held = group_split(groups, strata=list(train["scene"]), test_size=fraction, seed=seed)
    if len(held) == 0:
        raise ValueError(
            f"--asc_validation_split {fraction}: no validation clips could be drawn from {train.num_rows} training clips "
            "(every scene needs at least two recording locations)"
        )
    train, validation = train.select(keep), train.select(held)
    names = train.features["scene"].names
    missing = sorted(set(train.unique("scene")) - set(validation.unique("scene")))
    if missing:
        logger.warning("--asc_validation_split: scene class(es) %s have no clip in the validation split (each has one "
                       "recording location, or one clip without `identifier`, and it stays in training): each scores 0 in "
                       "every validation accuracy, so the epoch is chosen on the other classes", [names[index] for index in missing])
    return train, validation


def split_held_out(evaluation: datasets.Dataset) -> tuple[datasets.Dataset, datasets.Dataset]:
    """`(validation, test)`: an evaluation split cut in two halves by a hash of each clip's `video_id`.

    The hash, not a seeded draw, decides: a clip lands on the same side in every event set built from the
    same source. Without `video_id` the row index stands in for it.
    """
    if "video_id" in evaluation.column_names:
        keys = [str(value) for value in evaluation["video_id"]]
    else:
        keys = [str(index) for index in range(evaluation.num_rows)]
    to_test = np.array([hashlib.blake2b(key.encode(), digest_size=8).digest()[-1] & 1 for key in keys], dtype=bool)
    return evaluation.select(np.flatnonzero(~to_test)), evaluation.select(np.flatnonzero(to_test))
