"""Small copies of the two public data sets, in the exact layout of their Hub repositories.

- `agkphysics/AudioSet`: README configs `balanced` (default; splits train/test), `unbalanced`
  (train/test) and `full` (bal_train/unbal_train/eval) over `data/{bal_train,unbal_train,eval}/*.parquet`;
  columns `video_id`, `audio` (FLAC bytes, 48 kHz, 24 bit), `labels` (MIDs), `human_labels` (names).
- `wetdog/TUT-urban-acoustic-scenes-2018-development`: one `train` split in `data/train-*.parquet`;
  columns `audio` (binaural WAV bytes), `scene_label`, `identifier` (`<city>-<location>`), `source_label`.

Every clip is a short tone + noise whose pitch depends on its label, so a model has something to learn.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from sceneevent.data.audioset import audioset_ontology
from sceneevent.data.scenes import TUT2018_SCENES

AUDIOSET_ID = "agkphysics/AudioSet"
TUT2018_ID = "wetdog/TUT-urban-acoustic-scenes-2018-development"
AUDIOSET_EVENTS = ("Speech", "Music", "Dog", "Car")
RATE = 48000
CLIP_SECONDS = 0.25

AUDIOSET_README = """---
license: cc-by-4.0
task_categories:
- audio-classification
pretty_name: AudioSet
configs:
- config_name: balanced
  default: true
  data_files:
  - split: train
    path: data/bal_train/*.parquet
  - split: test
    path: data/eval/*.parquet
- config_name: unbalanced
  data_files:
  - split: train
    path: data/unbal_train/*.parquet
  - split: test
    path: data/eval/*.parquet
- config_name: full
  data_files:
  - split: bal_train
    path: data/bal_train/*.parquet
  - split: unbal_train
    path: data/unbal_train/*.parquet
  - split: eval
    path: data/eval/*.parquet
---
# AudioSet (test copy)
"""

TUT2018_README = """---
task_categories:
- audio-classification
pretty_name: TUT Urban Acoustic Scenes 2018 development (test copy)
---
# TUT Urban Acoustic Scenes 2018, development set (test copy)
"""

_AUDIO_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _tone(frequency: float, seed: int, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(RATE * CLIP_SECONDS)) / RATE
    wave = 0.3 * np.sin(2 * np.pi * frequency * t) + 0.05 * rng.standard_normal(t.size)
    return np.repeat(wave[:, None], channels, axis=1).astype(np.float32)


def _encode(wave: np.ndarray, fmt: str, subtype: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, RATE, format=fmt, subtype=subtype)
    return buffer.getvalue()


def _write_parquet(path: Path, table: pa.Table, features: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})}), path)


# -- AudioSet --------------------------------------------------------------------------------------


def audioset_rows(prefix: str, count: int, seed: int) -> list[tuple[str, list[str]]]:
    """(video_id, event names): every clip has one or two of AUDIOSET_EVENTS, each event on many clips."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        first = AUDIOSET_EVENTS[i % len(AUDIOSET_EVENTS)]
        events = [first] if rng.random() < 0.6 else [first, AUDIOSET_EVENTS[(i + 1 + int(rng.integers(3))) % len(AUDIOSET_EVENTS)]]
        rows.append((f"{prefix}{i:04d}".ljust(11, "x"), list(dict.fromkeys(events))))  # 11 characters, like YouTube ids
    return rows


def _audioset_shard(path: Path, split_folder: str, rows: list[tuple[str, list[str]]], seed: int) -> None:
    ontology = audioset_ontology()
    mids = [[ontology.mids[ontology.name_to_index[name]] for name in names] for _, names in rows]
    audio = [
        {"bytes": _encode(_tone(220.0 * (1 + AUDIOSET_EVENTS.index(names[0])), seed + i), "FLAC", "PCM_24"),
         "path": f"audio/{split_folder}/{video_id}.flac"}
        for i, (video_id, names) in enumerate(rows)
    ]  # fmt: skip
    table = pa.table(
        {
            "video_id": pa.array([video_id for video_id, _ in rows], pa.string()),
            "audio": pa.array(audio, _AUDIO_TYPE),
            "labels": pa.array(mids, pa.list_(pa.string())),
            "human_labels": pa.array([names for _, names in rows], pa.list_(pa.string())),
        }
    )
    features = {
        "video_id": {"dtype": "string", "_type": "Value"},
        "audio": {"_type": "Audio"},
        "labels": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "List"},
        "human_labels": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "List"},
    }
    _write_parquet(path, table, features)


def build_audioset_repo(root: Path, *, balanced: int = 32, unbalanced: int = 8, evaluation: int = 24) -> Path:
    """The files of `agkphysics/AudioSet` (two balanced-train shards, one unbalanced, one eval) under `root`."""
    bal = audioset_rows("b", balanced, seed=1)
    half = len(bal) // 2
    _audioset_shard(root / "data" / "bal_train" / "00.parquet", "bal_train", bal[:half], seed=100)
    _audioset_shard(root / "data" / "bal_train" / "01.parquet", "bal_train", bal[half:], seed=200)
    _audioset_shard(root / "data" / "unbal_train" / "00.parquet", "unbal_train", audioset_rows("u", unbalanced, seed=2), seed=300)
    _audioset_shard(root / "data" / "eval" / "00.parquet", "eval", audioset_rows("e", evaluation, seed=3), seed=400)
    (root / "README.md").write_text(AUDIOSET_README)
    return root


# -- TUT 2018 --------------------------------------------------------------------------------------


def tut2018_rows(cities: tuple[str, ...] = ("barcelona", "helsinki"), locations: int = 4) -> list[tuple[str, str, str, str]]:
    """(file name, scene, identifier, device): one clip per location, `locations` locations per scene and city."""
    return [
        (f"{scene}-{city}-{s * 100 + loc}-{loc * 10}-a.wav", scene, f"{city}-{s * 100 + loc}", "a")
        for s, scene in enumerate(TUT2018_SCENES) for city in cities for loc in range(locations)
    ]  # fmt: skip


def build_tut2018_repo(root: Path, *, shards: int = 2) -> Path:
    """The files of the wetdog TUT 2018 mirror (`data/train-0000i-of-0000n.parquet`) under `root`."""
    rows = tut2018_rows()
    features = {
        "audio": {"_type": "Audio", "sampling_rate": RATE},
        "scene_label": {"dtype": "string", "_type": "Value"},
        "identifier": {"dtype": "string", "_type": "Value"},
        "source_label": {"dtype": "string", "_type": "Value"},
    }
    for shard in range(shards):
        part = rows[shard::shards]
        audio = [
            {"bytes": _encode(_tone(150.0 * (1 + TUT2018_SCENES.index(scene)), i, channels=2), "WAV", "PCM_24"), "path": name}
            for i, (name, scene, _, _) in enumerate(part)
        ]
        table = pa.table(
            {
                "audio": pa.array(audio, _AUDIO_TYPE),
                "scene_label": [r[1] for r in part],
                "identifier": [r[2] for r in part],
                "source_label": [r[3] for r in part],
            }
        )
        _write_parquet(root / "data" / f"train-{shard:05d}-of-{shards:05d}.parquet", table, features)
    (root / "README.md").write_text(TUT2018_README)
    return root


TIMM_WEIGHTS_ID = "timm-tests/test_resnet.tiny_in1k"


def build_timm_weights_repo(root: Path, architecture: str = "test_resnet", num_classes: int = 7) -> Path:
    """A timm weights repository as timm publishes them (`model.safetensors` with the RGB stem and the classifier,
    `config.json`), of `architecture` at a random initialisation of its own (seed 1), under `root`."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(1)
    model = timm.create_model(architecture, pretrained=False, num_classes=num_classes)
    root.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, root / "model.safetensors")
    (root / "config.json").write_text(json.dumps({"architecture": architecture, "num_classes": num_classes,
                                                  "pretrained_cfg": {"first_conv": "conv1.0", "classifier": "fc"}}))
    (root / "README.md").write_text("---\nlibrary_name: timm\nlicense: apache-2.0\n---\n# test_resnet weights (test copy)\n")
    return root
