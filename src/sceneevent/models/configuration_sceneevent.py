"""Configuration of the joint scene-classification + event-tagging model."""

from __future__ import annotations

from transformers import PretrainedConfig


class SceneEventConfig(PretrainedConfig):
    r"""Configuration of a [`SceneEventModel`]: a timm encoder shared by a scene head and an event head.

    The scene head is the model's primary classification output, so `id2label` / `label2id` are the
    scene labels (what `pipeline("audio-classification")` reads); the event labels sit beside them in
    `event_id2label` / `event_label2id`.

    Args:
        scene_labels (`list[str]`): names of the acoustic scenes (softmax head).
        event_labels (`list[str]`): names of the event classes (sigmoid head).
        alpha (`float`): weight of the event loss, `loss = alpha * L_AET + (1 - alpha) * L_ASC`, in [0, 1].
        encoder (`str`): a timm model name, created with `in_chans=1, num_classes=0`.
        encoder_kwargs (`dict`): extra keyword arguments for `timm.create_model`.
        encoder_pretrained (`str`, *optional*): the encoder's starting weights, a Hub id of timm weights (e.g.
            `timm/resnet18.a1_in1k`) or a local weights file. Recorded here; loaded by
            `SceneEventModel.load_pretrained_encoder()`, never on `from_pretrained` (the saved weights replace them).
        num_mel_bins (`int`): mel bins of the input log-mel spectrogram.
        dropout (`float`): dropout on the pooled embedding before both heads.
        drop_path_rate (`float`): stochastic depth in the encoder.
    """

    model_type = "sceneevent"

    def __init__(
        self,
        scene_labels: list[str] | None = None,
        event_labels: list[str] | None = None,
        alpha: float = 0.5,
        encoder: str = "resnet18",
        encoder_kwargs: dict | None = None,
        encoder_pretrained: str | None = None,
        num_mel_bins: int = 128,
        dropout: float = 0.0,
        drop_path_rate: float = 0.0,
        **kwargs,
    ):
        # A reloaded config carries its scene labels as id2label only.
        if scene_labels is None and "id2label" in kwargs:
            id2label = kwargs["id2label"]
            scene_labels = [id2label[key] for key in sorted(id2label, key=int)]
        scene_labels = list(scene_labels) if scene_labels is not None else ["scene_0", "scene_1"]
        event_labels = list(event_labels) if event_labels is not None else ["event_0"]
        _check_labels("scene_labels", scene_labels)
        _check_labels("event_labels", event_labels)
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"`alpha` must be in [0, 1] (0 = scene task only, 1 = event task only), got {alpha}")
        if num_mel_bins <= 0:
            raise ValueError(f"`num_mel_bins` must be positive, got {num_mel_bins}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"`drop_path_rate` must be in [0, 1), got {drop_path_rate}")

        self.event_labels = event_labels
        self.alpha = float(alpha)
        self.encoder = encoder
        self.encoder_kwargs = dict(encoder_kwargs or {})
        self.encoder_pretrained = encoder_pretrained
        self.num_mel_bins = int(num_mel_bins)
        self.dropout = float(dropout)
        self.drop_path_rate = float(drop_path_rate)
        kwargs["id2label"] = dict(enumerate(scene_labels))
        kwargs["label2id"] = {name: index for index, name in enumerate(scene_labels)}
        kwargs.setdefault("problem_type", "single_label_classification")
        super().__init__(**kwargs)

    @property
    def scene_labels(self) -> list[str]:
        return [self.id2label[index] for index in range(len(self.id2label))]

    @property
    def event_id2label(self) -> dict[int, str]:
        return dict(enumerate(self.event_labels))

    @property
    def event_label2id(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.event_labels)}

    @property
    def num_scenes(self) -> int:
        return len(self.id2label)

    @property
    def num_events(self) -> int:
        return len(self.event_labels)


def _check_labels(name: str, labels: list[str]) -> None:
    if not labels:
        raise ValueError(f"`{name}` must name at least one class")
    if len(set(labels)) != len(labels):
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        raise ValueError(f"`{name}` holds duplicate names: {duplicates}")
