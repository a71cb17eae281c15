"""AET subset builder: class strategies, label restriction, hours within one clip, a validation split
fixed across hours, saving with a data card, and every error."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
import yaml

from sceneevent.data.audio import AUDIO_FEATURE
from sceneevent.data.audioset import UnknownEventError, events_feature
from sceneevent.data.ranking import write_ranking
from sceneevent.data.sources import load_event_source
from sceneevent.data.subsets import SubsetError, build_aet_subset, save_aet_subset

# Real AudioSet names so speech_music works; "Bark" has training clips only, so it is never available.
NAMES = ["Speech", "Music", "Dog", "Car", "Rain", "Bird", "Bark"]


def _split(rng, n, prefix, classes, durations):
    labels = [sorted(rng.choice(classes, size=rng.integers(1, 3), replace=False).tolist()) for _ in range(n)]
    return datasets.Dataset.from_dict(
        {
            "video_id": [f"{prefix}{i:04d}" for i in range(n)],
            "audio": [{"bytes": None, "path": f"/nowhere/{prefix}{i}.wav"} for i in range(n)],
            "events": labels,
            "duration": durations,
        },
        features=datasets.Features(
            {"video_id": datasets.Value("string"), "audio": AUDIO_FEATURE, "events": events_feature(NAMES), "duration": datasets.Value("float64")}
        ),
    )


@pytest.fixture(scope="module")
def source():
    rng = np.random.default_rng(0)
    train = _split(rng, 600, "t", np.arange(7), rng.uniform(4.0, 10.0, 600))
    evaluation = _split(rng, 120, "e", np.arange(6), np.full(120, 10.0))
    return datasets.DatasetDict({"train": train, "eval": evaluation})


def _names(dataset):
    names = dataset.features["events"].feature.names
    return {v: [names[i] for i in e] for v, e in zip(dataset["video_id"], dataset["events"])}


def test_random_classes_and_restricted_labels(source):
    subset, info = build_aet_subset(source, k=3, seed=0, return_info=True)
    chosen = subset["train"].features["events"].feature.names
    assert len(chosen) == 3 and set(chosen) <= set(NAMES[:6])  # "Bark" has no eval clips
    assert subset["validation"].features["events"].feature.names == chosen
    original = _names(source["train"])
    restricted = _names(subset["train"])
    assert restricted  # every kept clip carries a chosen class, and only chosen classes
    for video, labels in restricted.items():
        assert labels and labels == [n for n in original[video] if n in chosen]
    expected = {v for v, labels in original.items() if set(labels) & set(chosen)}
    assert set(restricted) == expected  # hours=None keeps them all
    assert info.available_classes == 6 and info.k == 3 and info.strategy == "random"
    assert sum(info.train_clips_per_class.values()) >= info.train_clips
    assert build_aet_subset(source, k=3, seed=0)["train"]["video_id"] == subset["train"]["video_id"]


@pytest.mark.parametrize("hours", [0.05, 0.2, 0.5])
def test_hours_within_one_clip(source, hours):
    subset = build_aet_subset(source, k=4, hours=hours, seed=3)
    total = sum(subset["train"]["duration"])
    assert abs(total - hours * 3600) <= 10.0  # the longest clip


def test_validation_fixed_across_hours_and_nested_train(source):
    runs = {h: build_aet_subset(source, events=["Dog", "Rain"], hours=h, seed=1) for h in (0.1, 0.3, None)}
    validation = {h: (list(r["validation"]["video_id"]), list(r["validation"]["events"])) for h, r in runs.items()}
    assert validation[0.1] == validation[0.3] == validation[None]
    assert set(runs[0.1]["train"]["video_id"]) < set(runs[0.3]["train"]["video_id"])  # same seed: nested draws
    other_seed = build_aet_subset(source, events=["Dog", "Rain"], hours=0.1, seed=2)
    assert list(other_seed["validation"]["video_id"]) == validation[0.1][0]
    assert set(other_seed["train"]["video_id"]) != set(runs[0.1]["train"]["video_id"])


def test_nominal_ten_seconds_without_duration(source):
    plain = datasets.DatasetDict({s: d.remove_columns(["duration"]) for s, d in source.items()})
    subset = build_aet_subset(plain, events=["Speech"], hours=0.25, seed=0)
    assert subset["train"].num_rows == 90  # 0.25 h / 10 s


def test_ranking_strategies(source, tmp_path):
    ranking = ["Bark", "Rain", "Car", "Speech", "Music", "Dog", "Bird"]
    top, info = build_aet_subset(source, k=2, strategy="correlated", ranking=ranking, return_info=True)
    assert top["train"].features["events"].feature.names == ["Rain", "Car"]
    assert info.skipped_from_ranking == ["Bark"]
    path = write_ranking(tmp_path / "ranking.json", [{"rank": i + 1, "name": n, "score": 1.0 - i / 10} for i, n in enumerate(ranking)])
    bottom = build_aet_subset(source, k=2, strategy="uncorrelated", ranking=path)
    assert bottom["train"].features["events"].feature.names == ["Dog", "Bird"]


def test_speech_music(source):
    subset = build_aet_subset(source, strategy="speech_music")
    assert subset["train"].features["events"].feature.names == ["Speech", "Music"]
    with pytest.raises(SubsetError, match="k = 2"):
        build_aet_subset(source, strategy="speech_music", k=3)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"k": 7}, SubsetError, "only 6 of 7 classes"),
        ({"k": 2, "hours": 1000}, SubsetError, r"only \d+\.\d+ h"),
        ({"k": 2, "strategy": "loudest"}, SubsetError, "expected one of"),
        ({"k": 2, "strategy": "correlated"}, SubsetError, "needs `ranking`"),
        ({"k": 7, "strategy": "correlated", "ranking": NAMES}, SubsetError, "only 6 of the 7 ranked"),
        ({"events": ["Dgo"]}, UnknownEventError, "did you mean 'Dog'"),
        ({"events": ["Bark"]}, SubsetError, "both training and evaluation"),
        ({"events": ["Dog"], "k": 2}, SubsetError, "k=2"),
        ({"strategy": "random"}, SubsetError, "needs k"),
        ({"k": 2, "hours": -1}, SubsetError, "positive"),
    ],
)
def test_errors(source, kwargs, error, match):
    with pytest.raises(error, match=match):
        build_aet_subset(source, **kwargs)


def test_save_with_data_card(source, tmp_path):
    subset, info = build_aet_subset(source, k=3, hours=0.1, seed=0, return_info=True)
    out = save_aet_subset(subset, tmp_path / "subset", info)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["subset"]  # no temp folders left behind
    card = (out / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["license"] == "cc-by-4.0"
    assert [s["num_examples"] for s in header["dataset_info"]["splits"]] == [subset[s].num_rows for s in ("train", "validation", "test")]
    for section in ("## Classes", "## Clips per class", "## Licence", "## Citation", "Gemmeke"):
        assert section in card
    assert json.loads((out / "subset_info.json").read_text())["events"] == info.events
    loaded = load_event_source(str(out))
    assert list(loaded["train"]["video_id"]) == list(subset["train"]["video_id"])
    assert loaded["train"].features["events"] == subset["train"].features["events"]
    with pytest.raises(FileExistsError, match="overwrite"):
        save_aet_subset(subset, out, info)
    smaller = subset["train"].select(range(5))
    save_aet_subset(datasets.DatasetDict({"train": smaller, "validation": subset["validation"]}), out, info, overwrite=True)
    assert datasets.load_from_disk(str(out))["train"].num_rows == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["subset"]


def test_segment_folder_source_reports_missing_audio(tmp_path):
    from test_data_audioset import make_segment_folder

    _, info = build_aet_subset(str(make_segment_folder(tmp_path / "as")), events=["Speech"], return_info=True)
    assert info.missing_audio == {"train": 2, "eval": 1}
    assert info.train_clips == 2 and info.validation_clips + info.test_clips == 1


def test_synthetic_source():
    subset, info = build_aet_subset("synthetic", k=2, seed=0, return_info=True)
    assert info.source == "synthetic" and len(subset["train"].features["events"].feature.names) == 2
    assert subset["train"].num_rows > 0 and subset["validation"].num_rows > 0


def test_a_synthetic_subset_comes_from_the_world_of_the_difficulty_asked_for():
    from sceneevent.data import load_synthetic_events

    kwargs = dict(events=["Speech"], hours=0.01, seed=0)  # 18 clips
    harder, info = build_aet_subset("synthetic", difficulty=0.9, return_info=True, **kwargs)
    assert info.source == "synthetic, difficulty=0.9"  # the card and subset_info.json say which world
    world = load_synthetic_events(seed=0, difficulty=0.9)["train"]
    by_path = {row["path"]: row["bytes"] for row in world["audio"]}
    assert all(by_path[row["path"]] == row["bytes"] for row in harder["train"]["audio"])
    default = build_aet_subset("synthetic", **kwargs)
    assert [row["bytes"] for row in default["train"]["audio"]] != [row["bytes"] for row in harder["train"]["audio"]]



def test_build_aet_subset_script(tmp_path, capsys):
    import importlib.util
    import sys
    from pathlib import Path

    from test_data_audioset import make_segment_folder

    script = Path(__file__).resolve().parents[1] / "scripts" / "build_aet_subset.py"
    spec = importlib.util.spec_from_file_location("build_aet_subset", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_aet_subset"] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    out = tmp_path / "subset"
    source = make_segment_folder(tmp_path / "as")
    summary = module.main(["--source", str(source), "--events", "Speech", "Music", "--output_dir", str(out), "--seed", "3"])
    assert summary["events"] == ["Speech", "Music"] and summary["missing_audio"] == {"train": 2, "eval": 1}
    assert datasets.load_from_disk(str(out))["train"].features["events"].feature.names == ["Speech", "Music"]
    assert "Saved to" in capsys.readouterr().out
    with pytest.raises(FileExistsError):
        module.main(["--source", str(source), "--events", "Speech", "--output_dir", str(out)])
    with pytest.raises(SystemExit):
        module.main(["--help"])
    assert "--strategy" in capsys.readouterr().out


def test_a_failed_save_keeps_the_old_subset(source, tmp_path, monkeypatch):
    import sceneevent.data.subsets as subsets

    subset, info = build_aet_subset(source, k=3, seed=0, return_info=True)
    out = save_aet_subset(subset, tmp_path / "subset", info)
    before = {path.relative_to(out): path.read_bytes() for path in out.rglob("*") if path.is_file()}

    def broken_card(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(subsets, "subset_card", broken_card)
    with pytest.raises(RuntimeError, match="disk full"):
        save_aet_subset(datasets.DatasetDict({"train": subset["train"].select(range(2))}), out, info, overwrite=True)
    assert {path.relative_to(out): path.read_bytes() for path in out.rglob("*") if path.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["subset"]  # the staging folder is removed


def test_the_subset_card_shows_event_names_and_settings_as_text():
    from sceneevent.data.subset_card import subset_card

    events = ["Dog", "Cat | <script>x</script>\n# heading"]
    dataset = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"events": [[0]]})})
    info = {"hours_requested": 1.0, "strategy": "random`\n# injected", "seed": 0, "source": "as`et", "train_hours": 1.0,
            "train_clips": 1, "validation_hours": 0.0, "validation_clips": 0, "available_classes": 2, "events": events,
            "train_clips_per_class": {}, "validation_clips_per_class": {}}
    card = subset_card(dataset, info)
    assert not any(line.startswith(("# heading", "# injected")) for line in card.splitlines())  # no injected heading
    assert "| Cat \\| \\<script>x\\</script> # heading | 0 | 0 | 0 |" in card  # one table cell, no tag
    assert "`Dog`, `Cat | <script>x</script> # heading`" in card  # code spans: shown literally
    assert "Strategy: ``random` # injected``" in card
