"""A timm encoder on log-mel spectrograms shared by a scene (softmax) head and an event (sigmoid) head."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_sceneevent import SceneEventConfig
from .losses import IGNORE_INDEX, event_loss, joint_loss, scene_loss


@dataclass
class SceneEventOutput(ModelOutput):
    """Output of [`SceneEventModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): `alpha * loss_aet + (1 - alpha) * loss_asc`,
            over the tasks whose labels were given.
        loss_asc (`torch.FloatTensor` of shape `()`, *optional*): scene cross-entropy (unweighted).
        loss_aet (`torch.FloatTensor` of shape `()`, *optional*): event binary cross-entropy (unweighted).
        logits (`torch.FloatTensor` of shape `(batch_size, num_scenes)`): the scene logits again, under
            the name that `pipeline("audio-classification")` reads.
        scene_logits (`torch.FloatTensor` of shape `(batch_size, num_scenes)`): softmax-head logits.
        event_logits (`torch.FloatTensor` of shape `(batch_size, num_events)`): sigmoid-head logits.
        embeddings (`torch.FloatTensor` of shape `(batch_size, hidden_size)`): pooled encoder output.
    """

    loss: torch.FloatTensor | None = None
    loss_asc: torch.FloatTensor | None = None
    loss_aet: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    scene_logits: torch.FloatTensor | None = None
    event_logits: torch.FloatTensor | None = None
    embeddings: torch.FloatTensor | None = None


class SceneEventPreTrainedModel(PreTrainedModel):
    config_class = SceneEventConfig
    base_model_prefix = "sceneevent"
    main_input_name = "input_features"

    def _init_weights(self, module: nn.Module) -> None:
        # timm initialises the encoder itself; only our own layers are set here.
        if isinstance(module, nn.Linear) and getattr(module, "_is_head", False):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, refusing weights that do not fit the config.

        transformers only logs missing and unexpected weights and leaves the missing ones
        uninitialised (e.g. a resnet34 config on resnet18 weights gives NaN scores); a sceneevent
        folder must hold exactly the weights its config describes.
        """
        wants_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        _check_loading_info(pretrained_model_name_or_path, model.config, info)
        return (model, info) if wants_info else model

    def save_pretrained(self, save_directory, *args, **kwargs):
        # `register_for_auto_class` records one auto class; the pipeline needs the second one too.
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        auto_map["AutoModelForAudioClassification"] = f"{type(self).__module__.split('.')[-1]}.{type(self).__name__}"
        self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)


class WeightsMismatchError(ValueError):
    """A model folder whose weights do not fit its config (missing or unexpected keys)."""


def _check_loading_info(source, config, info: dict) -> None:
    """WeightsMismatchError naming the folder and a few keys when weights are missing from it or left over."""
    # BatchNorm's step counters are not weights; older saves may lack them.
    problems = {
        kind: sorted(key for key in info.get(f"{kind}_keys") or () if not key.endswith("num_batches_tracked"))
        for kind in ("missing", "unexpected")
    }
    problems = {kind: keys for kind, keys in problems.items() if keys}
    if problems:
        listing = "; ".join(f"{len(keys)} {kind} (e.g. {', '.join(keys[:4])})" for kind, keys in problems.items())
        raise WeightsMismatchError(
            f"{source}: its weights do not fit its config (encoder {getattr(config, 'encoder', '?')!r}): {listing}. "
            "Was config.json edited, or copied from another run?"
        )


def encoder_weights_file(source: str) -> Path:
    """The local file of `source`: the path itself, or a Hub repository's `model.safetensors` (else
    `pytorch_model.bin`, as timm publishes them) fetched into the Hub cache; a clear error when neither can be had."""
    if Path(source).expanduser().is_file():
        return Path(source).expanduser()
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import HFValidationError, RemoteEntryNotFoundError

    try:
        try:
            return Path(hf_hub_download(source, "model.safetensors"))
        except RemoteEntryNotFoundError:  # the repository is there, without that file
            return Path(hf_hub_download(source, "pytorch_model.bin"))
    except HFValidationError as error:
        raise ValueError(f"encoder_pretrained {source!r}: neither a local weights file nor a Hub id ({error})") from error
    except Exception as error:  # connection, offline mode, no such repository, no weights file: say which
        raise OSError(f"encoder_pretrained {source!r}: could not fetch its weights from the Hub at {constants.ENDPOINT} "
                      f"({type(error).__name__}: {str(error)[:500]}). Check the connection and HF_HUB_OFFLINE, or pass a "
                      "local weights file (.safetensors, .pth, .bin).") from error


class SceneEventModel(SceneEventPreTrainedModel):
    """ResNet-18 (or any timm encoder) with one linear scene head and one linear event head."""

    def __init__(self, config: SceneEventConfig):
        super().__init__(config)
        # Per-mel-bin normalisation of the log-mel input, learned (as in PANNs' bn0); BatchNorm1d on
        # (B, n_mels, frames) treats the mel bins as channels without a transposed copy.
        self.input_norm = nn.BatchNorm1d(config.num_mel_bins)
        self.encoder = timm.create_model(
            config.encoder,
            pretrained=False,
            in_chans=1,
            num_classes=0,
            drop_path_rate=config.drop_path_rate or None,
            **config.encoder_kwargs,
        )
        hidden_size = self.encoder.num_features
        self.dropout = nn.Dropout(config.dropout)
        self.scene_head = nn.Linear(hidden_size, config.num_scenes)
        self.event_head = nn.Linear(hidden_size, config.num_events)
        self.scene_head._is_head = self.event_head._is_head = True
        self.post_init()

    def load_pretrained_encoder(self, weights_file: str | Path | None = None) -> None:
        """Load the encoder's published weights named by `config.encoder_pretrained` (or `weights_file`, that
        source already fetched): the first convolution summed over its colour channels (timm's `adapt_input_conv`
        for one input channel), the classifier dropped, every other tensor as published.

        Not part of `__init__`: `from_pretrained` would fetch them again only to replace them with the saved weights.
        """
        source = self.config.encoder_pretrained
        if weights_file is None and not source:
            raise ValueError("config.encoder_pretrained names no weights to load")
        path = Path(weights_file) if weights_file is not None else encoder_weights_file(source)
        weights = timm.models.load_state_dict(str(path))
        pretrained = self.encoder.pretrained_cfg
        first_conv, classifier = f"{pretrained['first_conv']}.weight", pretrained.get("classifier")
        if first_conv in weights and weights[first_conv].shape[1] != 1:
            weights[first_conv] = timm.models.adapt_input_conv(1, weights[first_conv])
        weights = {key: value for key, value in weights.items() if not (classifier and key.startswith(f"{classifier}."))}
        try:
            self.encoder.load_state_dict(weights)
        except RuntimeError as error:  # missing, unexpected or misshapen tensors
            raise ValueError(f"encoder_pretrained {source or path}: these weights do not fit encoder "
                             f"{self.config.encoder!r}: {str(error)[:1000]}") from error

    def forward(
        self,
        input_features: torch.Tensor,
        scene_labels: torch.Tensor | None = None,
        event_labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SceneEventOutput:
        """
        Args:
            input_features: log-mel spectrograms `(B, num_mel_bins, frames)` or `(B, 1, num_mel_bins, frames)`.
            scene_labels: `(B,)` class indices or `(B, num_scenes)` soft targets; rows of `-100` are unlabelled.
            event_labels: `(B, num_events)` multi-hot or mixed targets; rows of `-100` are unlabelled.
        """
        features = self.input_norm(self._check_input(input_features))  # (B, n_mels, frames)
        embeddings = self.encoder(features.unsqueeze(1))  # (B, 1, n_mels, frames) → (B, hidden)
        pooled = self.dropout(embeddings)
        scene_logits = self.scene_head(pooled)
        event_logits = self.event_head(pooled)

        loss_asc = loss_aet = loss = None
        if scene_labels is not None:
            self._check_labels("scene_labels", scene_labels, features.shape[0], self.config.num_scenes)
            loss_asc = scene_loss(scene_logits, scene_labels)
        if event_labels is not None:
            self._check_labels("event_labels", event_labels, features.shape[0], self.config.num_events)
            loss_aet = event_loss(event_logits, event_labels)
        if loss_asc is not None or loss_aet is not None:
            loss = joint_loss(loss_asc, loss_aet, self.config.alpha)
        return SceneEventOutput(
            loss=loss,
            loss_asc=loss_asc,
            loss_aet=loss_aet,
            logits=scene_logits,
            scene_logits=scene_logits,
            event_logits=event_logits,
            embeddings=embeddings,
        )

    def _check_input(self, input_features: torch.Tensor) -> torch.Tensor:
        if input_features.ndim == 4 and input_features.shape[1] == 1:
            input_features = input_features.squeeze(1)
        if input_features.ndim != 3 or input_features.shape[1] != self.config.num_mel_bins:
            raise ValueError(
                "`input_features` must have shape (batch, num_mel_bins, frames) or (batch, 1, num_mel_bins, frames) "
                f"with num_mel_bins={self.config.num_mel_bins}, got {tuple(input_features.shape)}"
            )
        return input_features.to(self.input_norm.weight.dtype)

    @staticmethod
    def _check_labels(name: str, labels: torch.Tensor, batch_size: int, num_classes: int) -> None:
        expected = f"({batch_size},) class indices or ({batch_size}, {num_classes}) targets"
        if labels.shape[0] != batch_size or (labels.ndim == 2 and labels.shape[1] != num_classes) or labels.ndim > 2:
            raise ValueError(f"`{name}` must have shape {expected}, got {tuple(labels.shape)}")
        if labels.ndim == 1 and name == "event_labels":
            raise ValueError(f"`event_labels` must be multi-hot ({batch_size}, {num_classes}), got {tuple(labels.shape)}")
        # Range check of hard labels only where it costs no device sync, and not while torch.compile traces
        # (its boolean indexing would split the graph in two).
        if labels.ndim == 1 and labels.device.type == "cpu" and not torch.compiler.is_compiling():
            bad = labels[(labels != IGNORE_INDEX) & ((labels < 0) | (labels >= num_classes))]
            if bad.numel():
                raise ValueError(f"`{name}` holds {bad.unique().tolist()}, not a class of the config (0..{num_classes - 1})")


SceneEventConfig.register_for_auto_class()
SceneEventModel.register_for_auto_class("AutoModel")
