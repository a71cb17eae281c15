"""Pipeline loading (also without the package), windowed prediction, event tagging and the predict CLI."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sceneevent import LogMelFeatureExtractor, SceneEventConfig, SceneEventModel
from sceneevent.inference.files import expand_inputs, predict_files
from sceneevent.inference.pipeline import classify_scene, load_pipeline, predict, tag_events
from sceneevent.inference.windows import cut_windows, window_starts

REPO_ROOT = Path(__file__).resolve().parents[1]
SCENES = ["park", "street", "metro"]
EVENTS = ["Speech", "Music", "Dog", "Car"]
RATE = 8000  # the model's rate; files are written at other rates on purpose


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = SceneEventModel(SceneEventConfig(scene_labels=SCENES, event_labels=EVENTS, encoder="resnet10t", num_mel_bins=16))
    # Random heads with a large spread, so that the top scene is not a near tie.
    torch.nn.init.normal_(model.scene_head.weight, std=1.0)
    torch.nn.init.normal_(model.event_head.weight, std=1.0)
    model.save_pretrained(folder)
    LogMelFeatureExtractor(num_mel_bins=16, sampling_rate=RATE, clip_seconds=10.0, hop_length=160, n_fft=256).save_pretrained(folder)
    (folder / "results.json").write_text(json.dumps({"final": {"asc_macro_accuracy": 0.5, "aet_lwlrap": 0.5}, "alpha": 0.5}))
    return folder


@pytest.fixture(scope="module")
def classifier(run_dir: Path):
    return load_pipeline(run_dir, device="cpu")


def noise(seconds: float, rate: int, channels: int, seed: int) -> np.ndarray:
    """(samples, channels) quiet noise with a tone, as soundfile writes it."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * (300 + 200 * seed) * t)
    return (tone[:, None] + 0.05 * rng.standard_normal((t.size, channels))).astype(np.float32)


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("audio")
    sf.write(folder / "long_stereo.wav", noise(35, 44100, 2, 0), 44100)
    (folder / "nested").mkdir()
    sf.write(folder / "nested" / "short.flac", noise(3, 16000, 1, 1), 16000)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really audio")
    (folder / "notes.txt").write_text("not audio, ignored in folders")
    return folder


# ---------------------------------------------------------------------------------------------- windows


@pytest.mark.parametrize(
    ("num_samples", "window", "hop", "expected"),
    [
        (35, 10, 10, [0, 10, 20, 30]),  # 35 s of 10 s clips: 4 windows, the last padded
        (30, 10, 10, [0, 10, 20]),  # exact fit: no empty padded window
        (3, 10, 10, [0]),  # shorter than a clip: one padded window
        (10, 10, 10, [0]),
        (35, 10, 5, [0, 5, 10, 15, 20, 25]),  # overlap: the last window still reaches the end
        (11, 10, 20, [0, 20]),  # hop longer than a clip: the tail still gets a window
    ],
)
def test_window_starts(num_samples: int, window: int, hop: int, expected: list[int]):
    assert window_starts(num_samples, window, hop).tolist() == expected


def test_cut_windows_zero_pads_the_last_window():
    waveform = torch.arange(1, 26, dtype=torch.float32)  # 25 samples
    windows = cut_windows(waveform, 10, 10)
    assert windows.shape == (3, 10)
    assert torch.equal(windows[1], waveform[10:20])
    assert torch.equal(windows[2, :5], waveform[20:]) and not windows[2, 5:].any()


@pytest.mark.parametrize(("window", "hop"), [(0, 10), (10, 0), (10, -1)])
def test_window_starts_rejects_bad_sizes(window: int, hop: int):
    with pytest.raises(ValueError, match="positive"):
        window_starts(100, window, hop)


# ---------------------------------------------------------------------------------------------- predict


def test_long_stereo_file_gives_four_windows_and_an_aggregate(classifier, audio_dir: Path):
    prediction = predict(classifier, audio_dir / "long_stereo.wav")
    assert prediction.num_windows == 4
    assert prediction.window_times == [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0), (30.0, 40.0)]
    assert (prediction.sampling_rate, prediction.channels) == (44100, 2)
    assert prediction.duration_seconds == pytest.approx(35.0, abs=1e-3)
    assert prediction.scene_probs.shape == (4, len(SCENES)) and prediction.event_scores.shape == (4, len(EVENTS))
    assert np.allclose(prediction.scene_probs.sum(axis=1), 1.0, atol=1e-5)
    assert ((prediction.event_scores > 0) & (prediction.event_scores < 1)).all()
    assert np.allclose(prediction.scene_probabilities, prediction.scene_probs.mean(axis=0))
    assert np.allclose(prediction.event_probabilities, prediction.event_scores.max(axis=0))
    assert prediction.scene == SCENES[int(prediction.scene_probs.mean(axis=0).argmax())]
    # The padded last window sees other audio than the first: the windows really differ.
    assert not np.allclose(prediction.event_scores[0], prediction.event_scores[3])


def test_first_window_matches_the_pipeline(classifier, audio_dir: Path):
    data, rate = sf.read(audio_dir / "long_stereo.wav", dtype="float32")
    prediction = predict(classifier, audio_dir / "long_stereo.wav")
    # The pipeline crops to one clip: the same audio as window 0.
    scores = classifier({"array": data.mean(axis=1), "sampling_rate": rate}, top_k=len(SCENES))
    expected = {item["label"]: item["score"] for item in scores}
    got = {item["label"]: item["score"] for item in prediction.top_scenes(len(SCENES), window=0)}
    assert got == pytest.approx(expected, abs=1e-4)


def test_mean_pooling_and_hop(classifier, audio_dir: Path):
    prediction = predict(classifier, audio_dir / "long_stereo.wav", hop_seconds=5.0, event_pooling="mean")
    assert prediction.num_windows == 6 and prediction.hop_seconds == 5.0
    assert np.allclose(prediction.event_probabilities, prediction.event_scores.mean(axis=0))


def test_tag_events_and_classify_scene(classifier, audio_dir: Path):
    data, rate = sf.read(audio_dir / "nested" / "short.flac", dtype="float32")
    events = tag_events(classifier, data, sampling_rate=rate, top_k=3)
    assert [set(item) for item in events] == [{"label", "score"}] * 3
    assert all(item["label"] in EVENTS and 0 < item["score"] < 1 for item in events)
    assert [item["score"] for item in events] == sorted((item["score"] for item in events), reverse=True)
    scenes = classify_scene(classifier, {"array": data, "sampling_rate": rate}, top_k=len(SCENES))
    assert sum(item["score"] for item in scenes) == pytest.approx(1.0, abs=1e-5)
    # A path and the decoded array give the same answer.
    from_path = tag_events(classifier, audio_dir / "nested" / "short.flac", top_k=3)
    assert [item["label"] for item in from_path] == [item["label"] for item in events]
    assert [item["score"] for item in from_path] == pytest.approx([item["score"] for item in events])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"event_pooling": "median"}, "event_pooling"), ({"hop_seconds": 0.0}, "hop_seconds")],
)
def test_predict_rejects_bad_settings(classifier, kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message):
        predict(classifier, np.zeros(RATE, dtype=np.float32), **kwargs)


def test_predict_rejects_what_is_not_a_model_or_audio(classifier):
    with pytest.raises(TypeError, match="run folder, a Hub id or an audio-classification pipeline"):
        predict(42, np.zeros(RATE, dtype=np.float32))
    with pytest.raises(TypeError, match="cannot read audio from list"):
        predict(classifier, [0.0, 1.0])


# ---------------------------------------------------------------------------------------------- files


def test_expand_inputs_folders_globs_and_missing(audio_dir: Path):
    files, missing = expand_inputs([str(audio_dir), str(audio_dir / "*.wav"), str(audio_dir / "absent.ogg")])
    names = [path.name for path in files]
    assert names == ["corrupt.wav", "long_stereo.wav", "short.flac"]  # recursive, no .txt, no repeats
    assert [item["source"] for item in missing] == [str(audio_dir / "absent.ogg")]


def test_corrupt_file_is_reported_and_the_others_processed(classifier, audio_dir: Path):
    files, _ = expand_inputs([str(audio_dir)])
    predictions, failures = predict_files(classifier, files, progress=False)
    assert sorted(Path(p.source).name for p in predictions) == ["long_stereo.wav", "short.flac"]
    (failure,) = failures
    assert failure["source"].endswith("corrupt.wav") and "cannot be decoded" in failure["error"]


# ---------------------------------------------------------------------------------------------- CLI


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_cli_json_output_and_plots(run_dir: Path, audio_dir: Path, tmp_path: Path):
    output, plots = tmp_path / "predictions.json", tmp_path / "plots"
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "predict.py"), str(audio_dir), "--model", str(run_dir),
         "--output_format", "json", "--output_file", str(output), "--plot", str(plots), "--device", "cpu", "--disable_tqdm"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert completed.returncode == 0, completed.stderr
    payload = json.loads(output.read_text())
    by_name = {Path(item["source"]).name: item for item in payload["files"]}
    assert set(by_name) == {"long_stereo.wav", "short.flac"}
    long = by_name["long_stereo.wav"]
    assert long["num_windows"] == len(long["windows"]) == 4
    assert long["aggregate"]["scene"] in SCENES and len(long["aggregate"]["events"]) == 3
    assert [Path(item["source"]).name for item in payload["failures"]] == ["corrupt.wav"]
    assert "corrupt.wav" in completed.stderr  # listed at the end as well
    assert sorted(path.name for path in plots.iterdir()) == ["long_stereo.png", "short.png"]
    assert (plots / "long_stereo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_csv_and_table(run_dir: Path, audio_dir: Path, tmp_path: Path, capsys):
    script = load_script("predict")
    common = [str(audio_dir / "long_stereo.wav"), str(audio_dir / "corrupt.wav"), "--model", str(run_dir), "--device", "cpu",
              "--disable_tqdm"]
    assert script.main(common + ["--output_format", "csv", "--output_file", str(tmp_path / "p.csv")]) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "p.csv").read_text())))
    assert [row["window"] for row in rows] == ["0", "1", "2", "3", "all", ""]
    assert rows[-1]["source"].endswith("corrupt.wav") and rows[-1]["error"]
    assert all(row["scene"] in SCENES for row in rows[:5])
    capsys.readouterr()
    assert script.main(common) == 0
    table = capsys.readouterr().out
    assert "4 windows" in table and "30.0-40.0" in table and "could not be processed" in table


def test_csv_cells_that_would_run_as_spreadsheet_formulas_are_quoted():
    from sceneevent.inference.formats import to_csv

    text = to_csv([], [{"source": "=HYPERLINK(\"http://example.invalid\")", "error": "-decoding failed"}])
    row = next(csv.DictReader(io.StringIO(text)))
    assert row["source"] == "'=HYPERLINK(\"http://example.invalid\")" and row["error"] == "'-decoding failed"


def test_cli_exit_code_when_nothing_works(run_dir: Path, audio_dir: Path, capsys):
    script = load_script("predict")
    assert script.main([str(audio_dir / "corrupt.wav"), "--model", str(run_dir), "--device", "cpu", "--disable_tqdm"]) == 1
    assert "corrupt.wav" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- remote code


BLOCKED_LOAD = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class BlockSceneevent(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "sceneevent" or name.startswith("sceneevent."):
                raise ImportError(f"blocked: {name}")
            return None

    sys.meta_path.insert(0, BlockSceneevent())
    sys.path = [entry for entry in sys.path if not entry.rstrip("/").endswith("/src")]
    try:
        import sceneevent
        raise SystemExit("sceneevent was importable")
    except ImportError:
        pass

    import numpy as np, soundfile as sf, torch
    from transformers import pipeline

    run_dir, audio_path = sys.argv[1], sys.argv[2]
    classifier = pipeline("audio-classification", model=run_dir, trust_remote_code=True, device="cpu")
    data, rate = sf.read(audio_path, dtype="float32")
    mono = data.mean(axis=1)
    top = classifier({"array": mono, "sampling_rate": rate}, top_k=3)
    # The model's own forward on the same features.
    features = classifier.feature_extractor(mono, sampling_rate=rate, return_tensors="pt")
    with torch.no_grad():
        outputs = classifier.model(**features)
    config = classifier.model.config
    print(json.dumps({
        "pipeline": top,
        "forward_scene": config.id2label[int(outputs.scene_logits.argmax(-1))],
        "event_scores": outputs.event_logits.sigmoid()[0].tolist(),
        "event_labels": config.event_labels,
        "model_module": type(classifier.model).__module__,
        "sceneevent_loaded": any(name.split(".")[0] == "sceneevent" for name in sys.modules),
    }))
    """
)


def test_run_folder_loads_without_the_package(run_dir: Path, audio_dir: Path, classifier, tmp_path: Path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    env.pop("PYTHONPATH", None)
    completed = subprocess.run(
        [sys.executable, "-c", BLOCKED_LOAD, str(run_dir), str(audio_dir / "long_stereo.wav")],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert not result["sceneevent_loaded"]
    assert result["model_module"].startswith("transformers_modules")  # the code shipped in the run folder
    assert result["pipeline"][0]["label"] == result["forward_scene"]
    assert result["event_labels"] == EVENTS
    # The same weights in this process, through the package: same first-window answer.
    prediction = predict(classifier, audio_dir / "long_stereo.wav")
    assert prediction.top_scenes(1, window=0)[0]["label"] == result["forward_scene"]
    assert np.allclose(prediction.event_scores[0], result["event_scores"], atol=1e-4)


# ---------------------------------------------------------------------------------------------- issue 12


def whole_file_reference(classifier, path: Path, hop_seconds: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Scores the way predict worked before streaming: decode all, resample all, cut, score."""
    import torchaudio

    data, rate = sf.read(path, dtype="float32", always_2d=True)
    extractor, network = classifier.feature_extractor, classifier.model
    mono = torchaudio.functional.resample(torch.from_numpy(data.T.copy()).mean(dim=0), rate, extractor.sampling_rate)
    hop = extractor.clip_samples if hop_seconds is None else int(round(hop_seconds * extractor.sampling_rate))
    windows = cut_windows(mono, extractor.clip_samples, hop)
    with torch.inference_mode():
        outputs = network(input_features=extractor.log_mel(windows))
    return outputs.scene_logits.softmax(-1).numpy(), outputs.event_logits.sigmoid().numpy()


@pytest.mark.parametrize("hop_seconds", [None, 4.0])
def test_streamed_prediction_equals_the_whole_file_reference(classifier, audio_dir: Path, hop_seconds):
    prediction = predict(classifier, audio_dir / "long_stereo.wav", hop_seconds=hop_seconds, batch_size=3)
    scenes, events = whole_file_reference(classifier, audio_dir / "long_stereo.wav", hop_seconds)
    assert prediction.scene_probs.shape == scenes.shape
    np.testing.assert_allclose(prediction.scene_probs, scenes, atol=1e-4)
    np.testing.assert_allclose(prediction.event_scores, events, atol=1e-4)


def test_long_file_is_read_block_by_block(classifier, audio_dir: Path, monkeypatch):
    import sceneevent.inference.windows as windows

    reads = []
    real_read = sf.SoundFile.read

    def spy(self, *args, **kwargs):
        data = real_read(self, *args, **kwargs)
        reads.append(len(data))
        return data

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    whole = predict(classifier, audio_dir / "long_stereo.wav")
    assert sum(reads) == 35 * 44100 and max(reads) <= 2**18  # never the whole file (1.5 M frames) at once
    reads.clear()
    monkeypatch.setattr(windows, "READ_BLOCK_FRAMES", 4096)  # block size does not change the result
    streamed = predict(classifier, audio_dir / "long_stereo.wav")
    assert max(reads) <= 4096
    np.testing.assert_allclose(streamed.scene_probs, whole.scene_probs, atol=1e-5)
    np.testing.assert_allclose(streamed.event_scores, whole.event_scores, atol=1e-5)
    assert streamed.duration_seconds == pytest.approx(35.0, abs=1e-3)


def test_plot_spectrogram_stays_bounded_for_long_recordings(classifier, audio_dir: Path, monkeypatch):
    import sceneevent.inference.windows as windows

    monkeypatch.setattr(windows, "MAX_PLOT_FRAMES", 500)
    prediction = predict(classifier, audio_dir / "long_stereo.wav", keep_log_mel=True)  # 35 s at 50 frames/s
    assert prediction.log_mel.shape[1] <= 500 and prediction.frames_per_second == 50 / 4
    assert prediction.log_mel.shape[1] / prediction.frames_per_second == pytest.approx(35.0, abs=0.5)


def test_odd_and_absurd_rates_next_to_good_files(classifier, tmp_path: Path):
    sf.write(tmp_path / "odd_44101.wav", noise(2, 44101, 1, 3), 44101)
    sf.write(tmp_path / "claims_1MHz.wav", np.zeros(1000, dtype=np.float32), 1_000_003, subtype="PCM_16")
    sf.write(tmp_path / "good.wav", noise(2, 16000, 1, 4), 16000)
    files, _ = expand_inputs([str(tmp_path)])
    predictions, failures = predict_files(classifier, files, progress=False)
    assert sorted(Path(p.source).name for p in predictions) == ["good.wav", "odd_44101.wav"]
    (failure,) = failures
    assert failure["source"].endswith("claims_1MHz.wav") and "1000003 Hz" in failure["error"]


def edited_copy(run_dir: Path, target: Path, edit) -> Path:
    """A copy of the run folder whose weights went through `edit(state_dict)`."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(run_dir, target)
    weights = load_file(target / "model.safetensors")
    edit(weights)
    save_file(weights, target / "model.safetensors", metadata={"format": "pt"})
    return target


def test_model_folder_with_missing_or_unexpected_weights_is_refused(run_dir: Path, tmp_path: Path):
    from sceneevent.models.modeling_sceneevent import WeightsMismatchError

    def edit(weights):
        weights.pop("scene_head.weight")
        weights["encoder.extra.weight"] = torch.zeros(3)

    folder = edited_copy(run_dir, tmp_path / "edited", edit)
    with pytest.raises(WeightsMismatchError, match=r"edited: .*1 missing \(e\.g\. scene_head\.weight\).*1 unexpected \(e\.g\. encoder\.extra\.weight\)"):
        load_pipeline(folder, device="cpu")
    script = load_script("predict")
    with pytest.raises(SystemExit, match=r"predict.py: error: --model .*edited: .*scene_head\.weight"):  # one line, no traceback
        script.main([str(tmp_path), "--model", str(folder), "--device", "cpu", "--disable_tqdm"])


def test_non_finite_scores_are_failures_and_the_json_stays_valid(run_dir: Path, audio_dir: Path, tmp_path: Path):
    folder = edited_copy(run_dir, tmp_path / "nan_model", lambda weights: weights["event_head.weight"].fill_(float("nan")))
    output = tmp_path / "predictions.json"
    script = load_script("predict")
    code = script.main([str(audio_dir / "nested" / "short.flac"), "--model", str(folder), "--device", "cpu", "--disable_tqdm",
                        "--output_format", "json", "--output_file", str(output)])
    assert code == 1  # no file gave a result

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    payload = json.loads(output.read_text(), parse_constant=refuse)
    assert payload["files"] == []
    (failure,) = payload["failures"]
    assert failure["source"].endswith("short.flac") and "NaN/Inf scores" in failure["error"]


def test_glob_over_a_symlink_loop_gives_each_file_once(tmp_path: Path):
    sf.write(tmp_path / "a.wav", noise(1, 8000, 1, 5), 8000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "up").symlink_to("..", target_is_directory=True)  # sub/up/sub/up/... forever
    (tmp_path / "alias.wav").symlink_to(tmp_path / "a.wav")
    files, missing = expand_inputs([str(tmp_path / "**" / "*.wav"), str(tmp_path / "sub" / "up" / "a.wav")])
    assert files == [tmp_path / "a.wav"] and missing == []


def test_folder_lists_what_it_skips(tmp_path: Path):
    sf.write(tmp_path / "a.wav", noise(1, 8000, 1, 6), 8000)
    (tmp_path / "song.mp3").write_bytes(b"ID3 not decoded here")
    (tmp_path / "gone.wav").symlink_to(tmp_path / "deleted.wav")
    (tmp_path / "notes.txt").write_text("not audio: ignored")
    files, skipped = expand_inputs([str(tmp_path)])
    assert files == [tmp_path / "a.wav"]
    reasons = {Path(item["source"]).name: item["error"] for item in skipped}
    assert set(reasons) == {"song.mp3", "gone.wav"}
    assert "skipped: .mp3" in reasons["song.mp3"] and "dangling symbolic link" in reasons["gone.wav"]


def test_cli_batch_size_zero_is_an_argument_error(run_dir: Path, audio_dir: Path, capsys):
    script = load_script("predict")
    with pytest.raises(SystemExit) as stopped:
        script.main([str(audio_dir / "long_stereo.wav"), "--model", str(run_dir), "--batch_size", "0"])
    assert stopped.value.code == 2 and "--batch_size must be a positive integer, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("through_link", [False, True])
def test_cli_refuses_to_write_over_an_input(run_dir: Path, tmp_path: Path, through_link: bool):
    audio = tmp_path / "take.wav"
    sf.write(audio, noise(1, 8000, 1, 7), 8000)
    before = audio.read_bytes()
    output = audio
    if through_link:
        output = tmp_path / "link.json"
        output.symlink_to(audio)
    script = load_script("predict")
    with pytest.raises(SystemExit, match="--output_file .* is the input file"):
        script.main([str(audio), "--model", str(run_dir), "--output_file", str(output), "--device", "cpu", "--disable_tqdm"])
    assert audio.read_bytes() == before


# ---------------------------------------------------------------------------------------------- issue 28


def loud(peak: float, seconds: float = 2.0, rate: int = 16000) -> np.ndarray:
    """(samples, 2) float32 samples of a finite tone reaching `peak`: valid floats, far outside ±1."""
    t = np.arange(int(seconds * rate)) / rate
    tone = np.sin(2 * np.pi * 440 * t)
    return (peak * np.stack([tone, tone], axis=1)).astype(np.float32)


@pytest.mark.parametrize("peak", [1e29, 3e38])
def test_loud_finite_audio_is_bad_audio_not_a_broken_model(classifier, run_dir: Path, tmp_path: Path, peak: float):
    from sceneevent.data.audio import AudioDecodeError
    from sceneevent.inference.pipeline import NonFiniteFeaturesError

    sf.write(tmp_path / "loud.wav", loud(peak), 16000, subtype="FLOAT")  # passes the NaN/Inf check of the samples
    sf.write(tmp_path / "good.wav", noise(2, 16000, 1, 8), 16000)
    with pytest.raises(NonFiniteFeaturesError, match=r"loud\.wav: gives non-finite log-mel features \(peak sample \d"):
        predict(classifier, tmp_path / "loud.wav")
    with pytest.raises(AudioDecodeError, match="<array>: gives non-finite log-mel features"):  # audio in memory too
        predict(classifier, loud(peak)[:, 0], sampling_rate=16000)
    # Many files: the loud one is a failure named as bad audio, the other is processed.
    predictions, failures = predict_files(classifier, [tmp_path / "loud.wav", tmp_path / "good.wav"], progress=False)
    assert [Path(p.source).name for p in predictions] == ["good.wav"]
    (failure,) = failures
    assert failure["source"].endswith("loud.wav") and f"peak sample {peak:.3g}" in failure["error"]
    assert "±1" in failure["error"] and "weights" not in failure["error"]
    # The CLI lists it at the end, and the JSON stays valid.
    output = tmp_path / "predictions.json"
    script = load_script("predict")
    assert script.main([str(tmp_path), "--model", str(run_dir), "--device", "cpu", "--disable_tqdm",
                        "--output_format", "json", "--output_file", str(output)]) == 0
    payload = json.loads(output.read_text())
    assert [Path(item["source"]).name for item in payload["files"]] == ["good.wav"]
    assert [Path(item["source"]).name for item in payload["failures"]] == ["loud.wav"]
    assert "non-finite log-mel features" in payload["failures"][0]["error"]


def test_nan_in_audio_given_as_an_array_is_bad_audio(classifier):
    from sceneevent.data.audio import AudioDecodeError

    samples = noise(1, RATE, 1, 9)[:, 0]
    samples[100] = np.nan
    with pytest.raises(AudioDecodeError, match=r"<array>: holds NaN or Inf samples"):  # as a file with NaN is named
        predict(classifier, {"array": samples, "sampling_rate": RATE})


def test_plot_of_a_file_whose_name_holds_mathtext(run_dir: Path, tmp_path: Path):
    audio = tmp_path / "take $\\frac$.wav"  # `$\frac$` is malformed mathtext: it stopped the plot and the run
    sf.write(audio, noise(1, 8000, 1, 10), 8000)
    script = load_script("predict")
    output, plots = tmp_path / "p.json", tmp_path / "plots"
    assert script.main([str(audio), "--model", str(run_dir), "--device", "cpu", "--disable_tqdm", "--plot", str(plots),
                        "--output_format", "json", "--output_file", str(output)]) == 0
    assert [path.name for path in plots.iterdir()] == ["take $\\frac$.png"]
    assert len(json.loads(output.read_text())["files"]) == 1


def test_model_with_code_of_its_own_is_refused_in_one_line_unless_trusted(run_dir: Path, tmp_path: Path):
    from sceneevent.inference.pipeline import RemoteCodeRefusedError

    folder = tmp_path / "forked"
    import shutil

    shutil.copytree(run_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "sceneevent_fork"  # not registered by the installed package: only its own code loads it
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(RemoteCodeRefusedError, match=r"forked: .*pass trust_remote_code=True only if you trust"):
        load_pipeline(folder, device="cpu")  # never the interactive prompt of transformers
    sf.write(tmp_path / "a.wav", noise(1, 8000, 1, 11), 8000)
    script = load_script("predict")
    with pytest.raises(SystemExit) as stopped:
        script.main([str(tmp_path / "a.wav"), "--model", str(folder), "--device", "cpu", "--disable_tqdm"])
    message = str(stopped.value.code)
    assert message.startswith(f"predict.py: error: --model {folder}: ") and "\n" not in message
    assert "pass --trust_remote_code only if you trust that code" in message and "trust_remote_code=True" not in message
    # With the flag, the folder's own code loads it.
    output = tmp_path / "p.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "predict.py"), str(tmp_path / "a.wav"), "--model", str(folder),
         "--device", "cpu", "--disable_tqdm", "--trust_remote_code", "--output_format", "json", "--output_file", str(output)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads(output.read_text())["files"][0]["aggregate"]["scene"] in SCENES


def test_predict_help_explains_trust_remote_code(capsys):
    script = load_script("predict")
    with pytest.raises(SystemExit):
        script.parse(["--help"])
    assert "Python code that comes with --model" in " ".join(capsys.readouterr().out.split())
