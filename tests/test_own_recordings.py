"""Your own recordings end to end: long recordings written here in every format soundfile writes (OGG Vorbis,
FLAC, MP3, 16/24-bit and float WAV; mono and stereo; 44.1 and 48 kHz) → scripts/cut_clips.py → an audiofolder
with metadata.csv → splits by recording → a 2-step training run → scripts/predict.py."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sceneevent.data.audiofolder import RecordingSplitError, load_scene_audiofolder
from sceneevent.data.clips import clip_starts
from sceneevent.training.arguments import DataArguments, JointTrainingArguments, ModelArguments, parse_args
from sceneevent.training.loop import train
from sceneevent.training.preparation import load_splits

ROOT = Path(__file__).resolve().parents[1]
RECORDING_SECONDS, CLIP_SECONDS = 1.6, 0.5  # three clips a recording, a 0.1 s tail dropped
# (scene, recording, container, subtype, rate, channels): each scene has three recordings, one per format
RECORDINGS = [
    ("rain", "rain_ogg", "OGG", "VORBIS", 44100, 2),
    ("rain", "rain_flac", "FLAC", "PCM_24", 48000, 1),
    ("rain", "rain_mp3", "MP3", "MPEG_LAYER_III", 44100, 1),
    ("stream", "stream_wav16", "WAV", "PCM_16", 48000, 2),
    ("stream", "stream_wav24", "WAV", "PCM_24", 44100, 1),
    ("stream", "stream_float", "WAV", "FLOAT", 48000, 2),
]
SUFFIX = {"OGG": "ogg", "FLAC": "flac", "MP3": "mp3", "WAV": "wav"}
LOSSLESS = {"FLAC", "WAV"}
TINY = ["--sampling_rate", "16000", "--clip_seconds", str(CLIP_SECONDS), "--num_mel_bins", "16", "--hop_length", "160",
        "--n_fft", "400", "--encoder", "test_resnet", "--max_train_steps", "2", "--asc_batch_size", "4", "--eval_batch_size", "8",
        "--alpha", "0", "--aet_dataset", "none", "--report_to", "none", "--asc_validation_split", "0.3"]


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def write_recording(path: Path, container: str, subtype: str, rate: int, channels: int, seed: int) -> None:
    """A tone (its pitch by scene) in noise, written in `container`/`subtype`."""
    t = np.arange(int(RECORDING_SECONDS * rate)) / rate
    pitch = 300.0 if "rain" in path.name else 900.0
    rng = np.random.default_rng(seed)
    wave = 0.3 * np.sin(2 * np.pi * pitch * t)[:, None] + 0.05 * rng.standard_normal((t.size, channels))
    sf.write(path, wave.astype(np.float32), rate, format=container, subtype=subtype)


@pytest.fixture(scope="module")
def cut(tmp_path_factory):
    recordings, clips = tmp_path_factory.mktemp("recordings"), tmp_path_factory.mktemp("clips") / "scenes"
    for seed, (scene, name, container, subtype, rate, channels) in enumerate(RECORDINGS):
        (recordings / scene).mkdir(exist_ok=True)
        write_recording(recordings / scene / f"{name}.{SUFFIX[container]}", container, subtype, rate, channels, seed)
    script("cut_clips").main(["--input_dir", str(recordings), "--output_dir", str(clips), "--clip_seconds", str(CLIP_SECONDS)])
    return recordings, clips


@pytest.mark.parametrize("seconds,clip,hop,minimum,expected", [
    (1.6, 0.5, 0.5, 0.5, [(0, 5), (5, 5), (10, 5)]),  # whole clips; the 0.1 s tail dropped
    (1.6, 0.5, 0.5, 0.1, [(0, 5), (5, 5), (10, 5), (15, 1)]),  # the tail kept down to --min_seconds
    (1.0, 0.5, 0.3, 0.5, [(0, 5), (3, 5)]),  # overlapping clips
    (1.0, 0.5, 0.3, 0.1, [(0, 5), (3, 5), (6, 4)]),  # a tail inside the clip before it is not a clip of its own
    (1.0, 0.5, 0.5, 0.2, [(0, 5), (5, 5)]),  # nothing left after the last whole clip
    (0.3, 0.5, 0.5, 0.5, []),  # shorter than the shortest clip
    (0.3, 0.5, 0.5, 0.2, [(0, 3)]),
])  # fmt: skip
def test_clip_starts(seconds, clip, hop, minimum, expected):
    assert clip_starts(round(seconds * 10), 10, clip, hop, minimum) == expected


def test_cut_clips_keep_each_recordings_rate_channels_and_samples_and_name_it(cut):
    recordings, clips = cut
    with open(clips / "metadata.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * len(RECORDINGS)
    for scene, name, container, _, rate, channels in RECORDINGS:
        mine = [row for row in rows if row["identifier"] == f"{scene}/{name}"]
        assert [row["start_seconds"] for row in mine] == ["0.000", "0.500", "1.000"] and {row["scene"] for row in mine} == {scene}
        source, _ = sf.read(recordings / scene / f"{name}.{SUFFIX[container]}", dtype="float32", always_2d=True)
        for row in mine:
            clip, clip_rate = sf.read(clips / row["file_name"], dtype="float32", always_2d=True)
            assert clip_rate == rate and clip.shape == (int(CLIP_SECONDS * rate), channels)
            if container in LOSSLESS:  # the same samples, to FLAC's 24 bits
                start = int(float(row["start_seconds"]) * rate)
                np.testing.assert_allclose(clip, source[start : start + len(clip)], atol=2.0**-22)


def test_the_audiofolder_splits_keep_every_recording_on_one_side(cut):
    _, clips = cut
    data = load_scene_audiofolder(clips)
    assert data["train"].features["scene"].names == ["rain", "stream"]
    assert {"identifier", "start_seconds", "duration_seconds"} <= set(data["train"].column_names)
    splits, scenes, _ = load_splits(parse_args((DataArguments,), ["--asc_dataset", str(clips), "--asc_validation_split", "0.3"]),
                                    need_events=False)
    recordings = {name: set(split["identifier"]) for name, split in splits.items()}
    assert recordings["scene_train"] and recordings["scene_validation"] and recordings["scene_test"]
    assert not recordings["scene_train"] & recordings["scene_validation"]
    assert not recordings["scene_train"] & recordings["scene_test"]
    assert not recordings["scene_validation"] & recordings["scene_test"]
    assert sum(len(split) for split in splits.values()) == 3 * len(RECORDINGS)  # every clip used once


def test_train_on_the_cut_clips_then_predict_every_format(cut, tmp_path):
    recordings, clips = cut
    run = tmp_path / "run"
    results = train(*parse_args((ModelArguments, DataArguments, JointTrainingArguments),
                                ["--asc_dataset", str(clips), "--output_dir", str(run), *TINY])).to_dict()
    assert results["steps"] == 2 and results["data"]["scene_labels"] == ["rain", "stream"]
    assert 0.0 <= results["final"]["floor_asc_macro_accuracy"] <= 1.0
    sources = [str(recordings / scene / f"{name}.{SUFFIX[container]}") for scene, name, container, *_ in RECORDINGS]
    output = tmp_path / "predictions.json"
    assert script("predict").main([*sources, "--model", str(run), "--output_format", "json", "--output_file", str(output),
                                   "--device", "cpu", "--disable_tqdm"]) == 0
    document = json.loads(output.read_text())
    assert not document["failures"] and len(document["files"]) == len(RECORDINGS)
    assert all(prediction["aggregate"]["scene"] in ("rain", "stream") for prediction in document["files"])


def tiny_folder(root: Path, rows: list[tuple[str, str, str]]) -> Path:
    """`rows` of (file_name, scene, identifier) as WAV files and a metadata.csv in `root`."""
    for file_name, _, _ in rows:
        (root / file_name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / file_name, np.zeros(80, dtype=np.float32), 8000)
    with open(root / "metadata.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("file_name", "scene", "identifier"), *rows])
    return root


def test_a_scene_of_one_recording_cannot_be_split_by_recording_and_says_so(tmp_path):
    rows = [(f"c{i}.wav", "rain", f"rain-{i % 3}") for i in range(6)] + [(f"s{i}.wav", "stream", "stream-only") for i in range(3)]
    with pytest.raises(RecordingSplitError, match=r"clips all come from one recording \('stream': stream-only\).*both sides"):
        load_scene_audiofolder(tiny_folder(tmp_path, rows))


def test_split_folders_sharing_a_recording_are_refused(tmp_path):
    rows = [("train/a.wav", "rain", "r1"), ("train/b.wav", "rain", "r2"), ("test/c.wav", "rain", "r2")]
    with pytest.raises(RecordingSplitError, match=r"1 recording\(s\) have clips in both train and test \(r2\)"):
        load_scene_audiofolder(tiny_folder(tmp_path, rows))


def test_split_folders_and_metadata_give_the_splits_and_a_missing_file_is_named(tmp_path):
    rows = [("train/a.wav", "rain", "r1"), ("train/b.wav", "stream", "r2"), ("test/c.wav", "rain", "r3")]
    data = load_scene_audiofolder(tiny_folder(tmp_path / "ok", rows))
    assert {split: list(data[split]["identifier"]) for split in data} == {"train": ["r1", "r2"], "test": ["r3"]}
    broken = tiny_folder(tmp_path / "broken", rows)
    (broken / "train" / "b.wav").unlink()
    with pytest.raises(ValueError, match=r"metadata.csv line 3: .*train/b.wav does not exist"):
        load_scene_audiofolder(broken)
