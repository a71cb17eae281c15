"""Event-class rankings for the `correlated` / `uncorrelated` subset strategies.

A tagger scores every scene training clip; a class's score is its mean probability over the clips.
The ranking (best first) is written as JSON by `scripts/rank_events.py` and read by `build_aet_subset`.
The aggregation works on plain arrays; torch and transformers are imported only to load a tagger.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io_utils import atomic_write_json

RANKING_FORMAT = "sceneevent-event-ranking/1"
logger = logging.getLogger(__name__)


class MeanScoreAccumulator:
    """Running per-class sum of scores over batches, so clips need not be held in memory."""

    def __init__(self, num_classes: int):
        self.sums = np.zeros(num_classes, dtype=np.float64)
        self.count = 0

    def update(self, scores: np.ndarray) -> None:
        """Add a (batch, num_classes) array of per-clip class scores (probabilities)."""
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 2 or scores.shape[1] != self.sums.shape[0]:
            raise ValueError(f"scores of shape {scores.shape}: expected (batch, {self.sums.shape[0]})")
        if not np.isfinite(scores).all():
            raise ValueError("scores hold NaN or Inf")
        self.sums += scores.sum(axis=0)
        self.count += scores.shape[0]

    def means(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("no clips were scored")
        return self.sums / self.count


def rank_by_mean_score(scores: np.ndarray, names: Sequence[str]) -> list[dict]:
    """Rank classes by their mean score over clips, best first.

    Args:
        scores: (clips, classes) per-clip class probabilities.
        names: the class names, one per column.

    Returns:
        `[{"rank": 1, "name": ..., "score": mean}, ...]`; ties are broken by name so the order is stable.
    """
    accumulator = MeanScoreAccumulator(len(names))
    accumulator.update(scores)
    return ranking_from_means(accumulator.means(), names)


def ranking_from_means(means: np.ndarray, names: Sequence[str]) -> list[dict]:
    """Rank classes by precomputed (classes,) mean scores, best first (ties broken by name)."""
    means = np.asarray(means, dtype=np.float64)
    if means.shape != (len(names),):
        raise ValueError(f"{means.shape[0] if means.ndim else 0} scores for {len(names)} names")
    if len(set(names)) != len(names):
        raise ValueError("class names are not unique")
    order = sorted(range(len(names)), key=lambda i: (-means[i], names[i]))
    return [{"rank": r + 1, "name": names[i], "score": float(means[i])} for r, i in enumerate(order)]


def _normalize(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", name.casefold()).strip()


def match_to_ontology(labels: Sequence[str], ontology_names: Sequence[str]) -> tuple[dict[int, int], list[str]]:
    """Match a model's label names to ontology names: exactly, then ignoring case and punctuation.

    Returns ({model label index: ontology index}, [unmatched model labels]).
    """
    exact = {name: i for i, name in enumerate(ontology_names)}
    loose = {}
    for i, name in enumerate(ontology_names):
        loose.setdefault(_normalize(name), i)
    matched, unmatched = {}, []
    for j, label in enumerate(labels):
        index = exact.get(label, loose.get(_normalize(label)))
        if index is None:
            unmatched.append(label)
        else:
            matched[j] = index
    return matched, unmatched


def write_ranking(path: str | os.PathLike, ranking: list[dict], **metadata) -> Path:
    """Write `{"format", "ranking", **metadata}` as JSON, atomically."""
    path = Path(path)
    atomic_write_json(path, {"format": RANKING_FORMAT, **metadata, "ranking": ranking})
    return path


def read_ranking(ranking: str | os.PathLike | Sequence[str]) -> list[str]:
    """Class names best first, from a ranking JSON file (ours, or a plain list of names) or a list."""
    if isinstance(ranking, (str, os.PathLike)):
        path = Path(ranking)
        if not path.is_file():
            raise FileNotFoundError(f"ranking file {path} does not exist (write one with scripts/rank_events.py)")
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"ranking file {path}: not valid JSON ({error})") from error
        entries = payload.get("ranking") if isinstance(payload, dict) else payload
        if not isinstance(entries, list):
            raise ValueError(f"ranking file {path}: expected a list of names or {{'ranking': [{{'name': ...}}, ...]}}")
        names = [e["name"] if isinstance(e, dict) else e for e in entries]
        if isinstance(payload, dict) and entries and isinstance(entries[0], dict) and "rank" in entries[0]:
            names = [e["name"] for e in sorted(entries, key=lambda e: e["rank"])]
        where = str(path)
    else:
        names, where = list(ranking), "ranking list"
    if not all(isinstance(n, str) for n in names):
        raise ValueError(f"{where}: every entry must be a class name (string)")
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: names repeat")
    return names


# -- taggers: a sceneevent run folder (alpha = 1) or a Hub audio-classification model -------------


@dataclass
class Tagger:
    """A loaded tagger: `score(waveforms)` gives (B, len(names)) probabilities for mono clips at `sampling_rate`."""

    names: list[str]
    sampling_rate: int
    score: Callable[[list[np.ndarray]], np.ndarray]
    description: str
    unmatched: list[str] = field(default_factory=list)


def load_tagger(name_or_path: str, device: str = "cpu", **from_pretrained_kwargs) -> Tagger:
    """Load a sceneevent run folder (event head, trained with alpha = 1) or a Hub audio classifier.

    A Hub model's labels are matched to the AudioSet ontology; unmatched labels are left out of the
    ranking (listed in `Tagger.unmatched`).
    """
    import torch
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification

    import sceneevent  # noqa: F401  (registers the sceneevent classes with the Auto* factories)

    from .audioset import audioset_ontology

    config = AutoConfig.from_pretrained(name_or_path, **from_pretrained_kwargs)
    extractor = AutoFeatureExtractor.from_pretrained(name_or_path, **from_pretrained_kwargs)
    if config.model_type == "sceneevent":
        if config.alpha != 1.0:
            logger.warning("%s was trained with alpha = %g; the paper's tagger is the AET-only model (alpha = 1)", name_or_path, config.alpha)
        model = AutoModel.from_pretrained(name_or_path, **from_pretrained_kwargs)
        labels = list(config.event_labels)
        columns, names, unmatched = list(range(len(labels))), labels, []
        def forward(inputs):  # noqa: E306
            return model(input_features=inputs["input_features"]).event_logits
    else:
        model = AutoModelForAudioClassification.from_pretrained(name_or_path, **from_pretrained_kwargs)
        labels = [config.id2label[i] for i in range(len(config.id2label))]
        ontology = audioset_ontology().names
        matched, unmatched = match_to_ontology(labels, ontology)
        if not matched:
            raise ValueError(f"{name_or_path}: none of its {len(labels)} labels match an AudioSet class name (e.g. {labels[:5]})")
        columns = sorted(matched)
        names = [ontology[matched[j]] for j in columns]
        def forward(inputs):  # noqa: E306
            return model(**inputs).logits
    model.to(device).eval()
    index = torch.tensor(columns, device=device)

    @torch.no_grad()
    def score(waveforms: list[np.ndarray]) -> np.ndarray:
        inputs = extractor(waveforms, sampling_rate=extractor.sampling_rate, return_tensors="pt")
        inputs = {k: v.to(device) for k, v in inputs.items()}
        return torch.sigmoid(forward(inputs).float()).index_select(1, index).cpu().numpy()

    return Tagger(names=list(names), sampling_rate=int(extractor.sampling_rate), score=score, description=name_or_path, unmatched=unmatched)


def rank_dataset(tagger: Tagger, dataset, batch_size: int = 16, max_clips: int | None = None, progress: bool = True) -> tuple[list[dict], int]:
    """Score every clip of a scene `Dataset` (column `audio`) and rank the tagger's classes by mean score.

    Returns (ranking best first, number of clips scored).
    """
    from tqdm.auto import tqdm

    from ..models.feature_extraction_sceneevent import downmix, resample
    from .audio import load_audio

    count = dataset.num_rows if max_clips is None else min(max_clips, dataset.num_rows)
    if count == 0:
        raise ValueError("the scene dataset has no clips to score")
    audio = dataset.select_columns(["audio"])
    accumulator = MeanScoreAccumulator(len(tagger.names))
    with tqdm(total=count, desc="Scoring scene clips", unit="clip", disable=not progress) as bar:
        for start in range(0, count, batch_size):
            rows = audio[start : min(start + batch_size, count)]["audio"]
            waveforms = []
            for entry in rows:
                decoded = load_audio(entry)
                # mono float32 at the tagger's rate: what Hub feature extractors expect
                waveforms.append(resample(downmix(decoded.waveform), decoded.sampling_rate, tagger.sampling_rate).numpy())
            accumulator.update(tagger.score(waveforms))
            bar.update(len(rows))
    return ranking_from_means(accumulator.means(), tagger.names), accumulator.count
