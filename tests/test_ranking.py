"""Ranking aggregation on plain arrays, ontology matching, the JSON round trip, and rank_events.py
end to end with a tiny sceneevent tagger."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest

from sceneevent.data.audio import AUDIO_FEATURE, encode_wav
from sceneevent.data.ranking import (
    MeanScoreAccumulator,
    match_to_ontology,
    rank_by_mean_score,
    ranking_from_means,
    read_ranking,
    write_ranking,
)

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_rank_by_mean_score():
    scores = np.array([[0.1, 0.9, 0.5], [0.3, 0.7, 0.5]])
    ranking = rank_by_mean_score(scores, ["a", "b", "c"])
    assert [r["name"] for r in ranking] == ["b", "c", "a"]
    assert [r["rank"] for r in ranking] == [1, 2, 3]
    assert ranking[0]["score"] == pytest.approx(0.8) and ranking[2]["score"] == pytest.approx(0.2)


def test_ties_are_broken_by_name():
    assert [r["name"] for r in ranking_from_means(np.array([0.5, 0.5, 0.9]), ["zeta", "alpha", "mid"])] == ["mid", "alpha", "zeta"]


def test_accumulator_matches_one_batch():
    rng = np.random.default_rng(0)
    scores = rng.random((37, 5))
    accumulator = MeanScoreAccumulator(5)
    for start in range(0, 37, 8):
        accumulator.update(scores[start : start + 8])
    assert accumulator.count == 37
    np.testing.assert_allclose(accumulator.means(), scores.mean(axis=0))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: MeanScoreAccumulator(3).update(np.zeros((2, 4))), r"expected \(batch, 3\)"),
        (lambda: MeanScoreAccumulator(2).update(np.array([[np.nan, 0.0]])), "NaN"),
        (lambda: MeanScoreAccumulator(2).means(), "no clips"),
        (lambda: rank_by_mean_score(np.zeros((1, 2)), ["a", "a"]), "not unique"),
        (lambda: ranking_from_means(np.zeros(3), ["a", "b"]), "3 scores for 2 names"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_match_to_ontology():
    matched, unmatched = match_to_ontology(["Speech", "music", "Dog  ", "Vehicle horn car horn honking", "Laser"], ["Speech", "Music", "Dog", "Vehicle horn, car horn, honking"])
    assert matched == {0: 0, 1: 1, 2: 2, 3: 3} and unmatched == ["Laser"]


def test_write_and_read(tmp_path):
    ranking = rank_by_mean_score(np.array([[0.2, 0.8]]), ["Dog", "Car"])
    path = write_ranking(tmp_path / "sub" / "ranking.json", ranking, tagger="x", clips=1)
    payload = json.loads(path.read_text())
    assert payload["tagger"] == "x" and payload["format"].startswith("sceneevent-event-ranking")
    assert read_ranking(path) == ["Car", "Dog"]
    assert list((tmp_path / "sub").iterdir()) == [path]  # no temp file left
    (tmp_path / "plain.json").write_text(json.dumps(["Dog", "Car"]))
    assert read_ranking(tmp_path / "plain.json") == ["Dog", "Car"]
    assert read_ranking(["Speech", "Music"]) == ["Speech", "Music"]
    with pytest.raises(FileNotFoundError, match="rank_events.py"):
        read_ranking(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_ranking(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="repeat"):
        read_ranking(["Dog", "Dog"])


def _load_script(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def save_tagger(folder, event_labels: list[str], **feature_settings):
    """A randomly initialised (seeded) event-only run folder: model and feature extractor."""
    import torch

    from sceneevent import LogMelFeatureExtractor, SceneEventConfig, SceneEventModel

    torch.manual_seed(0)
    config = SceneEventConfig(scene_labels=["park", "bus"], event_labels=event_labels, alpha=1.0, encoder="resnet10t", num_mel_bins=16)
    SceneEventModel(config).save_pretrained(folder)
    LogMelFeatureExtractor(num_mel_bins=16, **feature_settings).save_pretrained(folder)
    return folder


def test_rank_events_script_with_a_sceneevent_tagger(tmp_path):
    tagger = save_tagger(tmp_path / "tagger", ["Speech", "Music", "Dog"], sampling_rate=8000, clip_seconds=0.5)

    rng = np.random.default_rng(0)
    clips = [{"bytes": encode_wav(rng.standard_normal((2, 4000)).astype(np.float32) * 0.1, 16000), "path": None} for _ in range(5)]
    features = datasets.Features({"audio": AUDIO_FEATURE, "scene": datasets.ClassLabel(names=["park", "bus"])})
    split = datasets.Dataset.from_dict({"audio": clips, "scene": [0, 1, 0, 1, 0]}, features=features)
    scenes = tmp_path / "scenes"
    datasets.DatasetDict({"train": split, "test": split.select([0])}).save_to_disk(str(scenes))

    out = tmp_path / "ranking.json"
    result = _load_script("rank_events").main(
        ["--tagger", str(tagger), "--asc_dataset", str(scenes), "--output_file", str(out), "--batch_size", "2"]
    )
    payload = json.loads(out.read_text())
    assert payload["clips"] == 5 == result["clips"]
    assert sorted(r["name"] for r in payload["ranking"]) == ["Dog", "Music", "Speech"]
    scores = [r["score"] for r in payload["ranking"]]
    assert scores == sorted(scores, reverse=True) and all(0.0 < s < 1.0 for s in scores)
    assert read_ranking(out) == [r["name"] for r in payload["ranking"]]


def test_rank_events_scores_the_synthetic_world_its_flags_name(tmp_path):
    tagger = save_tagger(tmp_path / "tagger", ["Speech", "Bird", "Dog"], sampling_rate=16000, clip_seconds=2.0)
    main = _load_script("rank_events").main
    scores = {}
    for informativeness in ("0.0", "1.0"):
        result = main(["--tagger", str(tagger), "--asc_dataset", "synthetic", "--synthetic_event_informativeness", informativeness,
                       "--max_clips", "4", "--output_file", str(tmp_path / f"{informativeness}.json")])
        scores[informativeness] = {entry["name"]: entry["score"] for entry in result["ranking"]}
    assert scores["0.0"] != scores["1.0"]  # the flag reached the generator: two worlds, two sets of clips scored
