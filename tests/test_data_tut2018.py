"""TUT Urban Acoustic Scenes 2018 loaders: the official folder layout (both fold-file variants), the
Hub mirror's location split, and `load_scene_source` dispatch. Fixtures are tiny WAVs in tmp_path."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from sceneevent.data.audio import AUDIO_FEATURE, encode_wav, load_audio
from sceneevent.data.scenes import (
    TUT2018_SCENES,
    TUT2018LayoutError,
    city_of,
    group_split,
    load_tut2018,
    load_tut2018_hub,
)
from sceneevent.data.audiofolder import load_scene_audiofolder
from sceneevent.data.sources import load_scene_source

CITIES = ("barcelona", "helsinki")


def _rows():
    """(filename, scene, identifier, device): 10 scenes x 2 cities x 2 clips per location."""
    rows = []
    for s, scene in enumerate(TUT2018_SCENES):
        for city in CITIES:
            identifier = f"{city}-{s}"
            for clip in range(2):
                rows.append((f"audio/{scene}-{identifier}-{clip}-a.wav", scene, identifier, "a"))
    return rows


def make_tut_folder(root, variant: str = "txt"):
    """A TUT 2018 development-set layout; helsinki locations are the evaluate fold."""
    (root / "audio").mkdir(parents=True)
    (root / "evaluation_setup").mkdir()
    rows = _rows()
    stereo = np.zeros((800, 2), dtype=np.float32)  # 0.1 s at 8 kHz, binaural like the real set
    for filename, *_ in rows:
        sf.write(root / filename, stereo, 8000, subtype="PCM_24")
    meta = ["filename\tscene_label\tidentifier\tsource_label"] + ["\t".join(r) for r in rows]
    (root / "meta.csv").write_text("\n".join(meta) + "\n")
    train = [r for r in rows if r[2].startswith("barcelona")]
    test = [r for r in rows if r[2].startswith("helsinki")]
    ext = ".txt" if variant == "txt" else ".csv"
    header = [] if variant == "txt" else ["filename\tscene_label"]
    for name, part in (("train", train), ("evaluate", test)):
        lines = header + [f"{r[0]}\t{r[1]}" for r in part]
        (root / "evaluation_setup" / f"fold1_{name}{ext}").write_text("\n".join(lines) + "\n")
    (root / "evaluation_setup" / f"fold1_test{ext}").write_text("\n".join(([] if variant == "txt" else ["filename"]) + [r[0] for r in test]) + "\n")
    return root


@pytest.mark.parametrize("variant", ["txt", "csv"])
def test_load_tut2018_both_fold_variants(tmp_path, variant):
    data = load_tut2018(make_tut_folder(tmp_path / "tut", variant))
    assert set(data) == {"train", "test"}
    assert data["train"].num_rows == 20 and data["test"].num_rows == 20
    train = data["train"]
    assert train.features["scene"].names == list(TUT2018_SCENES)
    assert train.features["audio"] == AUDIO_FEATURE
    assert {"identifier", "city", "source_label", "filename", "duration"} <= set(train.column_names)
    assert set(train["city"]) == {"barcelona"} and set(data["test"]["city"]) == {"helsinki"}
    assert sorted(set(train["scene"])) == list(range(10))
    row = train[0]
    assert row["filename"].split("/")[1].startswith(TUT2018_SCENES[row["scene"]] + "-")
    assert row["duration"] == pytest.approx(0.1)
    decoded = load_audio(row["audio"])  # the path is absolute and decodable
    assert decoded.waveform.shape == (2, 800) and decoded.sampling_rate == 8000


def test_city_of():
    assert city_of("barcelona-0") == "barcelona"
    assert city_of("new-york-12") == "new-york"


def test_missing_files_are_reported_in_one_error(tmp_path):
    root = make_tut_folder(tmp_path / "tut")
    (root / "evaluation_setup" / "fold1_evaluate.txt").unlink()
    (root / "audio" / "airport-barcelona-0-0-a.wav").unlink()
    (root / "audio" / "bus-barcelona-1-1-a.wav").unlink()
    with pytest.raises(TUT2018LayoutError) as error:
        load_tut2018(root)
    # the fold file is reported first; fix it, and both audio files come in one error
    assert "fold1_evaluate" in str(error.value)
    (root / "evaluation_setup" / "fold1_evaluate.txt").write_text("audio/airport-helsinki-0-0-a.wav\tairport\n")
    with pytest.raises(TUT2018LayoutError) as error:
        load_tut2018(root)
    message = str(error.value)
    assert "audio file missing (2)" in message
    assert "airport-barcelona-0-0-a.wav" in message and "bus-barcelona-1-1-a.wav" in message


def test_missing_meta_and_folds_listed_together(tmp_path):
    root = make_tut_folder(tmp_path / "tut")
    (root / "meta.csv").unlink()
    (root / "evaluation_setup" / "fold1_train.txt").unlink()
    with pytest.raises(TUT2018LayoutError) as error:
        load_tut2018(root)
    assert len(error.value.problems) == 2
    assert "meta.csv: missing" in str(error.value) and "fold1_train" in str(error.value)


@pytest.mark.parametrize(
    "corrupt, expected",
    [
        (lambda r: _edit(r / "evaluation_setup" / "fold1_train.txt", "airport\n", "park\n", 1), "scene differs"),
        (lambda r: _edit(r / "meta.csv", "\tairport\t", "\tbeach\t", 1), "unknown scene"),
        (lambda r: _append(r / "evaluation_setup" / "fold1_evaluate.txt", "audio/airport-barcelona-0-0-a.wav\tairport\n"), "both train and evaluate"),
        (lambda r: _append(r / "evaluation_setup" / "fold1_train.txt", "audio/nowhere.wav\tpark\n"), "not in meta.csv"),
        (lambda r: (r / "audio" / "park-barcelona-4-0-a.wav").write_bytes(b"not audio"), "unreadable"),
    ],
)
def test_inconsistent_layout(tmp_path, corrupt, expected):
    root = make_tut_folder(tmp_path / "tut")
    corrupt(root)
    with pytest.raises(TUT2018LayoutError, match=expected):
        load_tut2018(root)


def _edit(path, old, new, count):
    path.write_text(path.read_text().replace(old, new, count))


def _append(path, text):
    with open(path, "a") as handle:
        handle.write(text)


def test_group_split_keeps_groups_apart_and_is_seeded():
    rng = np.random.default_rng(0)
    groups = [f"city{c}-{g}" for c in range(3) for g in range(20) for _ in range(rng.integers(5, 15))]
    strata = [g.split("-")[1] for g in groups]  # stratum = location number mod nothing: 20 strata, 3 groups each
    train, test = group_split(groups, strata, test_size=0.3, seed=1)
    assert len(train) + len(test) == len(groups)
    assert not {groups[i] for i in train} & {groups[i] for i in test}
    assert 0.15 < len(test) / len(groups) < 0.45
    again = group_split(groups, strata, test_size=0.3, seed=1)
    assert np.array_equal(again[1], test)
    assert not np.array_equal(group_split(groups, strata, test_size=0.3, seed=2)[1], test)
    with pytest.raises(ValueError, match="test_size"):
        group_split(groups, test_size=1.5)


def make_hub_mirror(root):
    """The wetdog mirror's layout: one train parquet with an `Audio` column declared in the metadata."""
    (root / "data").mkdir(parents=True)
    rows = [(f"audio/{scene}-{city}-{loc}-0-a.wav", scene, f"{city}-{s * 10 + loc}", "a")
            for s, scene in enumerate(TUT2018_SCENES) for city in CITIES for loc in range(5)]  # fmt: skip
    wav = encode_wav(np.zeros((2, 80), dtype=np.float32), 8000)
    table = pa.table(
        {
            "audio": pa.array([{"bytes": wav, "path": r[0].split("/")[1]} for r in rows], pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            "scene_label": [r[1] for r in rows],
            "identifier": [r[2] for r in rows],
            "source_label": [r[3] for r in rows],
        }
    )
    features = {
        "audio": {"_type": "Audio", "sampling_rate": 48000},
        "scene_label": {"dtype": "string", "_type": "Value"},
        "identifier": {"dtype": "string", "_type": "Value"},
        "source_label": {"dtype": "string", "_type": "Value"},
    }
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    pq.write_table(table, root / "data" / "train-00000-of-00001.parquet")
    return root


def test_hub_mirror_split_by_location(tmp_path):
    root = make_hub_mirror(tmp_path / "mirror")
    data = load_tut2018_hub(str(root), seed=0, cache_dir=str(tmp_path / "cache"))
    train, test = data["train"], data["test"]
    assert train.num_rows + test.num_rows == 100
    assert not set(train["identifier"]) & set(test["identifier"])
    assert train.features["scene"].names == list(TUT2018_SCENES)
    assert train.features["audio"] == AUDIO_FEATURE
    assert test.num_rows == 30  # 3 of 10 locations per scene
    assert set(test["scene"]) == set(range(10))  # stratified: every scene on both sides
    assert load_audio(test[0]["audio"]).waveform.shape == (2, 80)  # bytes survive, decodable without torchcodec
    again = load_tut2018_hub(str(root), seed=0, cache_dir=str(tmp_path / "cache"))
    assert [a["path"] for a in again["test"]["audio"]] == [a["path"] for a in test["audio"]]


def place_split(places: list[str]) -> datasets.Dataset:
    """A split of a saved data set whose scene labels are strings in a column `place`."""
    features = datasets.Features({"audio": AUDIO_FEATURE, "place": datasets.Value("string")})
    return datasets.Dataset.from_dict({"audio": [{"bytes": None, "path": "x.wav"}] * len(places), "place": places}, features=features)


def test_scene_source_dispatch(tmp_path):
    tut = make_tut_folder(tmp_path / "tut")
    assert load_scene_source(str(tut))["train"].num_rows == 20

    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": place_split(["park", "bus", "park"]), "validation": place_split(["bus", "tram"])}).save_to_disk(str(saved))
    data = load_scene_source(str(saved), label_column="place")
    assert set(data) == {"train", "test"}
    assert data["train"].features["scene"].names == ["bus", "park", "tram"]
    assert list(data["test"]["scene"]) == [0, 2]
    with pytest.raises(ValueError, match="asc_label_column"):
        load_scene_source(str(saved), label_column="nope")

    tree = tmp_path / "tree"
    for split_name, scene in (("train", "park"), ("train", "bus"), ("test", "park")):
        (tree / split_name / scene).mkdir(parents=True, exist_ok=True)
        sf.write(tree / split_name / scene / "clip.wav", np.zeros(80, dtype=np.float32), 8000)
    data = load_scene_source(str(tree))
    assert data["train"].features["scene"].names == ["bus", "park"] and data["test"].num_rows == 1
    assert load_scene_audiofolder(tree)["train"].num_rows == 2

    with pytest.raises(ValueError, match="not a folder"):
        load_scene_source(str(tmp_path / "absent"))


# --- scene names and classes a split lacks; a byte-order mark (issue 28.5, 28.9) -------------------------------


def make_tree(root, layout):
    """An audiofolder tree: `layout` maps split -> scene folder names, one tiny WAV each."""
    for split_name, scenes in layout.items():
        for scene in scenes:
            (root / split_name / scene).mkdir(parents=True, exist_ok=True)
            sf.write(root / split_name / scene / "clip.wav", np.zeros(80, dtype=np.float32), 8000)
    return root


def test_scene_names_differing_only_in_case_or_spaces_are_an_error_naming_them(tmp_path):
    tree = make_tree(tmp_path / "tree", {"train": ["Park", "park", "bus"], "test": ["park ", "bus"]})
    with pytest.raises(ValueError, match=r"differ only in case.*'Park', 'park', 'park '.*give each scene one spelling"):
        load_scene_audiofolder(tree)
    with pytest.raises(ValueError) as caught:  # through --asc_dataset: the names are the problem, not the layout
        load_scene_source(str(tree))
    assert "differ only in case" in str(caught.value) and "not a TUT 2018" not in str(caught.value)
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": place_split(["Bus", "park"]), "test": place_split(["bus", "park"])}).save_to_disk(str(saved))
    with pytest.raises(ValueError, match=r"saved\[train\] column 'place'.*'Bus', 'bus'"):
        load_scene_source(str(saved), label_column="place")


def test_a_class_missing_from_a_split_is_named_with_the_split(tmp_path, caplog):
    tree = make_tree(tmp_path / "tree", {"train": ["bus", "park"], "test": ["bus", "tram"]})
    with caplog.at_level("WARNING"):
        data = load_scene_audiofolder(tree)
    assert data["train"].features["scene"].names == ["bus", "park", "tram"]
    assert "no clip in the train split, which the model cannot learn: 'tram' (clips in: test)" in caplog.text
    assert "['park'] have no clip in the test split" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        load_scene_audiofolder(make_tree(tmp_path / "full", {"train": ["bus", "park"], "test": ["bus", "park"]}))
    assert "no clip" not in caplog.text


def test_the_validation_split_names_the_classes_it_cannot_hold(caplog):
    from sceneevent.data.splits import carve_validation

    # bus from four locations; tram from one, which stays in training: no validation clip of tram
    features = datasets.Features({"scene": datasets.ClassLabel(names=["bus", "tram"]), "identifier": datasets.Value("string")})
    train = datasets.Dataset.from_dict({"scene": [0] * 8 + [1] * 4, "identifier": [f"bus-{i % 4}" for i in range(8)] + ["tram-0"] * 4},
                                       features=features)
    with caplog.at_level("WARNING"):
        _, validation = carve_validation(train, 0.25)
    assert set(validation["scene"]) == {0}
    assert "['tram'] have no clip in the validation split" in caplog.text


@pytest.mark.parametrize("variant", ["txt", "csv"])
def test_a_byte_order_mark_in_meta_or_fold_files_is_not_part_of_the_text(tmp_path, variant):
    root = make_tut_folder(tmp_path / "tut", variant)
    for file in [root / "meta.csv", *(root / "evaluation_setup").iterdir()]:
        file.write_bytes(b"\xef\xbb\xbf" + file.read_bytes())  # as Excel and Notepad save "UTF-8"
    data = load_tut2018(root)
    assert data["train"].num_rows == 20 and data["test"].num_rows == 20
