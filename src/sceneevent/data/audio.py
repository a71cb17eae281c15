"""Audio decoding with soundfile: no FFmpeg, no torchcodec.

Every data set keeps its `audio` column undecoded, as the struct `{"bytes": binary, "path": string}`
that `datasets.Audio(decode=False)` also stores. Audio is decoded here, once, when the log-mel cache
is built (and by `predict`), never in the training loop.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import datasets
import numpy as np
import soundfile as sf
import torch

from ..models.feature_extraction_sceneevent import check_sampling_rate, resampler

# The column type every source uses for `audio`: the storage of `datasets.Audio(decode=False)`,
# declared as a plain struct so that writing it needs no torchcodec.
AUDIO_FEATURE = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}


class AudioDecodeError(ValueError):
    """A file that cannot be read as audio, whose samples are not finite, or whose rate is absurd."""


@dataclass
class DecodedAudio:
    waveform: np.ndarray  # (channels, samples) float32
    sampling_rate: int
    source: str


def audio_entry_name(entry: dict | str) -> str:
    """A human-readable name for an audio entry (its path, or `<bytes>`)."""
    if isinstance(entry, str):
        return entry
    return entry.get("path") or "<bytes>"


def encode_wav(waveform: np.ndarray, sampling_rate: int, subtype: str = "PCM_16") -> bytes:
    """Encode a (channels, samples) or (samples,) float array as WAV bytes."""
    data = waveform.T if waveform.ndim == 2 else waveform
    buffer = io.BytesIO()
    sf.write(buffer, data, sampling_rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def load_audio(entry: dict | str | os.PathLike) -> DecodedAudio:
    """Decode one audio entry (a path, or a `{"bytes", "path"}` dict) to float32 (channels, samples).

    Raises:
        AudioDecodeError: the file is missing, unreadable, empty, holds NaN/Inf samples, or its
            sampling rate is outside MIN_SAMPLING_RATE..MAX_SAMPLING_RATE.
    """
    with open_audio(entry) as (handle, name):
        data = _read(handle, name, -1)
    if data.shape[0] == 0:
        raise AudioDecodeError(f"{name}: holds no samples")
    _check_finite(data, name)
    return DecodedAudio(waveform=np.ascontiguousarray(data.T), sampling_rate=int(handle.samplerate), source=name)


@contextmanager
def open_audio(entry: dict | str | os.PathLike) -> Iterator[tuple[sf.SoundFile, str]]:
    """An open `soundfile.SoundFile` of `entry` and its name, its sampling rate checked before any sample is read."""
    if isinstance(entry, (str, os.PathLike)):
        entry = {"bytes": None, "path": os.fspath(entry)}
    name = audio_entry_name(entry)
    source = io.BytesIO(entry["bytes"]) if entry.get("bytes") else entry.get("path")
    if source is None:
        raise AudioDecodeError(f"{name}: audio entry has neither bytes nor a path")
    try:
        handle = sf.SoundFile(source)
    except Exception as error:  # soundfile raises LibsndfileError, RuntimeError, OSError, TypeError
        raise AudioDecodeError(f"{name}: cannot be decoded as audio ({error})") from error
    with handle:
        try:
            check_sampling_rate(handle.samplerate)
        except ValueError as error:  # a corrupt header: refusing it is cheaper than resampling it
            raise AudioDecodeError(f"{name}: {error}") from error
        yield handle, name


def read_blocks(handle: sf.SoundFile, name: str, frames: int) -> Iterator[np.ndarray]:
    """(channels, frames) float32 blocks of an open file, each checked; the whole file is never held.

    Raises:
        AudioDecodeError: a block cannot be decoded or holds NaN/Inf, or the file holds no samples.
    """
    total = 0
    while True:
        block = _read(handle, name, frames)
        if block.shape[0] == 0:
            break
        _check_finite(block, name)
        total += block.shape[0]
        yield block.T
    if total == 0:
        raise AudioDecodeError(f"{name}: holds no samples")


def _read(handle: sf.SoundFile, name: str, frames: int) -> np.ndarray:
    try:
        return handle.read(frames, dtype="float32", always_2d=True)
    except Exception as error:
        raise AudioDecodeError(f"{name}: cannot be decoded as audio ({error})") from error


def _check_finite(samples: np.ndarray, name: str) -> None:
    if not np.isfinite(samples).all():
        raise AudioDecodeError(f"{name}: holds NaN or Inf samples")


class StreamingResampler:
    """Resamples a signal that arrives in blocks: the same samples as `resample` on the whole signal.

    torchaudio's sinc resampler is a strided convolution: output frame `f` (`new` samples) reads input
    `[f * orig - width, f * orig + orig + width)`, zero outside the signal. Each `push` computes every
    frame whose input has arrived and keeps only the input later frames still need, so memory is
    bounded by the block size, whatever the length of the signal.
    """

    def __init__(self, orig_rate: int, new_rate: int):
        self.identity = int(orig_rate) == int(new_rate)
        check_sampling_rate(orig_rate)
        check_sampling_rate(new_rate)
        self.received = self.emitted = self.frames_done = 0  # input samples, output samples, kernel strides
        if self.identity:
            return
        transform = resampler(int(orig_rate), int(new_rate))
        self.orig, self.new = transform.orig_freq, transform.new_freq  # coprime: gcd 1
        self.width, self.kernel = transform.width, transform.kernel
        self.pending = torch.zeros(self.width)  # the left zero padding; pending[0] is input index frames_done * orig - width

    def push(self, block: torch.Tensor) -> torch.Tensor:
        """Feed the next (samples,) block; returns the output samples that are now complete."""
        self.received += block.numel()
        if self.identity:
            self.emitted += block.numel()
            return block
        self.pending = torch.cat([self.pending, block.float()])
        ready = (self.received - self.orig - self.width) // self.orig + 1 - self.frames_done
        output = self._emit(ready)
        self.emitted += output.numel()
        return output

    def finish(self) -> torch.Tensor:
        """The remaining output samples: `ceil(received * new / orig)` in all, as torchaudio gives."""
        if self.identity:
            return torch.zeros(0)
        total = -(-self.received * self.new // self.orig)
        frames = -(-total // self.new) - self.frames_done
        needed = frames * self.orig + 2 * self.width
        self.pending = torch.nn.functional.pad(self.pending, (0, max(0, needed - self.pending.numel())))
        output = self._emit(frames)[: total - self.emitted]
        self.emitted = total
        return output

    @torch.no_grad()
    def _emit(self, frames: int) -> torch.Tensor:
        if frames <= 0:
            return torch.zeros(0)
        segment = self.pending[: frames * self.orig + 2 * self.width]
        output = torch.nn.functional.conv1d(segment[None, None], self.kernel, stride=self.orig)  # (1, new, frames)
        self.pending = self.pending[frames * self.orig :]
        self.frames_done += frames
        return output[0].T.reshape(-1)
