"""Macro-average accuracy: the mean of per-class accuracies (the DCASE scene-classification score)."""

import datasets
import evaluate

from sceneevent.metrics.functional import macro_accuracy

_CITATION = """@inproceedings{Mesaros2018_DCASE,
  author = {Mesaros, Annamaria and Heittola, Toni and Virtanen, Tuomas},
  title = {A multi-device dataset for urban acoustic scene classification},
  booktitle = {Proceedings of the Detection and Classification of Acoustic Scenes and Events 2018 Workshop},
  year = {2018}
}"""

_DESCRIPTION = (
    "Mean over the classes of the fraction of each class's samples predicted right (sed_eval's class-wise "
    "average): over `labels` when given (a class without references scores 0), else over the classes present."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted class indices.
    references (`list[int]`): true class indices.
    labels (`list[int]`, optional): every class of the task; default: the classes present in the references.
    label_names (`list[str]`, optional): the class names, indexed by class, for the warning about a class without references.
    split (`str`, optional): the evaluated split's name, for that warning.
Returns:
    macro_accuracy (`float`): in [0, 1].
Examples:
    >>> metric = evaluate.load("src/sceneevent/metrics/macro_accuracy")
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'macro_accuracy': 0.75}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MacroAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, labels=None, label_names=None, split=None):
        return {"macro_accuracy": macro_accuracy(references, predictions, labels=labels, label_names=label_names, split=split)}
