"""The Hub path end to end, through a real Hub-protocol server on 127.0.0.1 (olah, offline mode).

Small copies of `agkphysics/AudioSet` and `wetdog/TUT-urban-acoustic-scenes-2018-development` in the
layout of their Hub repositories (tests/hub_repos.py) are served as git repositories; the clients run
in subprocesses with `HF_ENDPOINT` pointing at the server and a fresh `HF_HOME`, exactly as a user's
process would, so every file comes over HTTP: the loaders, a subset build, a two-step training from
both data sets, and `predict.py --model <hub id>` from the trained model pushed as a model repository.

The server comes from `.venv-olah/` (built by `.ci/run`, see tests/loopback_hub.py); without it these
tests are skipped, and under `CI=true` they fail.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from hub_repos import (AUDIOSET_EVENTS, AUDIOSET_ID, AUDIOSET_README, TIMM_WEIGHTS_ID, TUT2018_ID, build_audioset_repo,
                       build_timm_weights_repo, build_tut2018_repo, tut2018_rows)
from loopback_hub import INSTALL_HINT, LoopbackHub, free_port, olah_executable
from tool_gate import tool_missing

ROOT = Path(__file__).resolve().parents[1]
MODEL_ID = "sceneevent-tests/tiny-joint"
TINY_FEATURES = ["--sampling_rate", "16000", "--clip_seconds", "0.25", "--num_mel_bins", "32"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    executable = olah_executable()
    if executable is None:
        tool_missing("the loopback Hub server (olah, in its own venv .venv-olah/)", INSTALL_HINT)
    work = tmp_path_factory.mktemp("loopback_hub")
    server = LoopbackHub(executable, work / "server").start()
    try:
        server.publish("dataset", AUDIOSET_ID, build_audioset_repo(work / "audioset"))
        server.publish("dataset", TUT2018_ID, build_tut2018_repo(work / "tut2018"))
        yield server
    finally:
        server.stop()


def run_client(hub: LoopbackHub, hf_home: Path, args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python ARGS` as a Hub client of `hub`; fail with its output and the server's log if it fails."""
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=hub.client_env(hf_home), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{args[:2]} exited {done.returncode}\n{done.stderr[-4000:]}\n--- server log ---\n{hub.log_tail(2000)}"
    return done


def run_python(hub: LoopbackHub, hf_home: Path, code: str) -> dict:
    """Run `code` as a Hub client; it prints one JSON object on its last stdout line."""
    done = run_client(hub, hf_home, ["-c", textwrap.dedent(code)])
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_hub_api_serves_the_mirrored_repositories(hub, tmp_path):
    out = run_python(hub, tmp_path / "hf", f"""
        import json, os
        from huggingface_hub import HfApi, hf_hub_download, snapshot_download
        api = HfApi()
        info = api.dataset_info({AUDIOSET_ID!r}, revision="main")
        files = api.list_repo_files({TUT2018_ID!r}, repo_type="dataset")
        readme = open(hf_hub_download({AUDIOSET_ID!r}, "README.md", repo_type="dataset")).read()
        local = snapshot_download({AUDIOSET_ID!r}, repo_type="dataset", allow_patterns=["data/eval/*"])
        print(json.dumps({{"sha": info.sha, "configs": [c["config_name"] for c in info.card_data["configs"]],
                           "files": sorted(files), "readme": readme,
                           "snapshot": sorted(os.path.relpath(os.path.join(d, f), local) for d, _, fs in os.walk(local) for f in fs)}}))
    """)
    assert out["sha"] == hub.commits[AUDIOSET_ID]
    assert out["configs"] == ["balanced", "unbalanced", "full"]
    assert out["files"] == ["README.md", "data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]
    assert out["readme"] == AUDIOSET_README
    # The snapshot folder also holds README.md, downloaded before by hf_hub_download; no training shard came.
    assert out["snapshot"] == ["README.md", "data/eval/00.parquet"]


def test_loaders_read_both_data_sets_through_the_server(hub, tmp_path):
    sha = hub.commits[AUDIOSET_ID]
    out = run_python(hub, tmp_path / "hf", f"""
        import json
        from sceneevent.data.audio import load_audio
        from sceneevent.data import build_aet_subset, load_audioset
        from sceneevent.data.scenes import load_tut2018_hub
        from sceneevent.data.sources import load_event_source, load_scene_source

        balanced = load_audioset({AUDIOSET_ID!r})
        names = balanced["train"].features["events"].feature.names
        first = balanced["train"][0]
        decoded = load_audio(first["audio"])
        full = load_audioset({AUDIOSET_ID!r}, config="full", revision={sha!r})
        unbalanced = load_audioset({AUDIOSET_ID!r}, config="unbalanced")
        subset = build_aet_subset(source={AUDIOSET_ID!r}, k=2, seed=0)
        events = load_event_source({AUDIOSET_ID!r})
        tut = load_tut2018_hub({TUT2018_ID!r}, seed=0)
        scenes = load_scene_source({TUT2018_ID!r})
        print(json.dumps({{
            "rows": {{name: {{s: d[s].num_rows for s in d}} for name, d in
                     (("balanced", balanced), ("full", full), ("unbalanced", unbalanced), ("subset", subset), ("events", events),
                      ("tut", tut), ("scenes", scenes))}},
            "first_events": [names[i] for i in first["events"]],
            "first_id": first["video_id"],
            "decoded": [decoded.sampling_rate, list(decoded.waveform.shape)],
            "subset_events": subset["train"].features["events"].feature.names,
            "subset_held_out": [sorted(subset["validation"]["video_id"]), sorted(subset["test"]["video_id"])],
            "tut_locations": [sorted(set(tut["train"]["identifier"])), sorted(set(tut["test"]["identifier"]))],
            "tut_scenes": tut["train"].features["scene"].names,
        }}))
    """)
    rows = out["rows"]
    assert rows["balanced"] == {"train": 32, "eval": 24}
    assert rows["full"] == {"train": 40, "eval": 24}
    assert rows["unbalanced"] == {"train": 8, "eval": 24}
    events = rows["events"]  # AudioSet's eval list becomes the held-out event splits
    assert events["train"] == 32 and sum(n for split, n in events.items() if split != "train") == 24
    assert out["first_id"] == "b0000xxxxxx" and out["first_events"][0] == "Speech"
    assert out["decoded"] == [48000, [1, 12000]]  # FLAC bytes came through the server intact
    assert len(out["subset_events"]) == 2 and set(out["subset_events"]) <= set(AUDIOSET_EVENTS)
    validation, test = out["subset_held_out"]
    assert validation and test and not set(validation) & set(test)
    assert rows["subset"]["validation"] + rows["subset"]["test"] <= 24
    train_locations, test_locations = out["tut_locations"]
    assert rows["tut"]["train"] + rows["tut"]["test"] == len(tut2018_rows()) == 80
    assert not set(train_locations) & set(test_locations)
    assert rows["scenes"] == rows["tut"]
    assert len(out["tut_scenes"]) == 10


@pytest.mark.slow
def test_train_from_the_hub_and_predict_with_the_pushed_model(hub, tmp_path):
    from huggingface_hub.utils import filter_repo_objects

    from sceneevent.inference.hub import IGNORE_PATTERNS, UPLOAD_PATTERNS
    from sceneevent.inference.model_card import write_model_card

    hf_home = tmp_path / "hf"
    subset = tmp_path / "aet_subset"
    run_client(hub, hf_home, ["scripts/build_aet_subset.py", "--source", AUDIOSET_ID, "--k", "2", "--seed", "0", "--output_dir", str(subset)])
    assert (subset / "dataset_dict.json").is_file()

    published = build_timm_weights_repo(tmp_path / "weights")
    weights_sha = hub.publish("model", TIMM_WEIGHTS_ID, published)
    run = tmp_path / "run"
    run_client(hub, hf_home, [
        "scripts/train_joint.py", "--asc_dataset", TUT2018_ID, "--aet_dataset", str(subset), "--output_dir", str(run),
        "--num_train_epochs", "1", "--max_train_steps", "2", "--asc_batch_size", "8", "--aet_batch_size", "8", "--eval_batch_size", "32",
        "--encoder", "test_resnet", "--encoder_pretrained", TIMM_WEIGHTS_ID, "--learning_rate", "0.001", "--report_to", "none",
        *TINY_FEATURES,
    ])  # fmt: skip
    results = json.loads((run / "results.json").read_text())
    assert "final" in results and results["config"]["encoder_pretrained"] == TIMM_WEIGHTS_ID
    check_encoder_started_from(published / "model.safetensors", hf_home, weights_sha, run)

    # What push_run_to_hub uploads (the same file patterns and a fresh card), committed to the mirror.
    write_model_card(run, MODEL_ID)
    staged = tmp_path / "staged"
    staged.mkdir()
    names = [path.name for path in run.iterdir() if path.is_file()]
    for name in filter_repo_objects(names, allow_patterns=UPLOAD_PATTERNS, ignore_patterns=IGNORE_PATTERNS):
        shutil.copy2(run / name, staged / name)
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= {p.name for p in staged.iterdir()}
    sha = hub.publish("model", MODEL_ID, staged)

    clip = tmp_path / "street.wav"
    sf.write(clip, 0.1 * np.random.default_rng(0).standard_normal((24000, 2)).astype(np.float32), 48000)
    predictions = tmp_path / "predictions.json"
    run_client(hub, tmp_path / "hf_user", [
        "scripts/predict.py", str(clip), "--model", MODEL_ID, "--output_format", "json", "--output_file", str(predictions),
        "--device", "cpu", "--disable_tqdm",
    ])  # fmt: skip
    document = json.loads(predictions.read_text())
    config = json.loads((run / "config.json").read_text())
    (prediction,) = document["files"]
    assert document["model"] == MODEL_ID and not document["failures"] and prediction["source"].endswith("street.wav")
    assert prediction["aggregate"]["scene"] in config["id2label"].values()
    assert {event["label"] for event in prediction["aggregate"]["events"]} <= set(config["event_labels"])
    # The weights predict.py used came over HTTP into the user's cache, byte for byte the trained ones.
    (served,) = (tmp_path / "hf_user").glob(f"hub/models--{MODEL_ID.replace('/', '--')}/snapshots/{sha}/model.safetensors")
    assert served.read_bytes() == (run / "model.safetensors").read_bytes()

    card = run_python(hub, tmp_path / "hf_user", f"""
        import json
        from huggingface_hub import HfApi
        info = HfApi().model_info({MODEL_ID!r}, revision="main")
        print(json.dumps({{"sha": info.sha, "card": info.card_data.to_dict()}}))
    """)
    assert card["sha"] == sha
    assert card["card"]["pipeline_tag"] == "audio-classification" and card["card"]["base_model"] == TIMM_WEIGHTS_ID
    assert card["card"]["datasets"] == sorted([AUDIOSET_ID, TUT2018_ID])  # the subset folder records its Hub source
    names = [result["metrics"][0]["name"] for result in card["card"]["model-index"][0]["results"]]
    assert names == ["Scene macro-average accuracy (test)", "Event lwlrap (test)"]


def check_encoder_started_from(published: Path, hf_home: Path, sha: str, run: Path) -> None:
    """The run fetched the published timm weights over HTTP, loads them as timm adapts them, and trained 2 steps from them;
    its saved model loads without the Hub (this process is offline: conftest)."""
    from safetensors.torch import load_file

    from sceneevent import SceneEventConfig, SceneEventModel

    (fetched,) = hf_home.glob(f"hub/models--{TIMM_WEIGHTS_ID.replace('/', '--')}/snapshots/{sha}/model.safetensors")
    assert fetched.read_bytes() == published.read_bytes()
    weights = load_file(published)
    model = SceneEventModel(SceneEventConfig(encoder="test_resnet", encoder_pretrained=TIMM_WEIGHTS_ID, num_mel_bins=32))
    model.load_pretrained_encoder(fetched)
    loaded = model.encoder.state_dict()
    assert set(loaded) == {key for key in weights if not key.startswith("fc.")}  # the classifier dropped
    for key, value in loaded.items():
        # timm's one-channel stem: the RGB filters summed; every other tensor as published
        expected = weights[key].sum(dim=1, keepdim=True) if key == "conv1.0.weight" else weights[key]
        assert torch.equal(value, expected), key
    trained = SceneEventModel.from_pretrained(run)
    assert trained.config.encoder_pretrained == TIMM_WEIGHTS_ID
    moved = max(float((trained.encoder.state_dict()[key] - weights[key]).abs().max()) for key in ("layer1.0.conv1.weight", "layer4.0.conv2.weight"))
    assert 0.0 < moved < 0.01  # two AdamW steps of lr 1e-3 from the published weights (a fresh start differs by ~0.1)


def test_an_unreachable_hub_for_encoder_weights_is_a_clear_error(monkeypatch):
    import huggingface_hub.utils._http

    from sceneevent.models.modeling_sceneevent import encoder_weights_file

    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(huggingface_hub.utils._http.time, "sleep", lambda seconds: None)  # its 5 retries, without the waits
    with pytest.raises(OSError, match=f"encoder_pretrained '{TIMM_WEIGHTS_ID}': could not fetch its weights from the Hub at {endpoint}"):
        encoder_weights_file(TIMM_WEIGHTS_ID)


def test_encoder_weights_that_cannot_be_had_fail_the_run_before_any_data_work(tmp_path):
    from sceneevent.training.arguments import DataArguments, JointTrainingArguments, ModelArguments, parse_args
    from sceneevent.training.loop import train

    store = tmp_path / "store"
    args = parse_args((ModelArguments, DataArguments, JointTrainingArguments),
                      ["--encoder_pretrained", TIMM_WEIGHTS_ID, "--encoder", "test_resnet", "--output_dir", str(tmp_path / "run"),
                       "--feature_store_dir", str(store), "--report_to", "none", *TINY_FEATURES])
    with pytest.raises(OSError, match="could not fetch its weights from the Hub"):  # the tests' Hub is offline (conftest)
        train(*args)
    assert not store.exists() and not (tmp_path / "run" / "results.json").exists()


def test_server_is_stopped_by_its_pid(tmp_path):
    executable = olah_executable()
    if executable is None:
        tool_missing("the loopback Hub server (olah, in its own venv .venv-olah/)", INSTALL_HINT)
    server = LoopbackHub(executable, tmp_path).start()
    process = server.process
    assert process.poll() is None
    server.stop()
    assert process.poll() is not None and server.process is None
    import socket

    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", server.port)) != 0  # nothing listens any more
