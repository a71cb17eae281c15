"""AudioSet: ontology, official segment lists + audio folder (missing audio dropped and counted), the
Hub parquet layout (Audio column read without torchcodec), parquet files, and the errors."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from sceneevent.data.audio import AUDIO_FEATURE, load_audio
from sceneevent.data.audioset import (
    ONTOLOGY_DIR,
    AudioSetSourceError,
    UnknownEventError,
    audioset_ontology,
    index_audio_files,
    load_audioset,
    read_segments_csv,
    resolve_event_names,
)
from sceneevent.data.sources import load_event_source

SPEECH, MUSIC, DOG, CAR = "/m/09x0r", "/m/04rlf", "/m/0bt9lr", "/m/0k4j"
HEADER = "# Segments csv created Sun Mar  5 10:54:31 2017\n# num_ytids=3, num_segs=3\n# YTID, start_seconds, end_seconds, positive_labels\n"


def test_ontology():
    ontology = audioset_ontology()
    assert len(ontology) == 527 and len(set(ontology.mids)) == 527
    assert ontology.names[0] == "Speech" and ontology.mid_to_index[MUSIC] == ontology.name_to_index["Music"] == 137
    assert ontology.class_label().num_classes == 527


def test_real_segment_lists_parse():
    balanced = read_segments_csv(ONTOLOGY_DIR / "balanced_train_segments.csv")
    assert len(balanced) == 22160
    assert balanced.loc[0, "video_id"] == "--PJHxphWEs" and balanced.loc[0, "labels"] == [SPEECH, "/t/dd00088"]
    assert (balanced["end_seconds"] - balanced["start_seconds"]).max() == pytest.approx(10.0)
    # the header's num_positive_labels=52882 is the total label count
    assert balanced["labels"].map(len).sum() == 52882


def test_resolve_event_names_suggests_close_matches():
    names = audioset_ontology().names
    assert resolve_event_names(["Speech", "music"], names) == [0, 137]
    with pytest.raises(UnknownEventError) as error:
        resolve_event_names(["Speach", "Dgo barking", "Music"], names)
    assert "'Speach': did you mean 'Speech'" in str(error.value) and "'Dgo barking'" in str(error.value)


def _write(path, rows):
    path.write_text(HEADER + "".join(f'{v}, {s:.3f}, {s + 10:.3f}, "{",".join(m)}"\n' for v, s, m in rows))


def make_segment_folder(root):
    """Official CSVs + audio/ in every naming form; 2 train and 1 eval segments have no audio."""
    audio = root / "audio" / "bal"
    audio.mkdir(parents=True)
    train = [("aaaaaaaaaaa", 30.0, [SPEECH]), ("Ybbbbbbbbbb", 0.0, [MUSIC, SPEECH]), ("c_c-ccccccc", 10.0, [DOG]),
             ("ddddddddddd", 20.0, [CAR]), ("missing0001", 0.0, [SPEECH]), ("missing0002", 0.0, [MUSIC])]  # fmt: skip
    evaluation = [("eeeeeeeeeee", 0.0, [SPEECH, DOG]), ("fffffffffff", 40.0, [MUSIC]), ("missing0003", 0.0, [CAR])]
    _write(root / "balanced_train_segments.csv", train)
    _write(root / "eval_segments.csv", evaluation)
    tone = np.zeros(80, dtype=np.float32)
    sf.write(audio / "aaaaaaaaaaa.wav", tone, 8000)  # <id>.wav
    sf.write(audio / "YYbbbbbbbbbb.flac", tone, 8000)  # Y<id>.flac, id itself starts with Y
    sf.write(audio / "c_c-ccccccc_10.000.wav", tone, 8000)  # <id>_<start>.wav, id contains _ and -
    sf.write(audio / "ddddddddddd_20000_30000.ogg", tone, 8000)  # <id>_<start ms>_<end ms>.ogg
    sf.write(audio / "ddddddddddd_50.wav", tone, 8000)  # another segment of the same video: not matched
    sf.write(audio / "eeeeeeeeeee.wav", tone, 8000)
    sf.write(root / "audio" / "Yfffffffffff_40.wav", tone, 8000)
    (root / "audio" / "notes.txt").write_text("ignored")
    return root


def test_index_audio_files_forms(tmp_path):
    found = index_audio_files(make_segment_folder(tmp_path / "as") / "audio")
    assert found["Ybbbbbbbbbb"][0][0] is None
    assert found["c_c-ccccccc"][0][0] == 10.0
    assert sorted(v for v, _ in found["ddddddddddd"]) == [50.0, 20000.0]


def test_segment_folder_drops_and_counts_missing_audio(tmp_path, caplog):
    root = make_segment_folder(tmp_path / "as")
    data, info = load_audioset(root, return_info=True)
    assert set(data) == {"train", "eval"}
    assert info.missing_audio == {"train": 2, "eval": 1} and info.total_missing == 3
    assert info.rows == {"train": 4, "eval": 2}
    assert sorted(info.missing_examples["train"]) == ["missing0001", "missing0002"]
    assert "have no audio file" in caplog.text
    train = data["train"]
    assert train.features["audio"] == AUDIO_FEATURE
    names = train.features["events"].feature.names
    assert len(names) == 527
    by_id = {r["video_id"]: r for r in train}
    assert [names[i] for i in by_id["Ybbbbbbbbbb"]["events"]] == ["Music", "Speech"]
    assert by_id["ddddddddddd"]["audio"]["path"].endswith("ddddddddddd_20000_30000.ogg")
    assert by_id["aaaaaaaaaaa"]["duration"] == 10.0
    assert load_audio(by_id["c_c-ccccccc"]["audio"]).sampling_rate == 8000


def test_segment_folder_errors(tmp_path):
    root = make_segment_folder(tmp_path / "as")
    with pytest.raises(AudioSetSourceError, match="unbalanced_train_segments.csv"):
        load_audioset(root, config="unbalanced")
    with pytest.raises(AudioSetSourceError, match="config='huge'"):
        load_audioset(root, config="huge")
    _write(root / "eval_segments.csv", [("eeeeeeeeeee", 0.0, ["/m/not_a_mid"])])
    with pytest.raises(AudioSetSourceError, match="not_a_mid"):
        load_audioset(root)
    (root / "eval_segments.csv").unlink()
    with pytest.raises(AudioSetSourceError, match="eval_segments.csv"):
        load_audioset(root)


def _audioset_parquet(path, ids, labels, human=None):
    flac = _flac()
    table = pa.table(
        {
            "video_id": ids,
            "audio": pa.array([{"bytes": flac, "path": f"audio/{v}.flac"} for v in ids], pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            "labels": labels,
            "human_labels": human or [[audioset_ontology().names[audioset_ontology().mid_to_index[m]] for m in row] for row in labels],
        }
    )
    features = {
        "video_id": {"dtype": "string", "_type": "Value"},
        "audio": {"_type": "Audio", "sampling_rate": 48000},
        "labels": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "List"},
        "human_labels": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "List"},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})}), path)


def _flac():
    import io

    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(160, dtype=np.float32), 16000, format="FLAC")
    return buffer.getvalue()


HUB_README = """---
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
---
"""


def make_hub_layout(root):
    """The `agkphysics/AudioSet` repository layout, locally: configs balanced/unbalanced, splits train/test."""
    _audioset_parquet(root / "data" / "bal_train" / "00.parquet", ["a", "b", "c"], [[SPEECH], [MUSIC, DOG], [CAR]])
    _audioset_parquet(root / "data" / "unbal_train" / "00.parquet", ["u"], [[DOG]])
    _audioset_parquet(root / "data" / "eval" / "00.parquet", ["e", "f"], [[SPEECH, MUSIC], [DOG]])
    (root / "README.md").write_text(HUB_README)
    return root


def test_hub_layout_parquet(tmp_path):
    root = make_hub_layout(tmp_path / "hub")
    data = load_audioset(str(root), cache_dir=str(tmp_path / "cache"))
    assert set(data) == {"train", "eval"} and data["train"].num_rows == 3 and data["eval"].num_rows == 2
    train = data["train"]
    assert set(train.column_names) == {"video_id", "audio", "events"}
    assert train.features["audio"] == AUDIO_FEATURE
    names = train.features["events"].feature.names
    assert [[names[i] for i in row] for row in train["events"]] == [["Speech"], ["Music", "Dog"], ["Car"]]
    decoded = load_audio(train[0]["audio"])  # FLAC bytes kept, decoded by soundfile
    assert decoded.sampling_rate == 16000 and decoded.waveform.shape == (1, 160)
    unbalanced = load_audioset(str(root), config="unbalanced", cache_dir=str(tmp_path / "cache"))
    assert list(unbalanced["train"]["video_id"]) == ["u"]


def test_parquet_files_and_event_source(tmp_path):
    _audioset_parquet(tmp_path / "train.parquet", ["a", "b"], [[SPEECH], [MUSIC]])
    _audioset_parquet(tmp_path / "eval.parquet", ["e"], [[DOG]])
    files = {"train": str(tmp_path / "train.parquet"), "eval": str(tmp_path / "eval.parquet")}
    data = load_audioset(files, cache_dir=str(tmp_path / "cache"))
    assert data["eval"]["events"][0] == [audioset_ontology().name_to_index["Dog"]]
    with pytest.raises(AudioSetSourceError, match="dict"):
        load_audioset([str(tmp_path / "train.parquet")])
    events = load_event_source(str(make_segment_folder(tmp_path / "as")))
    # The one evaluation split is cut into validation and test by video id: disjoint, together all of it.
    assert set(events) == {"train", "validation", "test"}
    assert sorted([*events["validation"]["video_id"], *events["test"]["video_id"]]) == ["eeeeeeeeeee", "fffffffffff"]


def test_unknown_mid_in_parquet(tmp_path):
    _audioset_parquet(tmp_path / "train.parquet", ["a"], [["/m/bogus"]], human=[["Bogus"]])
    _audioset_parquet(tmp_path / "eval.parquet", ["e"], [[DOG]])
    with pytest.raises(AudioSetSourceError, match="/m/bogus"):
        load_audioset({"train": str(tmp_path / "train.parquet"), "test": str(tmp_path / "eval.parquet")}, cache_dir=str(tmp_path / "cache"))

