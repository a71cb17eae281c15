"""ONNX export: scripts/export_onnx.py on a tiny random model, run with ONNX Runtime (CPU) on two batch
sizes and two clip lengths, against the PyTorch logits. Tolerance: 1e-4 absolute on logits of order 1-10
(measured: about 1e-6)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from sceneevent import LogMelFeatureExtractor, SceneEventConfig, SceneEventModel
from sceneevent.inference.export_onnx import INPUT_NAME, OUTPUT_NAMES, OnnxExportError, export_onnx

ROOT = Path(__file__).resolve().parents[1]
SCENES = ["airport", "bus", "metro", "park"]
EVENTS = ["Speech", "Music", "Dog", "Car", "Bird"]
ATOL = 1e-4


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the script's string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A random resnet18 model whose logits are far from zero (so an absolute tolerance means something)."""
    torch.manual_seed(0)
    config = SceneEventConfig(scene_labels=SCENES, event_labels=EVENTS, encoder="resnet18", num_mel_bins=32)
    model = SceneEventModel(config).eval()
    with torch.no_grad():
        model.input_norm.running_mean.uniform_(-8, -2)  # log-mel levels
        model.input_norm.running_var.uniform_(1, 4)
        for head in (model.scene_head, model.event_head):
            head.weight.normal_(0, 1.0)
            head.bias.normal_(0, 1.0)
    folder = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(folder)
    LogMelFeatureExtractor(num_mel_bins=32, sampling_rate=16000, clip_seconds=1.0, n_fft=512, hop_length=160).save_pretrained(folder)
    # What a run folder holds beside the model: its lock, a killed save's staging file, checkpoints.
    (folder / ".lock").write_text("")
    (folder / ".model.safetensors.k3j2.tmp").write_bytes(b"half a model")
    (folder / "checkpoints" / "step_1").mkdir(parents=True)
    return folder


@pytest.fixture(scope="module")
def exported(model_dir: Path, tmp_path_factory) -> tuple[Path, dict]:
    output = tmp_path_factory.mktemp("exported") / "onnx"
    report = load_script("export_onnx").main([str(model_dir), "--output_dir", str(output)])
    return output, report


def pytorch_logits(model_dir: Path, features: np.ndarray) -> list[np.ndarray]:
    model = SceneEventModel.from_pretrained(model_dir).eval()
    with torch.no_grad():
        output = model(input_features=torch.from_numpy(features))
    return [output.scene_logits.numpy(), output.event_logits.numpy()]


def test_export_writes_the_graph_and_the_feature_settings(exported, model_dir: Path):
    output, report = exported
    names = {p.name for p in output.iterdir()}
    assert {"model.onnx", "preprocessor_config.json", "config.json"} <= names
    # Nothing of the run folder is taken along: no lock, no staging, no checkpoints (the extractor's code is its own).
    assert not [name for name in names if name.startswith(".") or name == "checkpoints" or name.endswith(".tmp")]
    assert not [p for p in output.parent.iterdir() if p.name.startswith(f".{output.name}.")]  # staging removed
    assert json.loads((output / "preprocessor_config.json").read_text()) == json.loads((model_dir / "preprocessor_config.json").read_text())
    graph = onnx.load(str(output / "model.onnx"))
    onnx.checker.check_model(graph)
    assert [i.name for i in graph.graph.input] == [INPUT_NAME]
    assert [o.name for o in graph.graph.output] == list(OUTPUT_NAMES)
    dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[1] == 32 and isinstance(dims[2], str)  # batch and frames are symbolic
    metadata = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(metadata["scene_labels"]) == SCENES and json.loads(metadata["event_labels"]) == EVENTS
    # The script's own check (batch 1 and 3, two frame counts) passed and is reported.
    assert max(report["max_abs_diff"].values()) < ATOL and len(report["checked_shapes"]) == 2


@pytest.mark.parametrize(("batch", "seconds"), [(2, 1.0), (5, 0.37)])
def test_onnx_runtime_matches_pytorch_on_extracted_features(exported, model_dir: Path, batch: int, seconds: float):
    output, _ = exported
    extractor = LogMelFeatureExtractor.from_pretrained(output)  # the documented path: features from the exported config
    # A shorter clip_seconds gives a shorter time axis than the export example.
    extractor.clip_seconds = seconds
    rng = np.random.default_rng(batch)
    clips = [0.1 * rng.standard_normal((2, int(44100 * seconds))).astype(np.float32) for _ in range(batch)]
    features = extractor(clips, sampling_rate=44100, return_tensors="np")["input_features"].astype(np.float32)
    assert features.shape == (batch, 32, extractor.num_frames)

    session = onnxruntime.InferenceSession(str(output / "model.onnx"), providers=["CPUExecutionProvider"])
    scene_logits, event_logits = session.run(list(OUTPUT_NAMES), {INPUT_NAME: features})
    expected_scene, expected_event = pytorch_logits(model_dir, features)

    assert scene_logits.shape == (batch, len(SCENES)) and event_logits.shape == (batch, len(EVENTS))
    assert np.abs(expected_scene).max() > 1.0  # logits of real size, not all near zero
    diff = max(np.abs(scene_logits - expected_scene).max(), np.abs(event_logits - expected_event).max())
    print(f"batch {batch}, frames {features.shape[2]}: max |ONNX - PyTorch| = {diff:.3g}")
    assert diff < ATOL
    np.testing.assert_array_equal(scene_logits.argmax(1), expected_scene.argmax(1))


def test_export_refuses_a_folder_without_a_model(tmp_path: Path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        export_onnx(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_a_failed_check_leaves_the_output_folder_as_it_was(model_dir: Path, tmp_path: Path):
    output = tmp_path / "onnx"
    output.mkdir()
    (output / "model.onnx").write_bytes(b"an older graph")
    (output / "notes.txt").write_text("not the export's")
    with pytest.raises(OnnxExportError, match="differ"):
        export_onnx(model_dir, output, atol=-1.0)  # no difference passes
    assert sorted(p.name for p in output.iterdir()) == ["model.onnx", "notes.txt"]
    assert (output / "model.onnx").read_bytes() == b"an older graph"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]  # the staging folder is removed
