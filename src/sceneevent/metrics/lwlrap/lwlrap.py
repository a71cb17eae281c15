"""Label-weighted label-ranking average precision (DCASE 2019 Task 2, Fonseca et al.)."""

import datasets
import evaluate

from sceneevent.metrics.functional import lwlrap

_CITATION = """@inproceedings{Fonseca2019_DCASE,
  author = {Fonseca, Eduardo and Plakal, Manoj and Font, Frederic and Ellis, Daniel P. W. and Serra, Xavier},
  title = {Audio tagging with noisy labels and minimal supervision},
  booktitle = {Proceedings of the Detection and Classification of Acoustic Scenes and Events 2019 Workshop},
  year = {2019}
}"""

_DESCRIPTION = (
    "Mean over all positive (clip, class) pairs of the precision of the clip's class ranking at that class "
    "(tied scores get the worst rank; scores kept in float64)."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[float]]`): per-class scores, one row per clip.
    references (`list[list[int]]`): multi-hot 0/1 truth, one row per clip.
Returns:
    lwlrap (`float`): in [0, 1].
Examples:
    >>> metric = evaluate.load("src/sceneevent/metrics/lwlrap")
    >>> metric.compute(predictions=[[0.9, 0.1, 0.5]], references=[[1, 0, 1]])
    {'lwlrap': 1.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Lwlrap(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    # float64: a float32 store would tie scores the plain function tells apart.
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Sequence(datasets.Value("int8")),
                }
            ),
        )

    def _compute(self, predictions, references):
        return {"lwlrap": lwlrap(references, predictions)}
