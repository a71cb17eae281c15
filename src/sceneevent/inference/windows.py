"""A recording of any length as clip-long windows, in bounded memory.

A file is read block by block, downmixed, resampled to the model's rate and cut into windows every
`hop` samples as the blocks arrive; audio already in memory takes the same path. The spectrogram kept
for plots is computed along the way, averaged so that it stays bounded too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from ..data.audio import AudioDecodeError, DecodedAudio, StreamingResampler, open_audio, read_blocks
from ..models.feature_extraction_sceneevent import downmix

# Files read this many frames at a time: a long recording is never held whole (~1 MB per channel).
READ_BLOCK_FRAMES = 2**18
# The spectrogram kept for plots (--plot) has at most about this many columns (~10 MB at 128 mel
# bins): longer recordings are averaged over groups of frames, so that it too stays bounded.
MAX_PLOT_FRAMES = 20_000


def window_starts(num_samples: int, window: int, hop: int) -> np.ndarray:
    """Start samples of the windows that cover `num_samples`: one window for a short recording."""
    if window <= 0 or hop <= 0:
        raise ValueError(f"window and hop must be positive, got window={window}, hop={hop}")
    if num_samples <= window:
        return np.zeros(1, dtype=np.int64)
    count = 1 + math.ceil((num_samples - window) / hop)
    return np.arange(count, dtype=np.int64) * hop


def cut_windows(waveform: torch.Tensor, window: int, hop: int) -> torch.Tensor:
    """(samples,) → (windows, window) clips every `hop` samples, the last one zero-padded."""
    starts = window_starts(waveform.numel(), window, hop)
    needed = int(starts[-1]) + window
    padded = torch.nn.functional.pad(waveform, (0, max(0, needed - waveform.numel())))
    return padded.unfold(0, window, hop)[: len(starts)]


def stream_windows(blocks: Iterable[torch.Tensor], window: int, hop: int) -> Iterator[torch.Tensor]:
    """Clip-long windows every `hop` samples of a signal that arrives in (samples,) blocks.

    The same windows as `cut_windows` on the whole signal (the last ones zero-padded), holding only
    the samples that later windows still need.
    """
    buffer, buffer_start, next_start, total = torch.zeros(0), 0, 0, 0
    for block in blocks:
        buffer = torch.cat([buffer, block])
        total += block.numel()
        while next_start + window <= total:
            offset = next_start - buffer_start
            yield buffer[offset : offset + window]
            next_start += hop
        consumed = min(next_start, total) - buffer_start
        buffer, buffer_start = buffer[consumed:], buffer_start + consumed
    for start in window_starts(total, window, hop).tolist():
        if start >= next_start:  # the tail: windows that reach past the end
            offset = start - buffer_start
            tail = buffer[offset : offset + window]
            yield torch.nn.functional.pad(tail, (0, window - tail.numel()))


@dataclass
class AudioStream:
    """One recording as mono (samples,) blocks at its own rate."""

    source: str
    sampling_rate: int
    channels: int
    frames: int  # expected length in samples (from the header for files), for sizing the plot
    blocks: Iterator[torch.Tensor]
    # The largest |sample| read so far, before downmixing: what an error about too loud audio quotes.
    peak: float = 0.0

    def measured(self, block: np.ndarray) -> np.ndarray:
        """`block`, its peak added to `peak`."""
        if block.size:
            self.peak = max(self.peak, float(np.abs(block).max()))
        return block


@contextmanager
def open_stream(audio, sampling_rate: int | None, default_rate: int) -> Iterator[AudioStream]:
    """A file is read block by block; audio already in memory is cut into blocks of the same size.

    Raises:
        AudioDecodeError: the file cannot be read, or the samples (of a file or in memory) hold NaN or Inf.
    """
    if isinstance(audio, (str, os.PathLike)):
        with open_audio(audio) as (handle, name):
            stream = AudioStream(name, int(handle.samplerate), int(handle.channels), int(handle.frames), iter(()))
            stream.blocks = (_downmix_block(stream.measured(block)) for block in read_blocks(handle, name, READ_BLOCK_FRAMES))
            yield stream
        return
    decoded = _decode(audio, sampling_rate, default_rate)
    if not np.isfinite(decoded.waveform).all():  # as files are checked (`read_blocks`): NaN is bad audio, not a bad model
        raise AudioDecodeError(f"{decoded.source}: holds NaN or Inf samples")
    channels = 1 if decoded.waveform.ndim == 1 else int(min(decoded.waveform.shape))
    mono = downmix(decoded.waveform)
    stream = AudioStream(decoded.source, decoded.sampling_rate, channels, mono.numel(), iter(mono.split(READ_BLOCK_FRAMES)))
    stream.measured(np.asarray(decoded.waveform))
    yield stream


def _downmix_block(block: np.ndarray) -> torch.Tensor:
    """(channels, frames) → mono (frames,): the channel mean, as `downmix` takes it over a whole file."""
    return torch.from_numpy(np.ascontiguousarray(block)).mean(dim=0)


def _decode(audio, sampling_rate: int | None, default_rate: int) -> DecodedAudio:
    """Audio already in memory (a `DecodedAudio`, an array dict, an array or a tensor)."""
    if isinstance(audio, DecodedAudio):
        return audio
    if isinstance(audio, dict):
        array = audio.get("array", audio.get("raw"))
        if array is None or "sampling_rate" not in audio:
            raise ValueError('an audio dict needs "array" (or "raw") and "sampling_rate"')
        return DecodedAudio(np.asarray(array, dtype=np.float32), int(audio["sampling_rate"]), audio.get("path") or "<array>")
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    if isinstance(audio, np.ndarray):
        return DecodedAudio(audio.astype(np.float32, copy=False), int(sampling_rate or default_rate), "<array>")
    raise TypeError(f"cannot read audio from {type(audio).__name__}: pass a path, an array or a dict")


def resampled(blocks: Iterable[torch.Tensor], resampler: StreamingResampler) -> Iterator[torch.Tensor]:
    """The blocks resampled one by one, then what the resampler still holds."""
    for block in blocks:
        yield resampler.push(block)
    yield resampler.finish()


class SpectrogramTrack:
    """The log-mel of a whole recording for plots, computed chunk by chunk as the samples pass.

    Each chunk's spectrogram is averaged over groups of `pooling` frames, chosen from the expected
    length so that at most ~MAX_PLOT_FRAMES columns are kept (a plot cannot show more anyway).
    """

    def __init__(self, extractor, expected_samples: float):
        self.extractor = extractor
        expected_frames = expected_samples / extractor.hop_length
        self.pooling = 1
        while expected_frames / self.pooling > MAX_PLOT_FRAMES:
            self.pooling *= 2
        group = self.pooling * extractor.hop_length  # samples per kept column
        self.chunk = max(1, extractor.clip_samples // group) * group
        self.pending, self.columns = torch.zeros(0), []

    @property
    def frames_per_second(self) -> float:
        return self.extractor.sampling_rate / self.extractor.hop_length / self.pooling

    def tap(self, blocks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Pass the blocks on unchanged, adding each complete chunk to the spectrogram."""
        for block in blocks:
            self.pending = torch.cat([self.pending, block])
            while self.pending.numel() >= self.chunk:
                # chunk / hop_length frames: the frame at the next chunk's first sample comes from that chunk.
                self._add(self._log_mel(self.pending[: self.chunk])[:, :-1])
                self.pending = self.pending[self.chunk :]
            yield block
        if self.pending.numel():
            self._add(self._log_mel(self.pending))
            self.pending = torch.zeros(0)

    def log_mel(self) -> np.ndarray:
        return torch.cat(self.columns, dim=1).numpy() if self.columns else np.zeros((self.extractor.num_mel_bins, 0), np.float32)

    def _log_mel(self, samples: torch.Tensor) -> torch.Tensor:
        return self.extractor.log_mel(samples[None])[0]

    def _add(self, frames: torch.Tensor) -> None:
        if self.pooling > 1:
            frames = torch.nn.functional.avg_pool1d(frames[None], self.pooling, ceil_mode=True)[0]
        self.columns.append(frames)
