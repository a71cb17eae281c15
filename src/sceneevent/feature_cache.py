"""The log-mel cache: audio is decoded once, with `datasets.map`, into fixed-size fp16 arrays on disk.

`datasets` fingerprints the map (the data set and the extractor's settings), so a second run reuses
the Arrow file; an interrupted build leaves only a temporary file that the next run discards.
The training loop then only slices memory-mapped Arrow.
"""

from __future__ import annotations

import logging
import os

import datasets
from datasets.fingerprint import Hasher
import numpy as np

from .audio import AudioDecodeError, load_audio
from .feature_extraction_sceneevent import LogMelFeatureExtractor

logger = logging.getLogger(__name__)

BAD_AUDIO_COLUMN = "bad_audio"


class BadAudioError(ValueError):
    """One or more clips could not be decoded; the message lists every one of them."""

    def __init__(self, split_name: str, problems: list[str]):
        self.problems = problems
        listing = "\n  ".join(problems)
        super().__init__(
            f"{len(problems)} bad audio file(s) in {split_name}:\n  {listing}\n"
            "Fix or remove them, or pass --skip_bad_audio to drop them (they are counted in results.json)."
        )


class _Featurizer:
    """Batched map function: decode every clip, log-mel the batch, record failures instead of raising."""

    def __init__(self, extractor: LogMelFeatureExtractor):
        self.extractor = extractor
        self.shape = (extractor.num_mel_bins, extractor.num_frames)

    def __call__(self, audio_entries: list[dict]) -> dict:
        features = np.zeros((len(audio_entries), *self.shape), dtype=np.float16)
        problems = [""] * len(audio_entries)
        clips, rates, good = [], [], []
        for row, entry in enumerate(audio_entries):
            try:
                decoded = load_audio(entry)
            except AudioDecodeError as error:
                problems[row] = str(error)
                continue
            clips.append(decoded.waveform)
            rates.append(decoded.sampling_rate)
            good.append(row)
        # Clips of one rate are featurised together; rates are rarely mixed within a data set.
        for rate in sorted(set(rates)):
            rows = [row for row, r in zip(good, rates) if r == rate]
            batch = [clip for clip, r in zip(clips, rates) if r == rate]
            values = self.extractor(batch, sampling_rate=rate, return_tensors="np")["input_features"]
            features[rows] = values.astype(np.float16)
        return {"input_features": features, BAD_AUDIO_COLUMN: problems}


def build_feature_cache(
    dataset: datasets.Dataset,
    extractor: LogMelFeatureExtractor,
    *,
    split_name: str = "dataset",
    num_proc: int | None = None,
    batch_size: int = 32,
    skip_bad_audio: bool = False,
) -> tuple[datasets.Dataset, list[str]]:
    """Add `input_features` (fp16 `(num_mel_bins, frames)`) to `dataset` and drop `audio`.

    Returns the cached data set and the list of bad files that were dropped (empty unless
    `skip_bad_audio`).

    Raises:
        BadAudioError: some clips could not be decoded and `skip_bad_audio` is False.
        ValueError: `dataset` is empty or has no `audio` column.
    """
    if "audio" not in dataset.column_names:
        raise ValueError(f"{split_name} has no `audio` column (columns: {dataset.column_names})")
    if len(dataset) == 0:
        raise ValueError(f"{split_name} is empty: there is nothing to train or evaluate on")
    featurizer = _Featurizer(extractor)
    features = dataset.features.copy()
    del features["audio"]
    features["input_features"] = datasets.Array2D(shape=featurizer.shape, dtype="float16")
    features[BAD_AUDIO_COLUMN] = datasets.Value("string")
    cache_file_name = None
    if not dataset.cache_files:
        # In-memory sources (e.g. relabelled Hub tables) would keep the features in RAM: pin them to disk.
        key = Hasher.hash((dataset._fingerprint, extractor.to_dict(), split_name))
        folder = os.path.join(datasets.config.HF_DATASETS_CACHE, "sceneevent_features")
        os.makedirs(folder, exist_ok=True)
        cache_file_name = os.path.join(folder, f"{key}.arrow")
    cached = dataset.map(
        featurizer,
        cache_file_name=cache_file_name,
        batched=True,
        batch_size=batch_size,
        input_columns=["audio"],
        remove_columns=["audio"],
        features=features,
        num_proc=num_proc if num_proc and num_proc > 1 and len(dataset) >= 4 * batch_size else None,
        desc=f"log-mel cache ({split_name})",
    )
    problems = [p for p in cached[BAD_AUDIO_COLUMN] if p]
    if problems and not skip_bad_audio:
        raise BadAudioError(split_name, problems)
    if problems:
        logger.warning("dropping %d bad audio file(s) from %s", len(problems), split_name)
        cached = cached.filter(lambda p: [not x for x in p], batched=True, input_columns=[BAD_AUDIO_COLUMN])
    if len(cached) == 0:
        raise ValueError(f"{split_name}: no clip is left after dropping bad audio")
    return cached.remove_columns(BAD_AUDIO_COLUMN), problems
