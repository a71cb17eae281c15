"""Model cards and Hub uploads of finished run folders.

`write_model_card(run_dir)` renders README.md from the run's config.json and results.json.
`push_run_to_hub(run_dir, repo_id)` checks the token and the endpoint first (a few seconds at most),
then uploads weights, config, feature-extractor config, the custom code and the card. A push that
fails leaves the run folder exactly as it was: the card is rendered into a staging folder and is
written into the run folder only after the upload succeeded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from ..training.checkpointing import RESULTS_FILE, VALIDATION_SELECTION_SCHEMA
from ..io_utils import atomic_write_text, scrub_secrets

CARD_FILE = "README.md"
# What goes to the Hub: weights (safetensors only), configs, the custom code, the card.
UPLOAD_PATTERNS = ["*.safetensors", "model.safetensors.index.json", "config.json", "preprocessor_config.json", "*.py", CARD_FILE]
IGNORE_PATTERNS = ["checkpoints/*", "wandb/*", "*.tmp", ".*"]
# The auth check must answer in seconds: the Hub client itself waits forever by default.
AUTH_TIMEOUT_SECONDS = 10.0

CITATION = """@inproceedings{parikh2022impact,
  title     = {Impact of Acoustic Event Tagging on Scene Classification in a Multi-Task Learning Framework},
  author    = {Parikh, Rahil and Sundar, Harshavardhan and Sun, Ming and Wang, Chao and Matsoukas, Spyros},
  booktitle = {Proc. Interspeech 2022},
  year      = {2022},
}"""

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class HubPushError(RuntimeError):
    """A push that cannot start or did not finish (no token, no network, refused by the Hub)."""


# ---------------------------------------------------------------------------------------------- card


def write_model_card(run_dir: str | os.PathLike, repo_id: str | None = None, output_path: str | os.PathLike | None = None) -> Path:
    """Render the model card of `run_dir` and write it atomically.

    Args:
        run_dir: a run folder with config.json (and, normally, results.json).
        repo_id: the Hub name the card talks about (default: the folder's name).
        output_path: where to write (default: `run_dir/README.md`).

    Returns:
        The path written.
    """
    run_dir = Path(run_dir)
    path = Path(output_path) if output_path is not None else run_dir / CARD_FILE
    atomic_write_text(path, render_model_card(run_dir, repo_id))
    return path


def render_model_card(run_dir: str | os.PathLike, repo_id: str | None = None) -> str:
    """The model card (YAML front matter + Markdown) of `run_dir` as a string."""
    run_dir = Path(run_dir)
    config = _read_json(run_dir / "config.json", required=True)
    results = scrub_secrets(_read_json(run_dir / RESULTS_FILE, required=False) or {})
    preprocessor = _read_json(run_dir / "preprocessor_config.json", required=False) or {}
    name = repo_id or run_dir.resolve().name
    scenes = [config["id2label"][key] for key in sorted(config.get("id2label", {}), key=int)]
    events = list(config.get("event_labels", []))
    sections = [
        _front_matter(name, results, scenes, events),
        _intro_section(name, config, results),
        _results_section(results),
        _labels_section(scenes, events),
        _subset_section(results, events),
        _training_section(config, results, preprocessor),
        _use_section(),
        _how_to_section(name),
        f"## Citation\n\n```bibtex\n{CITATION}\n```\n",
    ]
    return scrub_secrets("\n".join(sections))


def _front_matter(name: str, results: dict, scenes: list[str], events: list[str]) -> str:
    """YAML metadata the Hub reads: task, library, license, data sets, metrics, base model, model-index.

    Evaluation results go into `model-index` (huggingface_hub's `EvalResult`), which the Hub shows on
    the model page. The newer `.eval_results/*.yaml` files are not written: each entry must name a
    Hub dataset registered as a Benchmark (with an `eval.yaml` and a `task_id`), and neither AudioSet
    nor TUT 2018 is one.
    """
    from huggingface_hub import EvalResult, ModelCardData

    run_config = results.get("config", {})
    final = results.get("final", {})
    asc_name, asc_id = _dataset_name(run_config.get("asc_dataset"), "acoustic scenes")
    aet_name, aet_id = _dataset_name(_subset(results).get("source") or run_config.get("aet_dataset"), "acoustic events")
    evaluations = []
    if final.get("asc_macro_accuracy") is not None:
        evaluations.append(EvalResult(
            task_type="audio-classification", task_name="Acoustic scene classification",
            dataset_type=asc_id or asc_name, dataset_name=asc_name,
            metric_type="accuracy", metric_name="Scene macro-average accuracy (test)", metric_value=float(final["asc_macro_accuracy"]),
        ))
    if final.get("aet_lwlrap") is not None:
        evaluations.append(EvalResult(
            task_type="audio-classification", task_name="Acoustic event tagging",
            dataset_type=aet_id or aet_name, dataset_name=aet_name,
            metric_type="lwlrap", metric_name=f"Event lwlrap ({_event_split(results)})", metric_value=float(final["aet_lwlrap"]),
        ))
    # Only Hub ids belong under `datasets` and `base_model`; local paths would leak the trainer's file system.
    hub_datasets = sorted({dataset_id for dataset_id in (asc_id, aet_id) if dataset_id})
    base_model = run_config.get("model_name_or_path")
    card = ModelCardData(
        library_name="transformers",
        pipeline_tag="audio-classification",
        license="apache-2.0",
        tags=["audio", "audio-classification", "acoustic-scene-classification", "audio-tagging",
              "multi-task-learning", "sceneevent", "custom_code"],
        datasets=hub_datasets or None,
        metrics=[metric for metric, key in (("accuracy", "asc_macro_accuracy"), ("lwlrap", "aet_lwlrap")) if final.get(key) is not None] or None,
        base_model=base_model if isinstance(base_model, str) and _is_hub_id(base_model) else None,
        model_name=name if evaluations else None,
        eval_results=evaluations or None,
    )
    return "---\n" + card.to_yaml() + "\n---\n"


def _event_split(results: dict) -> str:
    """Where `final.aet_lwlrap` was measured: the test split since results schema 2, validation before."""
    return "test" if results.get("schema_version", 1) >= VALIDATION_SELECTION_SCHEMA else "validation"


def _intro_section(name: str, config: dict, results: dict) -> str:
    alpha = results.get("alpha", config.get("alpha"))
    return (
        f"# {name}\n\n"
        "One network for **acoustic scene classification** (one scene per clip, softmax head) and "
        "**acoustic event tagging** (any number of events per clip, sigmoid head), trained jointly as in "
        "Parikh et al., *Impact of Acoustic Event Tagging on Scene Classification in a Multi-Task Learning "
        f"Framework* (Interspeech 2022), with the `sceneevent` code.\n\n"
        f"- Encoder: `{config.get('encoder', 'resnet18')}` (timm, one input channel) on log-mel spectrograms, "
        "shared by both heads.\n"
        f"- Loss: `alpha * L_AET + (1 - alpha) * L_ASC` with **alpha = {_fmt(alpha)}** "
        "(0 = scene task only, 1 = event task only).\n"
    )


def _results_section(results: dict) -> str:
    final = results.get("final", {})
    if not final:
        return "## Results\n\nNo results.json was found in the run folder: no evaluation figures to report.\n"
    rows = [
        ("Scene macro-average accuracy (test)", final.get("asc_macro_accuracy")),
        (f"Event lwlrap ({_event_split(results)})", final.get("aet_lwlrap")),
        ("Best epoch (model kept)", final.get("best_epoch")),
        ("Final training loss, scenes", final.get("loss_asc")),
        ("Final training loss, events", final.get("loss_aet")),
    ]
    table = "\n".join(f"| {label} | {_fmt(value)} |" for label, value in rows if value is not None)
    return f"## Results\n\n| Metric | Value |\n|---|---|\n{table}\n\n{_selection_note(results)}"


def _selection_note(results: dict) -> str:
    final = results.get("final", {})
    selected_by = final.get("selected_by")
    if selected_by and selected_by != "last_epoch":
        value = final.get(selected_by)
        shown = f" ({_fmt(value)})" if isinstance(value, (int, float)) else ""
        note = (f"The model kept is that of epoch {_fmt(final.get('best_epoch'))}, selected on the validation split by "
                f"`{selected_by}`{shown}; the test figures above played no part in that choice.")
    elif selected_by == "last_epoch":
        note = "The run had no validation split, so the model of the last epoch is kept; the figures above are on the test split."
    else:
        note = "The run did not record how the model kept was selected."
    return note + "\n"


def _labels_section(scenes: list[str], events: list[str]) -> str:
    return (
        "## Labels\n\n"
        f"**Scenes ({len(scenes)})**, the `audio-classification` labels (`config.id2label`): "
        f"{', '.join(f'`{label}`' for label in scenes)}.\n\n"
        f"**Events ({len(events)})**, the tagging head (`config.event_labels`): "
        f"{', '.join(f'`{label}`' for label in events)}.\n"
    )


def _subset_section(results: dict, events: list[str]) -> str:
    subset = _subset(results)
    if subset:
        rows = [
            ("k (event classes)", subset.get("k", len(events))),
            ("T (hours of audio)", subset.get("hours")),
            ("Class selection strategy", subset.get("strategy")),
            ("Subset seed", subset.get("seed")),
            ("Source", _display_source(subset.get("source"))),
        ]
        table = "\n".join(f"| {label} | {_fmt(value)} |" for label, value in rows)
        return f"## Event training data (AET subset)\n\n| Setting | Value |\n|---|---|\n{table}\n"
    source = _display_source(results.get("config", {}).get("aet_dataset"))
    return (
        "## Event training data (AET subset)\n\n"
        f"Event data set: `{source}`, k = {len(events)} event classes. The run recorded no subset "
        "description (hours T, selection strategy, seed), so these are not known.\n"
    )


def _training_section(config: dict, results: dict, preprocessor: dict) -> str:
    run_config = results.get("config", {})
    rows = [
        ("Scene data", _display_source(run_config.get("asc_dataset"))),
        ("Event data", _display_source(run_config.get("aet_dataset"))),
        ("alpha", results.get("alpha", config.get("alpha"))),
        ("Batch (scene + event clips)", _batch(run_config)),
        ("Learning rate", run_config.get("learning_rate")),
        ("Schedule", run_config.get("lr_scheduler_type")),
        ("Epochs", run_config.get("num_train_epochs")),
        ("Steps", results.get("steps")),
        ("SpecAugment / MixUp (scenes)", _pair(run_config.get("specaugment"), run_config.get("mixup"))),
        ("SpecAugment / MixUp (events)", _pair(run_config.get("aet_specaugment"), run_config.get("aet_mixup"))),
        ("Seed", results.get("seed", run_config.get("seed"))),
        ("Sampling rate (Hz)", preprocessor.get("sampling_rate", run_config.get("feature_sampling_rate"))),
        ("Clip length (s)", preprocessor.get("clip_seconds", run_config.get("feature_clip_seconds"))),
        ("Mel bins", preprocessor.get("num_mel_bins", run_config.get("feature_num_mel_bins"))),
        ("STFT n_fft / hop", _pair(preprocessor.get("n_fft"), preprocessor.get("hop_length"))),
        ("Wall time (s)", results.get("wall_time_seconds")),
    ]
    table = "\n".join(f"| {label} | {_fmt(value)} |" for label, value in rows if value is not None)
    return f"## Training settings\n\n| Setting | Value |\n|---|---|\n{table}\n"


def _use_section() -> str:
    return (
        "## Intended use and limits\n\n"
        "- Intended for research on acoustic scene classification and event tagging, and as a baseline "
        "for multi-task audio models. Inputs are mono log-mel spectrograms of fixed-length clips; other "
        "rates and channel counts are resampled and downmixed by the feature extractor.\n"
        "- The scene head only knows the scenes listed above and always picks one of them; the event head "
        "only knows the listed events. Recordings from other devices, cities or acoustic conditions than "
        "the training data can be classified much worse than the figures above.\n"
        "- Event scores are independent sigmoid outputs, not calibrated probabilities; pick thresholds on "
        "your own validation data.\n"
        "- Not for surveillance of people or any decision with legal or safety consequences. Figures come "
        "from one run with one seed; the paper reports means over four seeds.\n"
    )


def _how_to_section(name: str) -> str:
    return (
        "## How to use\n\n"
        "Scene classification with the `transformers` pipeline (the custom code ships with the model):\n\n"
        "```python\n"
        "import soundfile as sf\n"
        "from transformers import pipeline\n\n"
        f'classifier = pipeline("audio-classification", model="{name}", trust_remote_code=True)\n'
        'audio, rate = sf.read("recording.wav", dtype="float32", always_2d=True)\n'
        "# The pipeline takes mono audio (a file path would need ffmpeg); other rates are resampled.\n"
        'classifier({"array": audio.mean(axis=1), "sampling_rate": rate}, top_k=3)  # [{"label", "score"}], softmax\n'
        "```\n\n"
        "Event tagging and long recordings (cut into clip-length windows) with the `sceneevent` package:\n\n"
        "```python\n"
        "from sceneevent.inference import load_pipeline, predict, tag_events\n\n"
        f'model = load_pipeline("{name}")\n'
        'tag_events(model, "recording.wav", top_k=5)  # [{"label": event, "score": sigmoid score}, ...]\n'
        'prediction = predict(model, "long_recording.flac")  # per-window and aggregated scenes and events\n'
        "```\n\n"
        "or from the command line: `python scripts/predict.py recordings/ --model "
        f"{name} --output_format json --output_file predictions.json`.\n\n"
        "Without `sceneevent`, the event scores are `sigmoid(event_logits)` of the model output:\n\n"
        "```python\n"
        "import soundfile as sf, torch\n"
        "from transformers import AutoFeatureExtractor, AutoModel\n\n"
        f'model = AutoModel.from_pretrained("{name}", trust_remote_code=True).eval()\n'
        f'extractor = AutoFeatureExtractor.from_pretrained("{name}", trust_remote_code=True)\n'
        'audio, rate = sf.read("recording.wav", dtype="float32", always_2d=True)\n'
        "features = extractor(audio.T, sampling_rate=rate, return_tensors=\"pt\")\n"
        "with torch.no_grad():\n"
        "    scores = model(**features).event_logits.sigmoid()[0]\n"
        "events = {model.config.event_labels[i]: float(s) for i, s in enumerate(scores)}\n"
        "```\n"
    )


def _subset(results: dict) -> dict:
    subset = results.get("data", {}).get("aet_subset")
    return subset if isinstance(subset, dict) else {}


def _dataset_name(source: str | None, fallback: str) -> tuple[str, str | None]:
    """(display name, Hub id or None) of a data-set argument."""
    if not source:
        return fallback, None
    if source == "synthetic":
        return f"synthetic {fallback} (sceneevent, embedded)", None
    if _is_hub_id(source):
        return source, source
    return _display_source(source), None


def _is_hub_id(source: str) -> bool:
    """`user/name` that is not also a local path."""
    return bool(_HUB_ID.match(source)) and not os.path.exists(source)


def _display_source(source) -> str | None:
    # A local path shows as its last component only: cards are public, home folders are not.
    if not isinstance(source, str) or not source:
        return source
    if source == "synthetic" or _is_hub_id(source):
        return source
    return Path(source.rstrip("/\\")).name or source


def _batch(run_config: dict) -> str | None:
    if run_config.get("asc_batch_size") is None:
        return None
    return f"{run_config['asc_batch_size']} + {run_config.get('aet_batch_size')}"


def _pair(first, second) -> str | None:
    return None if first is None and second is None else f"{_fmt(first)} / {_fmt(second)}"


def _fmt(value) -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _read_json(path: Path, required: bool) -> dict | None:
    if not path.is_file():
        if required:
            raise FileNotFoundError(f"{path}: not found (is {path.parent} a saved sceneevent run folder?)")
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


# ---------------------------------------------------------------------------------------------- push


def push_run_to_hub(
    run_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload a run folder (weights, configs, custom code, a fresh model card) to the Hub.

    The token and the endpoint are checked first and fail within seconds. On any failure the run
    folder is left byte-for-byte as it was; after a successful upload its README.md is replaced by
    the card that was pushed.

    Args:
        run_dir: a finished run folder (config.json, model.safetensors, preprocessor_config.json).
        repo_id: `user/name` or `org/name` on the Hub; created if missing.
        private: create the repository as private (an existing repository keeps its visibility).
        revision: branch to push to, created from `main` if missing.
        token: a Hub token; default: `HF_TOKEN` or the stored login.

    Returns:
        The URL of the commit.

    Raises:
        HubPushError: no token, offline mode, the endpoint cannot be reached, or the Hub refused.
        FileNotFoundError: `run_dir` lacks a file the model needs.
    """
    run_dir = Path(run_dir)
    files = _upload_files(run_dir)
    if not repo_id or not _HUB_ID.match(repo_id):
        raise ValueError(f"--hub_model_id must look like 'user/name', got {repo_id!r}")
    api, token = _authenticated_api(token)
    staging = Path(tempfile.mkdtemp(prefix="sceneevent_push_"))
    try:
        _stage(files, staging)
        card = render_model_card(run_dir, repo_id)
        atomic_write_text(staging / CARD_FILE, card)
        url = _upload(api, staging, repo_id, private=private, revision=revision, token=token, message=commit_message)
        # Only now does the run folder change: it keeps the card that the Hub shows.
        atomic_write_text(run_dir / CARD_FILE, card)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return url


def _upload_files(run_dir: Path) -> list[Path]:
    """The files of `run_dir` that go to the Hub (top level only: no checkpoints, no W&B)."""
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    for required in ("config.json", "preprocessor_config.json"):
        if not (run_dir / required).is_file():
            raise FileNotFoundError(f"{run_dir / required}: not found; push a folder written by train_joint.py or save_pretrained")
    if not any(run_dir.glob("*.safetensors")):
        raise FileNotFoundError(f"{run_dir}: no *.safetensors weights (only safetensors are uploaded)")
    from huggingface_hub.utils import filter_repo_objects

    names = sorted(path.name for path in run_dir.iterdir() if path.is_file() and path.name != CARD_FILE)
    kept = filter_repo_objects(names, allow_patterns=UPLOAD_PATTERNS, ignore_patterns=IGNORE_PATTERNS)
    return [run_dir / name for name in kept]


def _authenticated_api(token: str | None):
    """An HfApi and the token it uses, after a bounded whoami call; HubPushError otherwise."""
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.utils import build_hf_headers, get_session

    if constants.HF_HUB_OFFLINE:
        raise HubPushError("cannot push: HF_HUB_OFFLINE is set (unset it to upload)")
    token = token or get_token()
    if not token:
        raise HubPushError("cannot push: no Hugging Face token (run `hf auth login` or set HF_TOKEN)")
    api = HfApi(token=token)
    url = f"{api.endpoint}/api/whoami-v2"
    try:
        response = get_session().get(url, headers=build_hf_headers(token=token), timeout=AUTH_TIMEOUT_SECONDS)
    except Exception as error:  # the HTTP client's connect/timeout/proxy errors share no public base class
        raise HubPushError(f"cannot push: the Hub at {api.endpoint} cannot be reached ({type(error).__name__}: {error})") from error
    if response.status_code in (401, 403):
        raise HubPushError(f"cannot push: the Hub at {api.endpoint} rejected the token (HTTP {response.status_code})")
    if response.status_code >= 400:
        raise HubPushError(f"cannot push: {url} answered HTTP {response.status_code}")
    return api, token


def _stage(files: list[Path], staging: Path) -> None:
    # Hard links cost nothing; a copy where the staging folder is on another file system.
    for path in files:
        try:
            os.link(path, staging / path.name)
        except OSError:
            shutil.copy2(path, staging / path.name)


def _upload(api, folder: Path, repo_id: str, *, private: bool, revision: str | None, token: str, message: str | None) -> str:
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, token=token)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True, token=token)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            revision=revision,
            commit_message=message or "Upload sceneevent model",
            allow_patterns=UPLOAD_PATTERNS,
            ignore_patterns=IGNORE_PATTERNS,
            token=token,
        )
    except Exception as error:  # HTTP refusals and network errors alike: one clear message, cause chained
        raise HubPushError(f"push to {repo_id} failed ({type(error).__name__}: {error})") from error
    return getattr(commit, "commit_url", None) or str(commit)
