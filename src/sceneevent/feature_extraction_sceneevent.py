"""Log-mel spectrograms of fixed-length clips: any sampling rate, any channel count."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torchaudio
from transformers import BatchFeature, SequenceFeatureExtractor


@lru_cache(maxsize=8)
def _mel_transform(sampling_rate, n_fft, win_length, hop_length, num_mel_bins, f_min, f_max):
    # Cached outside the extractor so that `to_dict()` (preprocessor_config.json) stays plain data.
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sampling_rate,
        n_fft=n_fft,
        win_length=win_length,
        hop_length=hop_length,
        f_min=f_min,
        f_max=f_max,
        n_mels=num_mel_bins,
        power=2.0,
        center=True,
    )


@lru_cache(maxsize=8)
def _resampler(orig_rate: int, new_rate: int):
    # The windowed-sinc kernel is built once per rate pair, not once per clip.
    return torchaudio.transforms.Resample(orig_rate, new_rate)


class LogMelFeatureExtractor(SequenceFeatureExtractor):
    r"""Turns raw audio into `input_features` of shape `(batch, num_mel_bins, frames)`.

    Each clip is downmixed to mono, resampled to `sampling_rate`, cropped or zero-padded to
    `clip_seconds`, and turned into `log(mel_power + log_offset)` with torchaudio.

    Args:
        num_mel_bins (`int`): mel bands (the paper's spectrograms use 128).
        sampling_rate (`int`): rate the model expects; other rates are resampled.
        clip_seconds (`float`): clip length (10 s in the paper).
        n_fft, win_length, hop_length (`int`): STFT settings in samples.
        f_min, f_max (`float`): mel filterbank range in Hz (`f_max=None`: Nyquist).
        log_offset (`float`): added before the log so that silence stays finite.
    """

    model_input_names = ["input_features"]

    def __init__(
        self,
        num_mel_bins: int = 128,
        sampling_rate: int = 32000,
        clip_seconds: float = 10.0,
        n_fft: int = 1024,
        win_length: int | None = None,
        hop_length: int = 320,
        f_min: float = 0.0,
        f_max: float | None = None,
        log_offset: float = 1e-6,
        padding_value: float = 0.0,
        **kwargs,
    ):
        if clip_seconds <= 0:
            raise ValueError(f"`clip_seconds` must be positive, got {clip_seconds}")
        if hop_length <= 0 or n_fft <= 0 or num_mel_bins <= 0:
            raise ValueError("`hop_length`, `n_fft` and `num_mel_bins` must be positive")
        kwargs.pop("feature_size", None)
        super().__init__(feature_size=num_mel_bins, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs)
        self.num_mel_bins = num_mel_bins
        self.clip_seconds = float(clip_seconds)
        self.n_fft = n_fft
        self.win_length = win_length or n_fft
        self.hop_length = hop_length
        self.f_min = float(f_min)
        self.f_max = f_max
        self.log_offset = float(log_offset)

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sampling_rate))

    @property
    def num_frames(self) -> int:
        return self.clip_samples // self.hop_length + 1

    def __call__(
        self,
        raw_audio: np.ndarray | torch.Tensor | list,
        sampling_rate: int | None = None,
        return_tensors: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Featurise one clip or a list of clips.

        Args:
            raw_audio: a clip as a 1-D array (mono) or a 2-D array (channels and samples, either way
                round: the shorter axis is taken as channels), or a list of such clips.
            sampling_rate: the rate of `raw_audio`; defaults to the extractor's own.
            return_tensors: `"pt"`, `"np"` or None (lists).
        """
        sampling_rate = int(sampling_rate or self.sampling_rate)
        clips = raw_audio if isinstance(raw_audio, (list, tuple)) and not _is_number_list(raw_audio) else [raw_audio]
        if len(clips) == 0:
            raise ValueError("LogMelFeatureExtractor got no audio")
        # Crop/pad at the input rate, then resample the whole batch in one call.
        source_length = int(np.ceil(self.clip_seconds * sampling_rate))
        waveforms = torch.stack([self._to_clip(clip, source_length) for clip in clips])  # (B, source samples)
        if sampling_rate != self.sampling_rate:
            waveforms = _resampler(sampling_rate, self.sampling_rate)(waveforms)
        waveforms = _fit(waveforms, self.clip_samples, self.padding_value)  # (B, clip_samples)
        features = self.log_mel(waveforms)  # (B, num_mel_bins, frames)
        return BatchFeature({"input_features": features.numpy()}, tensor_type=return_tensors)

    def log_mel(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(B, samples) float waveforms at `sampling_rate` → (B, num_mel_bins, frames) log-mel."""
        transform = _mel_transform(
            self.sampling_rate, self.n_fft, self.win_length, self.hop_length, self.num_mel_bins, self.f_min, self.f_max
        )
        with torch.no_grad():
            return torch.log(transform(waveforms.float()) + self.log_offset)

    def _to_clip(self, clip, length: int) -> torch.Tensor:
        return _fit(downmix(clip), length, self.padding_value)


def downmix(clip) -> torch.Tensor:
    """A (samples,) or (channels, samples) array, either way round (the shorter axis holds the channels),
    → mono float32 (samples,)."""
    waveform = torch.as_tensor(np.asarray(clip, dtype=np.float32))
    if waveform.ndim == 2:
        channel_axis = 0 if waveform.shape[0] <= waveform.shape[1] else 1
        waveform = waveform.mean(dim=channel_axis)
    if waveform.ndim != 1 or waveform.numel() == 0:
        raise ValueError(
            f"each clip must be a non-empty 1-D (mono) or 2-D (multi-channel) array, got shape {tuple(waveform.shape)}"
        )
    return waveform


def _fit(waveforms: torch.Tensor, length: int, padding_value: float) -> torch.Tensor:
    """Crop or zero-pad the last axis to `length` samples."""
    if waveforms.shape[-1] >= length:
        return waveforms[..., :length]
    return torch.nn.functional.pad(waveforms, (0, length - waveforms.shape[-1]), value=padding_value)


def _is_number_list(values) -> bool:
    return len(values) > 0 and isinstance(values[0], (int, float, np.floating))


LogMelFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
