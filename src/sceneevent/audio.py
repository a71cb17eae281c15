"""Audio decoding with soundfile: no FFmpeg, no torchcodec.

Every data set keeps its `audio` column undecoded, as the struct `{"bytes": binary, "path": string}`
that `datasets.Audio(decode=False)` also stores. Audio is decoded here, once, when the log-mel cache
is built (and by `predict`), never in the training loop.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import datasets
import numpy as np
import soundfile as sf

# The column type every source uses for `audio`: the storage of `datasets.Audio(decode=False)`,
# declared as a plain struct so that writing it needs no torchcodec.
AUDIO_FEATURE = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}


class AudioDecodeError(ValueError):
    """A file that cannot be read as audio, or whose samples are not finite."""


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
        AudioDecodeError: the file is missing, unreadable, empty, or holds NaN/Inf samples.
    """
    if isinstance(entry, (str, os.PathLike)):
        entry = {"bytes": None, "path": os.fspath(entry)}
    name = audio_entry_name(entry)
    source = io.BytesIO(entry["bytes"]) if entry.get("bytes") else entry.get("path")
    if source is None:
        raise AudioDecodeError(f"{name}: audio entry has neither bytes nor a path")
    try:
        data, sampling_rate = sf.read(source, dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises LibsndfileError, RuntimeError, OSError, TypeError
        raise AudioDecodeError(f"{name}: cannot be decoded as audio ({error})") from error
    if data.shape[0] == 0:
        raise AudioDecodeError(f"{name}: holds no samples")
    if not np.isfinite(data).all():
        raise AudioDecodeError(f"{name}: holds NaN or Inf samples")
    return DecodedAudio(waveform=np.ascontiguousarray(data.T), sampling_rate=int(sampling_rate), source=name)
