"""Scene and top events of audio files, per clip-length window and for the whole recording.

    python scripts/predict.py street.wav recordings/ "field/**/*.flac" --model outputs/joint
    python scripts/predict.py recordings/ --model user/sceneevent-tut --output_format json --output_file preds.json
    python scripts/predict.py long.ogg --model outputs/joint --hop_seconds 5 --plot plots/

Inputs are files, folders (searched recursively) or glob patterns of WAV/FLAC/OGG files at any
sampling rate (1 to 384 kHz) and channel count, of any length (read window by window). Files that
cannot be read, and what folders and patterns skipped (other audio formats, dangling links), are
listed at the end (and in the CSV or JSON output) without stopping the others; the exit code is 0
when at least one file was processed. A model whose type the installed sceneevent does not know is
refused in one line; `--trust_remote_code` runs the Python code that comes with it instead.
`--help` lists every argument.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from sceneevent.inference.files import expand_inputs, predict_files
from sceneevent.inference.formats import format_table, plot_prediction, to_csv, to_json_dict
from sceneevent.inference.pipeline import EVENT_POOLING, RemoteCodeRefusedError, load_pipeline
from sceneevent.io_utils import atomic_write_json, atomic_write_text
from sceneevent.models.modeling_sceneevent import WeightsMismatchError

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
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Run the Python code that comes with --model (its *.py files) to load a model whose type the "
                          "installed sceneevent does not know. Off by default: such a model is refused. Only for code you trust."},
    )
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
    if parsed.batch_size < 1:
        parser.error(f"--batch_size must be a positive integer, got {parsed.batch_size}")
    if parsed.hop_seconds is not None and not (math.isfinite(parsed.hop_seconds) and parsed.hop_seconds > 0):
        parser.error(f"--hop_seconds must be a positive number of seconds, got {parsed.hop_seconds}")
    return parsed, inputs


def refuse_output_over_input(output_file: str | None, files: list[Path]) -> None:
    """Stop before any work when --output_file is one of the audio files (it would be overwritten)."""
    if output_file is None:
        return
    for path in files:
        if _same_file(Path(output_file), path):
            raise SystemExit(f"predict.py: error: --output_file {output_file} is the input file {path}: it would be "
                             "overwritten; choose another output name")


def _same_file(first: Path, second: Path) -> bool:
    if os.path.realpath(first) == os.path.realpath(second):
        return True
    try:
        return os.path.samefile(first, second)  # hard links
    except OSError:  # one of them does not exist yet
        return False


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
    refuse_output_over_input(options.output_file, files)
    try:
        model = load_pipeline(options.model, device=options.device, trust_remote_code=options.trust_remote_code)
    except WeightsMismatchError as error:  # a broken model folder: one clear line, no traceback
        raise SystemExit(f"predict.py: error: --model {error}") from None
    except RemoteCodeRefusedError as error:  # one line naming this script's flag, not the library's argument
        raise SystemExit(f"predict.py: error: --model {RemoteCodeRefusedError(error.model, '--trust_remote_code')}") from None
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
            atomic_write_json(options.output_file, payload, allow_nan=False)  # NaN is not JSON
            return
        text = json.dumps(payload, indent=2, allow_nan=False) + "\n"
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
