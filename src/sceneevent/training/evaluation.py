"""Evaluation of both tasks on cached splits, gathered from every process without duplicates."""

from __future__ import annotations

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device

from ..data.loader import BatchPlan, BatchReader, batch_loader


def gather_rows(accelerator: Accelerator, rows: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's rows in process order, without padding duplicates."""
    if accelerator.num_processes == 1:
        return rows
    counts = accelerator.gather(torch.tensor([rows.shape[0]], device=rows.device)).tolist()
    padded = accelerator.gather(accelerator.pad_across_processes(rows, dim=0))
    width = max(counts)
    return torch.cat([padded[index * width : index * width + count] for index, count in enumerate(counts)])


@torch.no_grad()
def predict_split(accelerator: Accelerator, model, reader: BatchReader, batch_size: int, logits_key: str, num_workers: int = 0):
    """Logits and labels of a whole cached split, gathered from all processes (in data-set order); `num_workers`
    reader threads read ahead, as in training."""
    plan = BatchPlan(len(reader), batch_size, seed=0, num_processes=accelerator.num_processes, process_index=accelerator.process_index)
    logits, labels = [], []
    label_key = "scene_labels" if logits_key == "scene_logits" else "event_labels"
    for batch in batch_loader(reader, list(plan.eval_batches()), num_workers=num_workers, device=accelerator.device):
        batch = send_to_device(batch, accelerator.device, non_blocking=True)
        logits.append(model(input_features=batch["input_features"])[logits_key].float())
        labels.append(batch[label_key])
    num_classes = reader.num_classes
    local_logits = torch.cat(logits) if logits else torch.zeros(0, num_classes, device=accelerator.device)
    local_labels = torch.cat(labels) if labels else torch.zeros((0,) if label_key == "scene_labels" else (0, num_classes), device=accelerator.device)
    return gather_rows(accelerator, local_logits).cpu().numpy(), gather_rows(accelerator, local_labels).cpu().numpy()


def evaluate_tasks(accelerator, model, scene_reader, event_reader, batch_size, metrics, num_workers: int = 0, *,
                   split: str | None = None, scene_labels: list[str] | None = None) -> dict[str, float]:
    """Scene macro accuracy over every scene class and event lwlrap, for the readers given (either may be None).
    `split` ("validation", "test") and `scene_labels` only name the split and the classes in the metric's warnings."""
    model.eval()
    results = {}
    if scene_reader is not None:
        logits, labels = predict_split(accelerator, model, scene_reader, batch_size, "scene_logits", num_workers)
        results["asc_macro_accuracy"] = metrics["macro_accuracy"].compute(
            predictions=logits.argmax(axis=1), references=labels, labels=list(range(scene_reader.num_classes)),
            label_names=scene_labels, split=split,
        )["macro_accuracy"]
    if event_reader is not None:
        scores, truth = predict_split(accelerator, model, event_reader, batch_size, "event_logits", num_workers)
        results["aet_lwlrap"] = metrics["lwlrap"].compute(predictions=scores, references=truth.astype(np.int8))["lwlrap"]
    model.train()
    return results
