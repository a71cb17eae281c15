"""Log-mel spectrograms of fixed-length clips: any sampling rate, any channel count."""

from __future__ import annotations

import math
from fractions import Fraction
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


# Rates outside this range are refused: no recording needs them, and a header claiming 1,000,003 Hz
# is a corrupt file, not audio to resample.
MIN_SAMPLING_RATE = 1_000
MAX_SAMPLING_RATE = 384_000
# torchaudio's windowed-sinc kernel has `new * (orig + 2 * width)` taps for the reduced ratio new/orig:
# coprime rates (44,101 -> 32,000 Hz) would need 1.4 G taps (5.6 GB). Past MAX_KERNEL_TAPS (4 MB of
# float32) the ratio is replaced by the nearest one whose kernel fits. The rate is then off by at most
# ~6e-4 relative (worst for ratios just off 1, e.g. 47,969 -> 48,000 Hz; typically < 1e-5): under one
# cent of pitch and 6 ms per 10 s clip, less than one STFT hop and a small fraction of a mel band.
# Common pairs (48/44.1/32/22.05/16/8 kHz) keep their exact ratio, as before.
MAX_KERNEL_TAPS = 2**20
_LOWPASS_FILTER_WIDTH = 6  # torchaudio's defaults, used to size the kernel
_ROLLOFF = 0.99


def check_sampling_rate(rate, name: str = "sampling rate") -> int:
    """`rate` as an int, or ValueError when it is outside MIN_SAMPLING_RATE..MAX_SAMPLING_RATE Hz."""
    if not MIN_SAMPLING_RATE <= rate <= MAX_SAMPLING_RATE or int(rate) != rate:
        raise ValueError(f"{name} {rate} Hz is not a whole number in {MIN_SAMPLING_RATE}..{MAX_SAMPLING_RATE} Hz")
    return int(rate)


def _kernel_taps(orig: int, new: int) -> int:
    width = math.ceil(_LOWPASS_FILTER_WIDTH * orig / (min(orig, new) * _ROLLOFF))
    return new * (orig + 2 * width)


def resampling_ratio(orig_rate: int, new_rate: int) -> tuple[int, int]:
    """(orig, new): coprime terms with new/orig = new_rate/orig_rate, or the nearest ratio whose kernel fits."""
    exact = Fraction(check_sampling_rate(new_rate), check_sampling_rate(orig_rate))
    ratio, bound = exact, MAX_KERNEL_TAPS
    while _kernel_taps(ratio.denominator, ratio.numerator) > MAX_KERNEL_TAPS and bound > 1:
        bound = bound * 4 // 5
        ratio = _nearest_ratio(exact, bound)
    return ratio.denominator, ratio.numerator


def _nearest_ratio(ratio: Fraction, bound: int) -> Fraction:
    """The closest fraction to `ratio` whose larger term is at most `bound`."""
    return ratio.limit_denominator(bound) if ratio <= 1 else 1 / (1 / ratio).limit_denominator(bound)


@lru_cache(maxsize=16)
def resampler(orig_rate: int, new_rate: int) -> torchaudio.transforms.Resample:
    """The (cached) bounded-memory resampler from `orig_rate` to `new_rate` Hz; see `resampling_ratio`."""
    orig, new = resampling_ratio(orig_rate, new_rate)
    return torchaudio.transforms.Resample(orig, new)


def resample(waveforms: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """(..., samples) float waveforms from `orig_rate` to `new_rate` Hz in bounded memory, for any rates in range.

    Every resampling in sceneevent goes through here (extractor, predict, event ranking).
    """
    if int(orig_rate) == int(new_rate):
        check_sampling_rate(orig_rate)
        return waveforms
    with torch.no_grad():
        return resampler(int(orig_rate), int(new_rate))(waveforms)


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
        sampling_rate = check_sampling_rate(sampling_rate or self.sampling_rate, "sampling_rate")
        clips = raw_audio if isinstance(raw_audio, (list, tuple)) and not _is_number_list(raw_audio) else [raw_audio]
        if len(clips) == 0:
            raise ValueError("LogMelFeatureExtractor got no audio")
        # Crop/pad at the input rate, then resample the whole batch in one call.
        source_length = int(np.ceil(self.clip_seconds * sampling_rate))
        waveforms = torch.stack([self._to_clip(clip, source_length) for clip in clips])  # (B, source samples)
        waveforms = resample(waveforms, sampling_rate, self.sampling_rate)
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
