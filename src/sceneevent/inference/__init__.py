"""Using a trained model: prediction on recordings, ONNX export, and publishing a run to the Hub."""

from .files import predict_files
from .pipeline import classify_scene, load_pipeline, predict, tag_events

__all__ = ["classify_scene", "load_pipeline", "predict", "predict_files", "tag_events"]
