"""The data card (README.md) of a saved AET subset: how it was built, its classes and clips per split."""

from __future__ import annotations

import datetime as _dt

import datasets
import yaml

from ..markup import code_span, markdown_text

AUDIOSET_CITATION = """@inproceedings{gemmeke2017audioset,
  title     = {Audio Set: An ontology and human-labeled dataset for audio events},
  author    = {Gemmeke, Jort F. and Ellis, Daniel P. W. and Freedman, Dylan and Jansen, Aren and
               Lawrence, Wade and Moore, R. Channing and Plakal, Manoj and Ritter, Marvin},
  booktitle = {Proc. IEEE ICASSP},
  pages     = {776--780},
  year      = {2017}
}"""


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def subset_card(dataset_dict: datasets.DatasetDict, info: dict) -> str:
    """A Hugging Face data card (YAML header + sections) describing an AET subset."""
    events = info["events"]
    total = sum(d.num_rows for d in dataset_dict.values())
    hours_label = f"{info['hours_requested']:g} h" if info.get("hours_requested") is not None else "all hours"
    header = {
        "license": "cc-by-4.0",
        "pretty_name": f"AudioSet subset: k={len(events)}, {hours_label}, {info['strategy']}, seed {info['seed']}",
        "task_categories": ["audio-classification"],
        "tags": ["audio", "audioset", "acoustic-event-tagging", "sceneevent"],
        "size_categories": [_size_category(total)],
        "source_datasets": ["AudioSet"],
        "dataset_info": {
            "features": [
                {"name": "audio", "struct": [{"name": "bytes", "dtype": "binary"}, {"name": "path", "dtype": "string"}]},
                {"name": "events", "sequence": {"class_label": {"names": {i: n for i, n in enumerate(events)}}}},
            ],
            "splits": [{"name": split, "num_examples": d.num_rows} for split, d in dataset_dict.items()],
        },
    }
    rows = "\n".join(
        f"| {markdown_text(name)} | {info['train_clips_per_class'].get(name, 0)} | {info['validation_clips_per_class'].get(name, 0)} "
        f"| {info.get('test_clips_per_class', {}).get(name, 0)} |" for name in events
    )
    missing = info.get("missing_audio") or {}
    missing_line = (
        f"Segments dropped because their audio file was missing: {', '.join(f'{markdown_text(s)}: {n}' for s, n in missing.items())}.\n" if any(missing.values()) else ""
    )
    return f"""---
{yaml.safe_dump(header, sort_keys=False, allow_unicode=True)}---

# AudioSet subset for acoustic event tagging (k = {len(events)}, {hours_label})

Built by `sceneevent` (`scripts/build_aet_subset.py`) on {_dt.date.today().isoformat()} for joint acoustic
scene classification and event tagging (Parikh et al., Interspeech 2022).

## Construction

- Source: {code_span(info['source'])}
- Strategy: {code_span(info['strategy'])}{f" (ranking: {code_span(info['ranking'])})" if info.get('ranking') else ""}
- Seed: {info['seed']}
- Requested hours: {hours_label}; training audio: {info['train_hours']:.2f} h in {info['train_clips']} clips
- Validation and test (the evaluation split cut in two by clip identity, fixed for this event set whatever
  the hours or the seed; validation chooses, test reports): {info['validation_hours']:.2f} h in
  {info['validation_clips']} clips and {info.get('test_hours', 0.0):.2f} h in {info.get('test_clips', 0)} clips
- Classes available in the training, validation and test splits: {info['available_classes']}
{missing_line}
Clips carrying any chosen class are kept; their labels are restricted to the chosen classes, so a
clip's other AudioSet labels are dropped. Training clips are drawn in a seeded random order until
the total duration is nearest the requested hours (within one clip).

## Classes

{', '.join(map(code_span, events))}

## Clips per class

| class | train | validation | test |
|---|---|---|---|
{rows}

## Columns

- `audio`: undecoded `{{"bytes", "path"}}` (decode with `sceneevent.data.audio.load_audio`)
- `events`: `Sequence(ClassLabel)` of the classes above
- other columns as in the source (`video_id`, `duration` in seconds where known)

## Licence

AudioSet labels are released by Google under the Creative Commons Attribution 4.0 International
licence (CC BY 4.0). The audio comes from YouTube videos, whose own terms apply to it.

## Citation

```bibtex
{AUDIOSET_CITATION}
```
"""
