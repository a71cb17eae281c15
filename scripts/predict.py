"""Scene and top events of audio files, per clip-length window and for the whole recording.

    python scripts/predict.py street.wav recordings/ "field/**/*.flac" --model outputs/joint
    python scripts/predict.py recordings/ --model user/sceneevent-tut --output_format json --output_file preds.json
    python scripts/predict.py long.ogg --model outputs/joint --hop_seconds 5 --plot plots/

Inputs are files, folders (searched recursively) or glob patterns of WAV/FLAC/OGG files at any
sampling rate and channel count. Files that cannot be read are listed at the end (and in the CSV or
JSON output) without stopping the others; the exit code is 0 when at least one file was processed.
`--help` lists every argument.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from sceneevent.inference import EVENT_POOLING, expand_inputs, format_table, load_pipeline, plot_prediction, predict_files, to_csv, to_json_dict
from sceneevent.io_utils import atomic_write_json, atomic_write_text

OUTPUT_FORMATS = ("table", "csv", "json")


@dataclass
class PredictArguments:
    model: str = field(metadata={"help": "Run folder (from train_joint.py) or Hub id of a sceneevent model."})
    output_format: str = field(default="table", metadata={"help": f"One of {', '.join(OUTPUT_FORMATS)}."})
    output_file: str | None = field(default=None, metadata={"help": "Write the table/CSV/JSON here instead of stdout."})
    top_k: int = field(default=3, metadata={"help": "Events (and scenes, in JSON) listed per window and per file."})
    hop_seconds: float | None = field(default=None, metadata={"help": "Hop between windows in seconds. Default: one clip (no overlap)."})
    event_pooling: str = field(
        default="max", metadata={"help": "How window event scores make the file's scores: max (event anywhere) or mean (share of time)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Windows per forward pass."})
    plot: str | None = field(default=None, metadata={"help": "Folder for one PNG per file: log-mel spectrogram and event scores over time."})
    device: str | None = field(default=None, metadata={"help": "torch device, e.g. cpu or cuda:0. Default: the first accelerator if any, else CPU."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide the progress bar."})


def parse(args: list[str] | None = None) -> tuple[PredictArguments, list[str]]:
    parser = HfArgumentParser(PredictArguments)
    parser.add_argument("inputs", nargs="*", metavar="AUDIO", help="Audio files, folders (recursive) or glob patterns.")
    parsed, namespace, remaining = parser.parse_args_into_dataclasses(args=args, return_remaining_strings=True)
    unknown = [value for value in remaining if value.startswith("-")]
    if unknown:
        parser.error(f"unknown argument(s): {unknown}")
    # Inputs may come on both sides of the options; argparse hands the later ones back as remaining.
    inputs = list(namespace.inputs) + remaining
    if not inputs:
        parser.error("name at least one audio file, folder or glob pattern")
    if parsed.output_format not in OUTPUT_FORMATS:
        parser.error(f"--output_format must be one of {OUTPUT_FORMATS}, got {parsed.output_format!r}")
    if parsed.event_pooling not in EVENT_POOLING:
        parser.error(f"--event_pooling must be one of {EVENT_POOLING}, got {parsed.event_pooling!r}")
    return parsed, inputs


def plot_writer(folder: str, top_k: int):
    """A callback that writes each file's plot, then drops its spectrogram to keep memory flat."""
    used: set[str] = set()

    def write(prediction) -> None:
        stem = Path(prediction.source).stem
        name, count = stem, 1
        while name in used:  # same file name in two folders
            count += 1
            name = f"{stem}_{count}"
        used.add(name)
        plot_prediction(prediction, Path(folder) / f"{name}.png", top_k=top_k)
        prediction.log_mel = None

    return write


def main(args: list[str] | None = None) -> int:
    options, inputs = parse(args)
    files, failures = expand_inputs(inputs)
    model = load_pipeline(options.model, device=options.device)
    predictions, unreadable = predict_files(
        model,
        files,
        hop_seconds=options.hop_seconds,
        event_pooling=options.event_pooling,
        batch_size=options.batch_size,
        keep_log_mel=options.plot is not None,
        progress=not options.disable_tqdm,
        on_prediction=plot_writer(options.plot, options.top_k) if options.plot else None,
    )
    failures += unreadable
    write_output(options, predictions, failures)
    if failures and options.output_file:
        print(f"{len(failures)} file(s) could not be processed:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure['source']}: {failure['error']}", file=sys.stderr)
    return 0 if predictions else 1


def write_output(options: PredictArguments, predictions, failures) -> None:
    if options.output_format == "json":
        payload = to_json_dict(predictions, failures, options.top_k, model=options.model)
        if options.output_file:
            atomic_write_json(options.output_file, payload)
            return
        text = json.dumps(payload, indent=2) + "\n"
    elif options.output_format == "csv":
        text = to_csv(predictions, failures, options.top_k)
    else:
        text = format_table(predictions, failures, options.top_k)
    if options.output_file:
        atomic_write_text(options.output_file, text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    sys.exit(main())
