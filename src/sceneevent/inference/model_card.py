"""The model card (README.md) of a run folder, rendered from its config.json and results.json.

Cards are public: secrets are scrubbed from what the card shows and local paths are shown by their last
component only. Results written before the best epoch was chosen on validation still render, their
event figure worded as validation (`training.results.VALIDATION_SELECTION_SCHEMA`).

Text from the run (its folder or Hub name, labels, settings in config.json and results.json) is shown as text,
never as the card's own markup: escaped in Markdown lines and table cells, a code span of its own in backticks,
a Python string literal in the code snippets and a shell-quoted word in the command line.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

from ..io_utils import atomic_write_text, scrub_secrets
from ..markup import code_span, markdown_text
from ..training.results import LAST_EPOCH, FinalMetrics, RunResults, has_results, read_results

CARD_FILE = "README.md"
CITATION = """@inproceedings{parikh2022impact,
  title     = {Impact of Acoustic Event Tagging on Scene Classification in a Multi-Task Learning Framework},
  author    = {Parikh, Rahil and Sundar, Harshavardhan and Sun, Ming and Wang, Chao and Matsoukas, Spyros},
  booktitle = {Proc. Interspeech 2022},
  year      = {2022},
}"""
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # user/name or org/name


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
    results = _run_results(run_dir)
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


def _run_results(run_dir: Path) -> RunResults:
    """The run's results.json, older schemas included, scrubbed before any value is used (a data path that
    holds a token must not pass for a Hub id); empty results where the run has none."""
    if not has_results(run_dir):
        return RunResults()
    results = read_results(run_dir, require_validation_selection=False)
    return RunResults.from_dict(scrub_secrets(results.to_dict()))


def _front_matter(name: str, results: RunResults, scenes: list[str], events: list[str]) -> str:
    """YAML metadata the Hub reads: task, library, license, data sets, metrics, base model, model-index.

    Evaluation results go into `model-index` (huggingface_hub's `EvalResult`), which the Hub shows on
    the model page. The newer `.eval_results/*.yaml` files are not written: each entry must name a
    Hub dataset registered as a Benchmark (with an `eval.yaml` and a `task_id`), and neither AudioSet
    nor TUT 2018 is one.
    """
    from huggingface_hub import EvalResult, ModelCardData

    run_config, final = results.config, results.final
    asc_name, asc_id = _dataset_name(run_config.get("asc_dataset"), "acoustic scenes")
    aet_name, aet_id = _dataset_name(_subset(results).get("source") or run_config.get("aet_dataset"), "acoustic events")
    evaluations = []
    if final.asc_macro_accuracy is not None:
        evaluations.append(EvalResult(
            task_type="audio-classification", task_name="Acoustic scene classification",
            dataset_type=asc_id or asc_name, dataset_name=asc_name,
            metric_type="accuracy", metric_name="Scene macro-average accuracy (test)", metric_value=float(final.asc_macro_accuracy),
        ))
    if final.aet_lwlrap is not None:
        evaluations.append(EvalResult(
            task_type="audio-classification", task_name="Acoustic event tagging",
            dataset_type=aet_id or aet_name, dataset_name=aet_name,
            metric_type="lwlrap", metric_name=f"Event lwlrap ({_event_split(results)})", metric_value=float(final.aet_lwlrap),
        ))
    # Only Hub ids belong under `datasets` and `base_model`; local paths would leak the trainer's file system.
    hub_datasets = sorted({dataset_id for dataset_id in (asc_id, aet_id) if dataset_id})
    base_model = run_config.get("model_name_or_path") or run_config.get("encoder_pretrained")
    card = ModelCardData(
        library_name="transformers",
        pipeline_tag="audio-classification",
        license="apache-2.0",
        tags=["audio", "audio-classification", "acoustic-scene-classification", "audio-tagging",
              "multi-task-learning", "sceneevent", "custom_code"],
        datasets=hub_datasets or None,
        metrics=[metric for metric, value in (("accuracy", final.asc_macro_accuracy), ("lwlrap", final.aet_lwlrap)) if value is not None] or None,
        base_model=base_model if isinstance(base_model, str) and _is_hub_id(base_model) else None,
        model_name=name if evaluations else None,
        eval_results=evaluations or None,
    )
    return "---\n" + card.to_yaml() + "\n---\n"


def _event_split(results: RunResults) -> str:
    """Where `final.aet_lwlrap` was measured: the test split since results schema 2, validation before."""
    return "test" if results.selected_on_validation else "validation"


def _intro_section(name: str, config: dict, results: RunResults) -> str:
    alpha = _recorded(results.alpha, config.get("alpha"))
    return (
        f"# {markdown_text(name)}\n\n"
        "One network for **acoustic scene classification** (one scene per clip, softmax head) and "
        "**acoustic event tagging** (any number of events per clip, sigmoid head), trained jointly as in "
        "Parikh et al., *Impact of Acoustic Event Tagging on Scene Classification in a Multi-Task Learning "
        f"Framework* (Interspeech 2022), with the `sceneevent` code.\n\n"
        f"- Encoder: {code_span(config.get('encoder', 'resnet18'))} (timm, one input channel) on log-mel spectrograms, "
        f"shared by both heads; {_encoder_start(config.get('encoder_pretrained') or results.config.get('encoder_pretrained'))}.\n"
        f"- Loss: `alpha * L_AET + (1 - alpha) * L_ASC` with **alpha = {markdown_text(_fmt(alpha))}** "
        "(0 = scene task only, 1 = event task only).\n"
    )


def _encoder_start(source: str | None) -> str:
    if not source:
        return "trained from random initialisation"
    return f"started from the pretrained weights {code_span(_display_source(source))}"


def _results_section(results: RunResults) -> str:
    final = results.final
    if final == FinalMetrics():  # no results.json, or one without `final`
        return "## Results\n\nNo results.json was found in the run folder: no evaluation figures to report.\n"
    rows = [
        ("Scene macro-average accuracy (test)", final.asc_macro_accuracy),
        ("Its floor: logistic regression on per-mel mean and sd (test)", final.floor_asc_macro_accuracy),
        (f"Event lwlrap ({_event_split(results)})", final.aet_lwlrap),
        ("Best epoch (model kept)", final.best_epoch),
        ("Final training loss, scenes", final.loss_asc),
        ("Final training loss, events", final.loss_aet),
    ]
    table = "\n".join(f"| {label} | {_cell(value)} |" for label, value in rows if value is not None)
    return f"## Results\n\n| Metric | Value |\n|---|---|\n{table}\n\n{_selection_note(final)}{_floor_note(results)}"


def _floor_note(results: RunResults) -> str:
    if results.clears_floor is None:
        return ""
    verdict = "clears it" if results.clears_floor else "**does not clear it**: it has learnt less about the scenes than that"
    return ("\nThe floor is a plain multinomial logistic regression on each clip's per-mel mean and standard deviation of the "
            "same log-mels and splits (fit on train, L2 strength chosen on validation); the network " + verdict + ".\n")


def _selection_note(final: FinalMetrics) -> str:
    selected_by, value = final.selected_by, final.selected_value
    if selected_by and selected_by != LAST_EPOCH:
        shown = f" ({_fmt(value)})" if isinstance(value, (int, float)) else ""
        note = (f"The model kept is that of epoch {markdown_text(_fmt(final.best_epoch))}, selected on the validation split by "
                f"{code_span(selected_by)}{markdown_text(shown)}; the test figures above played no part in that choice.")
    elif selected_by == LAST_EPOCH:
        note = "The run had no validation split, so the model of the last epoch is kept; the figures above are on the test split."
    else:
        note = "The run did not record how the model kept was selected."
    return note + "\n"


def _labels_section(scenes: list[str], events: list[str]) -> str:
    return (
        "## Labels\n\n"
        f"**Scenes ({len(scenes)})**, the `audio-classification` labels (`config.id2label`): "
        f"{', '.join(map(code_span, scenes))}.\n\n"
        f"**Events ({len(events)})**, the tagging head (`config.event_labels`): "
        f"{', '.join(map(code_span, events))}.\n"
    )


def _subset_section(results: RunResults, events: list[str]) -> str:
    subset = _subset(results)
    if subset:
        rows = [
            ("k (event classes)", subset.get("k", len(events))),
            ("T (hours of audio)", subset.get("hours")),
            ("Class selection strategy", subset.get("strategy")),
            ("Subset seed", subset.get("seed")),
            ("Source", _display_source(subset.get("source"))),
        ]
        table = "\n".join(f"| {label} | {_cell(value)} |" for label, value in rows)
        return f"## Event training data (AET subset)\n\n| Setting | Value |\n|---|---|\n{table}\n"
    source = _display_source(results.config.get("aet_dataset"))
    return (
        "## Event training data (AET subset)\n\n"
        f"Event data set: {code_span(source)}, k = {len(events)} event classes. The run recorded no subset "
        "description (hours T, selection strategy, seed), so these are not known.\n"
    )


def _training_section(config: dict, results: RunResults, preprocessor: dict) -> str:
    run_config = results.config
    rows = [
        ("Scene data", _display_source(run_config.get("asc_dataset"))),
        ("Event data", _display_source(run_config.get("aet_dataset"))),
        ("alpha", _recorded(results.alpha, config.get("alpha"))),
        ("Batch (scene + event clips)", _batch(run_config)),
        ("Learning rate", run_config.get("learning_rate")),
        ("Schedule", run_config.get("lr_scheduler_type")),
        ("Epochs", run_config.get("num_train_epochs")),
        ("Steps", results.steps),
        ("SpecAugment / MixUp (scenes)", _pair(run_config.get("specaugment"), run_config.get("mixup"))),
        ("SpecAugment / MixUp (events)", _pair(run_config.get("aet_specaugment"), run_config.get("aet_mixup"))),
        ("Seed", _recorded(results.seed, run_config.get("seed"))),
        ("Sampling rate (Hz)", preprocessor.get("sampling_rate", run_config.get("feature_sampling_rate"))),
        ("Clip length (s)", preprocessor.get("clip_seconds", run_config.get("feature_clip_seconds"))),
        ("Mel bins", preprocessor.get("num_mel_bins", run_config.get("feature_num_mel_bins"))),
        ("STFT n_fft / hop", _pair(preprocessor.get("n_fft"), preprocessor.get("hop_length"))),
        ("Wall time (s)", results.wall_time_seconds),
    ]
    table = "\n".join(f"| {label} | {_cell(value)} |" for label, value in rows if value is not None)
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
    model = _python_str(name)  # pasted inside quotes, a `"` in a folder name would end the string
    return (
        "## How to use\n\n"
        "Scene classification with the `transformers` pipeline (the custom code ships with the model):\n\n"
        "```python\n"
        "import soundfile as sf\n"
        "from transformers import pipeline\n\n"
        f'classifier = pipeline("audio-classification", model={model}, trust_remote_code=True)\n'
        'audio, rate = sf.read("recording.wav", dtype="float32", always_2d=True)\n'
        "# The pipeline takes mono audio (a file path would need ffmpeg); other rates are resampled.\n"
        'classifier({"array": audio.mean(axis=1), "sampling_rate": rate}, top_k=3)  # [{"label", "score"}], softmax\n'
        "```\n\n"
        "Event tagging and long recordings (cut into clip-length windows) with the `sceneevent` package:\n\n"
        "```python\n"
        "from sceneevent.inference import load_pipeline, predict, tag_events\n\n"
        f'model = load_pipeline({model})\n'
        'tag_events(model, "recording.wav", top_k=5)  # [{"label": event, "score": sigmoid score}, ...]\n'
        'prediction = predict(model, "long_recording.flac")  # per-window and aggregated scenes and events\n'
        "```\n\n"
        "or from the command line: "
        f"{code_span(f'python scripts/predict.py recordings/ --model {shlex.quote(name)} --output_format json --output_file predictions.json')}.\n\n"
        "Without `sceneevent`, the event scores are `sigmoid(event_logits)` of the model output:\n\n"
        "```python\n"
        "import soundfile as sf, torch\n"
        "from transformers import AutoFeatureExtractor, AutoModel\n\n"
        f'model = AutoModel.from_pretrained({model}, trust_remote_code=True).eval()\n'
        f'extractor = AutoFeatureExtractor.from_pretrained({model}, trust_remote_code=True)\n'
        'audio, rate = sf.read("recording.wav", dtype="float32", always_2d=True)\n'
        "features = extractor(audio.T, sampling_rate=rate, return_tensors=\"pt\")\n"
        "with torch.no_grad():\n"
        "    scores = model(**features).event_logits.sigmoid()[0]\n"
        "events = {model.config.event_labels[i]: float(s) for i, s in enumerate(scores)}\n"
        "```\n"
    )


def _subset(results: RunResults) -> dict:
    subset = results.data.get("aet_subset")
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
    return bool(HUB_ID.match(source)) and not os.path.exists(source)


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


def _recorded(value, fallback):
    """`value`, or `fallback` where results.json does not record it."""
    return fallback if value is None else value


def _pair(first, second) -> str | None:
    return None if first is None and second is None else f"{_fmt(first)} / {_fmt(second)}"


def _cell(value) -> str:
    """A table cell: `value` formatted, then escaped (a `|` would split the cell, a newline end the table)."""
    return markdown_text(_fmt(value))


def _python_str(value) -> str:
    """`value` as a Python string literal (non-printable characters escaped), in double quotes like the rest of the
    snippets unless it holds one."""
    text = str(value)
    return repr(text) if '"' in text else f'"{repr(text)[1:-1]}"'


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

