import numpy as np
import pytest
import torch

from sceneevent import LogMelFeatureExtractor


@pytest.mark.parametrize("rate", [16000, 32000, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_any_rate_and_channel_count_gives_the_same_shape(rate, channels):
    extractor = LogMelFeatureExtractor(num_mel_bins=64, sampling_rate=16000, clip_seconds=1.0, hop_length=160, n_fft=512)
    rng = np.random.default_rng(0)
    clip = rng.standard_normal(rate) if channels == 1 else rng.standard_normal((channels, rate))
    features = extractor(clip, sampling_rate=rate, return_tensors="pt")["input_features"]
    assert features.shape == (1, 64, 101) == (1, extractor.num_mel_bins, extractor.num_frames)
    assert torch.isfinite(features).all()


def test_paper_shape_is_128_by_1001_for_10_seconds():
    extractor = LogMelFeatureExtractor()
    features = extractor(np.zeros(320000, dtype=np.float32), sampling_rate=32000, return_tensors="np")["input_features"]
    assert features.shape == (1, 128, 1001)


def test_stereo_is_downmixed_and_channel_order_does_not_matter():
    extractor = LogMelFeatureExtractor(num_mel_bins=32, sampling_rate=8000, clip_seconds=0.5, hop_length=80, n_fft=256)
    rng = np.random.default_rng(1)
    left, right = rng.standard_normal(4000), rng.standard_normal(4000)
    stereo = extractor(np.stack([left, right]), return_tensors="np")["input_features"]
    samples_first = extractor(np.stack([left, right], axis=1), return_tensors="np")["input_features"]
    mono = extractor((left + right) / 2, return_tensors="np")["input_features"]
    np.testing.assert_allclose(stereo, mono, atol=1e-4)
    np.testing.assert_allclose(samples_first, mono, atol=1e-4)


def test_short_clips_are_padded_and_long_ones_cropped():
    extractor = LogMelFeatureExtractor(num_mel_bins=32, sampling_rate=8000, clip_seconds=1.0, hop_length=80, n_fft=256)
    rng = np.random.default_rng(2)
    long = rng.standard_normal(20000)
    cropped = extractor(long, return_tensors="np")["input_features"]
    exact = extractor(long[:8000], return_tensors="np")["input_features"]
    np.testing.assert_allclose(cropped, exact)
    short = extractor(rng.standard_normal(1000), return_tensors="np")["input_features"]
    assert short.shape == exact.shape
    # the padded tail is silence: the floor log(offset)
    assert np.allclose(short[0, :, -5:], np.log(extractor.log_offset), atol=1e-3)


def test_resampling_preserves_a_tone_position():
    extractor = LogMelFeatureExtractor(num_mel_bins=64, sampling_rate=16000, clip_seconds=1.0, hop_length=160, n_fft=512)
    peaks = []
    for rate in (16000, 44100):
        t = np.arange(rate) / rate
        features = extractor(np.sin(2 * np.pi * 1000 * t), sampling_rate=rate, return_tensors="np")["input_features"]
        peaks.append(int(features[0].mean(axis=1).argmax()))
    assert abs(peaks[0] - peaks[1]) <= 1


def test_silence_stays_finite_and_batches_work():
    extractor = LogMelFeatureExtractor(num_mel_bins=16, sampling_rate=8000, clip_seconds=0.25, hop_length=80, n_fft=256)
    batch = extractor([np.zeros(2000), np.ones(500) * 0.1, np.zeros((2, 3000))], sampling_rate=8000, return_tensors="pt")
    assert batch["input_features"].shape == (3, 16, 26)
    assert torch.isfinite(batch["input_features"]).all()


@pytest.mark.parametrize("bad", [np.zeros(0), np.zeros((2, 2, 10))])
def test_bad_arrays_are_clear_errors(bad):
    extractor = LogMelFeatureExtractor(num_mel_bins=16, sampling_rate=8000, clip_seconds=0.25)
    with pytest.raises(ValueError, match="clip"):
        extractor(bad)


def test_preprocessor_config_round_trip(tmp_path):
    extractor = LogMelFeatureExtractor(num_mel_bins=40, sampling_rate=22050, clip_seconds=3.0, hop_length=256, f_max=8000)
    extractor.save_pretrained(tmp_path)
    assert (tmp_path / "preprocessor_config.json").exists()
    again = LogMelFeatureExtractor.from_pretrained(tmp_path)
    assert again.to_dict() == extractor.to_dict()
    assert again.num_frames == extractor.num_frames == 3 * 22050 // 256 + 1
