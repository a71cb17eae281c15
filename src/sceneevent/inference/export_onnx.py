"""ONNX export of a sceneevent model: log-mel `input_features` in, scene and event logits out.

`export_onnx(run_dir)` writes `run_dir/onnx/` with

- `model.onnx`: input `input_features` `(batch, num_mel_bins, frames)` float32; outputs `scene_logits`
  `(batch, num_scenes)` (softmax gives the scene probabilities) and `event_logits` `(batch, num_events)`
  (sigmoid gives the event scores); batch and frames are dynamic. The label names are also stored in
  the model's metadata (`scene_labels`, `event_labels`, JSON lists).
- `preprocessor_config.json`: the `LogMelFeatureExtractor` settings (features are computed outside the
  graph, with the extractor, exactly as for the PyTorch model).
- `config.json`: the model config (labels, encoder), so the folder is self-describing.

The graph comes from `torch.onnx.export(..., dynamo=True)` (torch.export, then onnxscript) with
`dynamic_shapes` for batch and frames. The feature extractor stays in Python: its STFT and resampling
are torchaudio code that the exporter does not cover in the versions tested, and users of other
runtimes can reproduce log-mels from preprocessor_config.json.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..io_utils import staged_folder

ONNX_DIR = "onnx"
ONNX_FILE = "model.onnx"
INPUT_NAME = "input_features"
OUTPUT_NAMES = ("scene_logits", "event_logits")
# Default opset of the dynamo exporter in the tested torch; every op used is plain (conv, pool, gemm).
DEFAULT_OPSET = 18
MIN_FRAMES = 16  # the export is valid from this many frames up (a ResNet stem halves the time axis 5 times)


class OnnxExportError(RuntimeError):
    """The exported graph is missing or does not reproduce the PyTorch logits."""


class _Logits(nn.Module):
    """The model as ONNX sees it: features in, (scene logits, event logits) out; no losses, no labels."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.model(input_features=input_features)
        return output.scene_logits, output.event_logits


@dataclass
class ExportReport:
    """Where the export went and how closely ONNX Runtime matched PyTorch on the checked inputs."""

    onnx_path: Path
    max_abs_diff: dict[str, float]
    checked_shapes: list[tuple[int, int, int]]

    def to_dict(self) -> dict:
        return {"onnx_path": str(self.onnx_path), "max_abs_diff": self.max_abs_diff, "checked_shapes": [list(s) for s in self.checked_shapes]}


def export_onnx(
    model_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    atol: float = 1e-4,
) -> ExportReport:
    """Export the model of `model_dir` (a run folder or `save_pretrained` folder) to ONNX.

    Args:
        model_dir: folder with config.json, model.safetensors and preprocessor_config.json.
        output_dir: where to write model.onnx and the configs (default: `model_dir/onnx`). Files are
            written to a temporary folder first and moved in only after the export (and the check) passed.
        opset: ONNX opset.
        verify: run the exported graph with ONNX Runtime (CPU) on two batch sizes and frame counts and
            compare with PyTorch; raise OnnxExportError when a logit differs by more than `atol`.
        atol: largest absolute logit difference accepted by `verify`.
    """
    from ..models.feature_extraction_sceneevent import LogMelFeatureExtractor
    from ..models.modeling_sceneevent import SceneEventModel

    model_dir = Path(model_dir)
    for required in ("config.json", "preprocessor_config.json"):
        if not (model_dir / required).is_file():
            raise FileNotFoundError(f"{model_dir / required}: not found; export a folder written by train_joint.py or save_pretrained")
    model = SceneEventModel.from_pretrained(model_dir).eval()
    extractor = LogMelFeatureExtractor.from_pretrained(model_dir)
    output_dir = Path(output_dir) if output_dir is not None else model_dir / ONNX_DIR
    # merge: files of `output_dir` that the export does not write are kept.
    with staged_folder(output_dir, merge=True) as staging:
        export_model(model, staging / ONNX_FILE, frames=extractor.num_frames, opset=opset)
        extractor.save_pretrained(staging)
        model.config.to_json_file(staging / "config.json")
        diffs, shapes = ({}, [])
        if verify:
            diffs, shapes = compare_with_pytorch(model, staging / ONNX_FILE, frames=extractor.num_frames)
            worst = max(diffs.values())
            if not worst <= atol:  # also catches NaN
                raise OnnxExportError(f"ONNX Runtime and PyTorch logits differ by up to {worst:.3g} (> atol {atol}): {diffs}")
    return ExportReport(output_dir / ONNX_FILE, diffs, shapes)


def export_model(model: nn.Module, path: str | os.PathLike, *, frames: int, opset: int = DEFAULT_OPSET) -> Path:
    """Write `model` (a SceneEventModel) as one ONNX file with dynamic batch and frame axes."""
    from torch.export import Dim

    config = model.config
    if frames < MIN_FRAMES:
        raise ValueError(f"frames={frames}: the export needs an example of at least {MIN_FRAMES} frames")
    example = torch.randn(2, config.num_mel_bins, frames)
    dynamic_shapes = {INPUT_NAME: {0: Dim("batch", min=1), 2: Dim("frames", min=MIN_FRAMES)}}
    with torch.no_grad():
        program = torch.onnx.export(
            _Logits(model.eval()).eval(),
            (example,),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=dynamic_shapes,
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    program.model.metadata_props.update(
        {
            "scene_labels": json.dumps(list(config.scene_labels)),
            "event_labels": json.dumps(list(config.event_labels)),
            "model_type": config.model_type,
            "encoder": str(config.encoder),
        }
    )
    path = Path(path)
    program.save(str(path), external_data=False)
    return path


def compare_with_pytorch(
    model: nn.Module, onnx_path: str | os.PathLike, *, frames: int, shapes: list[tuple[int, int]] | None = None, seed: int = 0
) -> tuple[dict[str, float], list[tuple[int, int, int]]]:
    """Max absolute difference of each output between ONNX Runtime (CPU) and PyTorch, over a few input shapes.

    `shapes` are (batch, frames) pairs; the default checks batch 1 at `frames` and batch 3 at about
    half of it, so both dynamic axes differ from the export example.
    """
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    shapes = shapes or [(1, frames), (3, max(MIN_FRAMES, frames // 2 + 3))]
    generator = torch.Generator().manual_seed(seed)
    worst = dict.fromkeys(OUTPUT_NAMES, 0.0)
    checked = []
    for batch, length in shapes:
        features = torch.randn(batch, model.config.num_mel_bins, length, generator=generator)
        with torch.no_grad():
            expected = _Logits(model.eval()).eval()(features)
        got = session.run(list(OUTPUT_NAMES), {INPUT_NAME: features.numpy()})
        for name, reference, value in zip(OUTPUT_NAMES, expected, got):
            if value.shape != tuple(reference.shape):
                raise OnnxExportError(f"{name}: ONNX gives shape {value.shape}, PyTorch {tuple(reference.shape)} (input {tuple(features.shape)})")
            worst[name] = max(worst[name], float(np.max(np.abs(value - reference.numpy()))))
        checked.append(tuple(features.shape))
    return worst, checked
