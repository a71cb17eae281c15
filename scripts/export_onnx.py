"""Export a trained sceneevent model to ONNX (scene logits + event logits, dynamic batch and time axes).

    python scripts/export_onnx.py outputs/joint                       # writes outputs/joint/onnx/
    python scripts/export_onnx.py outputs/joint --output_dir exported/sceneevent-onnx --opset 18

The folder receives model.onnx, preprocessor_config.json (the log-mel settings: features are computed
outside the graph with LogMelFeatureExtractor) and config.json (labels). The export is checked with
ONNX Runtime on CPU against PyTorch before anything is written; the largest logit difference is
printed. docs/inference.md shows how to run the file. `--help` lists every argument.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from sceneevent.inference.export_onnx import DEFAULT_OPSET, export_onnx


@dataclass
class ExportArguments:
    output_dir: str | None = field(default=None, metadata={"help": "Folder to write to. Default: RUN_DIR/onnx."})
    opset: int = field(default=DEFAULT_OPSET, metadata={"help": "ONNX opset version."})
    atol: float = field(default=1e-4, metadata={"help": "Largest absolute logit difference to PyTorch accepted by the check."})
    no_verify: bool = field(default=False, metadata={"help": "Skip the ONNX Runtime check against PyTorch."})


def parse(args: list[str] | None = None) -> tuple[ExportArguments, str]:
    parser = HfArgumentParser(ExportArguments)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="Run folder (train_joint.py) or save_pretrained folder of a sceneevent model.")
    options, namespace = parser.parse_args_into_dataclasses(args=args)
    return options, namespace.run_dir


def main(args: list[str] | None = None) -> dict:
    options, run_dir = parse(args)
    report = export_onnx(run_dir, options.output_dir, opset=options.opset, verify=not options.no_verify, atol=options.atol)
    print(f"wrote {report.onnx_path}")
    if report.max_abs_diff:
        print("max |ONNX - PyTorch| per output: " + json.dumps(report.max_abs_diff) + f" on inputs {report.checked_shapes}")
    return report.to_dict()


if __name__ == "__main__":
    main()
