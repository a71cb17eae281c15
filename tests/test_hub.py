"""Model card and Hub push of a run folder: card contents, and a push that fails fast and changes nothing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sceneevent import LogMelFeatureExtractor, SceneEventConfig, SceneEventModel
from sceneevent.inference.hub import HubPushError, push_run_to_hub
from sceneevent.inference.model_card import CITATION, render_model_card, write_model_card

REPO_ROOT = Path(__file__).resolve().parents[1]
SCENES = ["airport", "park", "street_traffic"]
EVENTS = ["Speech", "Music", "Vehicle"]
FAKE_TOKEN = "hf_" + "a" * 34


def results_payload(subset: bool) -> dict:
    payload = {
        "config": {
            "alpha": 0.95, "asc_dataset": "/home/alice/data/TUT-urban-acoustic-scenes-2018-development",
            "aet_dataset": "/home/alice/subsets/audioset_k3_T11", "learning_rate": 0.001, "asc_batch_size": 64, "aet_batch_size": 128,
            "num_train_epochs": 12, "seed": 3, "feature_sampling_rate": 8000, "feature_clip_seconds": 2.0,
            "feature_num_mel_bins": 16, "hub_token": FAKE_TOKEN, "report_to": "none",
            "model_name_or_path": "someone/sceneevent-aet-pretrained",
            "encoder_pretrained": "/home/alice/weights/resnet18.safetensors",
        },
        "schema_version": 2,
        "alpha": 0.95,
        "seed": 3,
        "history": [{"epoch": 0, "asc_macro_accuracy": 0.5, "aet_lwlrap": 0.3}],
        "final": {"asc_macro_accuracy": 0.6125, "aet_lwlrap": 0.4375, "loss_asc": 1.1, "loss_aet": 0.2,
                  "best_epoch": 0, "selected_by": "val_asc_macro_accuracy", "val_asc_macro_accuracy": 0.58,
                  "last_epoch": {"epoch": 0}, "floor_asc_macro_accuracy": 0.65, "floor_c": 0.1},
        "steps": 10,
        "wall_time_seconds": 12.5,
        "data": {"scene_labels": SCENES, "event_labels": EVENTS, "rows": {}, "fingerprints": {}, "bad_audio": []},
        "environment": {},
    }
    if subset:
        payload["data"]["aet_subset"] = {"k": 3, "hours": 11.0, "strategy": "correlated", "seed": 7, "source": "someone/audioset"}
    return payload


def make_run(folder: Path, subset: bool = True) -> Path:
    config = SceneEventConfig(scene_labels=SCENES, event_labels=EVENTS, encoder="resnet10t", num_mel_bins=16, alpha=0.95)
    SceneEventModel(config).save_pretrained(folder)
    LogMelFeatureExtractor(num_mel_bins=16, sampling_rate=8000, clip_seconds=2.0, hop_length=160, n_fft=256).save_pretrained(folder)
    (folder / "results.json").write_text(json.dumps(results_payload(subset)))
    (folder / "checkpoints" / "step_10").mkdir(parents=True)
    (folder / "checkpoints" / "step_10" / "state.bin").write_bytes(b"\0" * 16)
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run"))


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    header, _, _ = card[4:].partition("\n---\n")
    return yaml.safe_load(header)


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path → sha256 of every file, hidden ones included."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_card_front_matter_holds_the_results(run_dir: Path, tmp_path: Path):
    path = write_model_card(run_dir, "me/sceneevent-test", output_path=tmp_path / "README.md")
    meta = front_matter(path.read_text())
    assert meta["library_name"] == "transformers"
    assert meta["license"] == "apache-2.0"
    assert "audio-classification" in meta["tags"]
    assert meta["datasets"] == ["someone/audioset"]  # local paths are not Hub ids
    (entry,) = meta["model-index"]
    assert entry["name"] == "me/sceneevent-test"
    metrics = {result["metrics"][0]["type"]: result["metrics"][0]["value"] for result in entry["results"]}
    assert metrics == {"accuracy": pytest.approx(0.6125), "lwlrap": pytest.approx(0.4375)}
    names = [result["metrics"][0]["name"] for result in entry["results"]]
    assert names == ["Scene macro-average accuracy (test)", "Event lwlrap (test)"]  # results schema 2: both on test
    assert meta["pipeline_tag"] == "audio-classification"
    assert meta["metrics"] == ["accuracy", "lwlrap"]
    assert meta["base_model"] == "someone/sceneevent-aet-pretrained"
    # The card's metadata is what huggingface_hub parses back.
    from huggingface_hub import ModelCard

    parsed = ModelCard(path.read_text()).data
    assert parsed.pipeline_tag == "audio-classification" and parsed.base_model == "someone/sceneevent-aet-pretrained"
    assert [(r.metric_type, r.metric_value) for r in parsed.eval_results] == [("accuracy", 0.6125), ("lwlrap", 0.4375)]


def test_card_says_how_the_model_was_selected(run_dir: Path):
    body = render_model_card(run_dir, "me/sceneevent-test").split("\n---\n", 1)[1]
    assert "| Event lwlrap (test) | 0.4375 |" in body and "| Scene macro-average accuracy (test) | 0.6125 |" in body
    assert "selected on the validation split by `val_asc_macro_accuracy` (0.58)" in body and "epoch 0" in body
    assert "| Its floor: logistic regression on per-mel mean and sd (test) | 0.65 |" in body
    assert "the network **does not clear it**" in body
    assert "started from the pretrained weights `resnet18.safetensors`" in body and "/home/alice/weights" not in body


def test_card_of_an_older_run_labels_event_lwlrap_as_validation(tmp_path: Path):
    run = make_run(tmp_path / "run")
    payload = json.loads((run / "results.json").read_text())
    del payload["schema_version"], payload["final"]["selected_by"]
    payload["config"]["model_name_or_path"] = str(tmp_path / "local_pretrained")  # a local folder is no base_model
    (run / "results.json").write_text(json.dumps(payload))
    card = render_model_card(run)
    meta = front_matter(card)
    assert meta["model-index"][0]["results"][1]["metrics"][0]["name"] == "Event lwlrap (validation)"
    assert "| Event lwlrap (validation) | 0.4375 |" in card and "base_model" not in meta


def test_card_sections(run_dir: Path):
    card = render_model_card(run_dir, "me/sceneevent-test")
    body = card.split("\n---\n", 1)[1]
    for heading in ("## Results", "## Labels", "## Event training data (AET subset)", "## Training settings",
                    "## Intended use and limits", "## How to use", "## Citation"):
        assert heading in body
    assert all(f"`{label}`" in body for label in SCENES + EVENTS)
    assert "| T (hours of audio) | 11 |" in body and "| Class selection strategy | correlated |" in body
    assert "| Subset seed | 7 |" in body and "alpha = 0.95" in body
    assert 'pipeline("audio-classification", model="me/sceneevent-test"' in body and "tag_events(" in body
    assert CITATION in body and "Matsoukas" in body


def test_card_without_subset_names_the_event_data(tmp_path: Path):
    run = make_run(tmp_path / "run", subset=False)
    card = render_model_card(run)
    assert "Event data set: `audioset_k3_T11`, k = 3 event classes" in card
    assert front_matter(card)["model-index"][0]["name"] == "run"


def test_card_has_no_secrets_or_home_paths(run_dir: Path):
    card = render_model_card(run_dir)
    assert FAKE_TOKEN not in card and "alice" not in card
    assert "TUT-urban-acoustic-scenes-2018-development" in card and "audioset_k3_T11" in card  # folder names stay


def test_card_needs_a_config(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        write_model_card(tmp_path)
    assert not (tmp_path / "README.md").exists()


def test_push_without_network_fails_fast_and_changes_nothing(run_dir: Path):
    before = snapshot(run_dir)
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": FAKE_TOKEN, "HF_HUB_OFFLINE": "0"}
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "push_to_hub.py"), str(run_dir), "--hub_model_id", "me/sceneevent-test"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    elapsed = time.monotonic() - started
    assert completed.returncode == 1, completed.stderr
    assert "cannot be reached" in completed.stderr and "127.0.0.1:9" in completed.stderr
    assert elapsed < 60  # interpreter start + imports; the network check itself is bounded at 10 s
    assert snapshot(run_dir) == before


@pytest.mark.parametrize(
    ("offline", "token", "message"),
    [(True, FAKE_TOKEN, "HF_HUB_OFFLINE"), (False, None, "no Hugging Face token")],
)
def test_push_refuses_offline_or_without_token(run_dir: Path, tmp_path: Path, monkeypatch, offline, token, message):
    from huggingface_hub import constants

    # huggingface_hub reads HF_HUB_OFFLINE and HF_HOME at import: set its resolved settings instead.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no_stored_token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    before = snapshot(run_dir)
    with pytest.raises(HubPushError, match=message):
        push_run_to_hub(run_dir, "me/x", token=token)
    assert snapshot(run_dir) == before


@pytest.mark.parametrize(
    ("repo_id", "error"),
    [("no-slash", ValueError), ("", ValueError)],
)
def test_push_rejects_bad_repo_ids_before_any_network(run_dir: Path, repo_id: str, error: type):
    with pytest.raises(error, match="user/name"):
        push_run_to_hub(run_dir, repo_id, token=FAKE_TOKEN)


def test_push_names_a_folder_without_weights(tmp_path: Path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "preprocessor_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="safetensors"):
        push_run_to_hub(tmp_path, "me/x", token=FAKE_TOKEN)


class FakeHubApi:
    """What `push_run_to_hub` calls on the Hub client; `upload_folder` keeps the files it was given."""

    def __init__(self, fail: bool = False):
        self.fail, self.uploaded, self.folder = fail, {}, None

    def create_repo(self, repo_id, **kwargs):
        pass

    def upload_folder(self, *, folder_path, **kwargs):
        if self.fail:
            raise ConnectionError("the Hub went away")
        self.folder = Path(folder_path)
        self.uploaded = {path.name: path.read_bytes() for path in self.folder.iterdir()}
        return type("CommitInfo", (), {"commit_url": "https://hub.test/me/x/commit/1"})()


@pytest.mark.parametrize("fail", [False, True])
def test_push_uploads_a_fresh_card_and_writes_it_only_after_success(tmp_path: Path, monkeypatch, fail: bool):
    import sceneevent.inference.hub as hub

    run = make_run(tmp_path / "run")
    (run / "README.md").write_text("an older card")
    api = FakeHubApi(fail)
    monkeypatch.setattr(hub, "_authenticated_api", lambda token: (api, FAKE_TOKEN))
    before = snapshot(run)
    if fail:
        with pytest.raises(HubPushError, match="the Hub went away"):
            push_run_to_hub(run, "me/x")
        assert snapshot(run) == before
        return
    assert push_run_to_hub(run, "me/x") == "https://hub.test/me/x/commit/1"
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= set(api.uploaded)
    assert not {"results.json", "checkpoints"} & set(api.uploaded)
    assert api.uploaded["README.md"] == (run / "README.md").read_bytes() == render_model_card(run, "me/x").encode()
    assert api.uploaded["model.safetensors"] == (run / "model.safetensors").read_bytes()
    assert not api.folder.exists()  # the staging folder is removed


# ---------------------------------------------------------------------------------------------- issue 28

EVIL = "evil\n# heading <script>alert(1)</script> [x](javascript:alert(1)) | cell"


def test_card_shows_run_text_as_text_never_as_markup(tmp_path: Path):
    import re

    run = make_run(tmp_path / 'my "run"\n# Owned <script>x')  # a folder name may hold all of these
    payload = json.loads((run / "results.json").read_text())
    payload["data"]["aet_subset"]["strategy"] = EVIL
    payload["config"]["lr_scheduler_type"] = "cosine | 1 |\n## injected"
    payload["final"]["selected_by"] = "val`<b>x</b>"
    (run / "results.json").write_text(json.dumps(payload))
    config = json.loads((run / "config.json").read_text())
    config["event_labels"] = ["Speech", "<img src=x onerror=alert(1)>", "a\n## h", "tick`tock"]
    config["encoder"] = "resnet18 <script>"
    (run / "config.json").write_text(json.dumps(config))
    body = render_model_card(run).split("\n---\n", 1)[1]
    outside_code = re.sub(r"```.*?```", "", body, flags=re.DOTALL)
    headings = [line for line in outside_code.splitlines() if line.startswith("#")]
    assert headings == ['# my "run" # Owned \\<script>x', "## Results", "## Labels", "## Event training data (AET subset)",
                        "## Training settings", "## Intended use and limits", "## How to use", "## Citation"]
    assert "| Class selection strategy | evil # heading \\<script>alert(1)\\</script> \\[x\\](javascript:alert(1)) \\| cell |" in body
    assert "| Schedule | cosine \\| 1 \\| ## injected |" in body
    for line in body.splitlines():  # every table row keeps its two cells
        if line.startswith("| "):
            assert len(re.findall(r"(?<!\\)\|", line)) == 3, line
    # Code spans hold the text literally (HTML inside one is not HTML); a backtick inside gets a longer fence.
    assert "`Speech`, `<img src=x onerror=alert(1)>`, `a ## h`, ``tick`tock``." in body
    assert "selected on the validation split by ``val`<b>x</b>``;" in body and "Encoder: `resnet18 <script>`" in body
    assert not re.search(r"(?<!\\)<(script|img)", re.sub(r"(`+).*?\1", "", outside_code))  # tags: only inside code


def test_card_code_snippets_hold_the_name_as_a_python_string(tmp_path: Path):
    import ast
    import re
    import shlex

    name = 'my "run"\\ it\'s\n# Owned'
    run = make_run(tmp_path / name)
    body = render_model_card(run).split("\n---\n", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", body, re.DOTALL)
    assert len(blocks) == 3
    for block in blocks:
        strings = {node.value for node in ast.walk(ast.parse(block)) if isinstance(node, ast.Constant)}
        assert name in strings  # the code parses and names the folder exactly
    (command,) = re.findall(r"`(python scripts/predict\.py [^`]*)`", body)
    assert shlex.split(command)[4] == name.replace("\n", " ")  # a code span cannot hold a line break


def test_card_of_ordinary_names_keeps_plain_python_strings(run_dir: Path):
    body = render_model_card(run_dir, "me/sceneevent-test")
    assert 'model = load_pipeline("me/sceneevent-test")' in body
    assert 'AutoModel.from_pretrained("me/sceneevent-test", trust_remote_code=True)' in body
    assert "`python scripts/predict.py recordings/ --model me/sceneevent-test --output_format json" in body


def test_push_uploads_only_the_model_files_never_locks_or_staging(tmp_path: Path, monkeypatch):
    import sceneevent.inference.hub as hub

    run = make_run(tmp_path / "run")
    (run / ".lock").write_text("")  # the training run's lock, beside the model files
    (run / ".model.safetensors.k3j2.tmp").write_bytes(b"half a model")  # a killed save's staging file
    (run / ".README.md.x1.tmp").write_text("half a card")
    (run / "model.safetensors.tmp").write_bytes(b"")
    (run / "._model.safetensors").write_bytes(b"macOS metadata")  # hidden names that the allowed patterns match
    (run / ".#modeling_sceneevent.py").write_text("an editor's lock")
    (run / ".run.q9.tmp").mkdir()  # a staging folder
    (run / ".run.q9.tmp" / "model.safetensors").write_bytes(b"staged")
    (run / "wandb").mkdir()
    (run / "wandb" / "run.py").write_text("# W&B's copy of code")
    (run / "train.log").write_text("log")
    api = FakeHubApi()
    monkeypatch.setattr(hub, "_authenticated_api", lambda token: (api, FAKE_TOKEN))
    push_run_to_hub(run, "me/x")
    code = {path.name for path in run.glob("*.py") if not path.name.startswith(".")}
    assert "modeling_sceneevent.py" in code  # the model's custom code ships with it
    assert set(api.uploaded) == {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} | code
    assert api.uploaded["model.safetensors"] == (run / "model.safetensors").read_bytes()
