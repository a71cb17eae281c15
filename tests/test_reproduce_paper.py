"""scripts/reproduce_paper.py end to end without a GPU: a tiny study on data laid out as the real sources are (a TUT
2018 development folder, an AudioSet segment-CSV folder with audio/) through every stage to the report, then
run again (nothing runs); the dry run of the paper's whole study on the same layouts (152 runs, 14 event sets,
its estimates); and the plan's sharing of settings between figures and its W&B sweeps, offline."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from sceneevent.data.scenes import TUT2018_SCENES
from sceneevent.study.paper import (
    EventSet,
    create_wandb_sweeps,
    event_set,
    parse_figures,
    plan_lines,
    plan_study,
    share_grid_points,
    wandb_configs,
)
from sceneevent.study.sweeps import expand_grid, schema_violations

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "reproduce_paper.py"
EVENTS = {"/m/09x0r": "Speech", "/m/04rlf": "Music", "/m/0bt9lr": "Dog", "/m/0k4j": "Car"}
HEADER = "# Segments csv\n# num_ytids=0, num_segs=0\n# YTID, start_seconds, end_seconds, positive_labels\n"
# The smallest runs that still train, evaluate and save: test_resnet on 16 mel bins of 0.5 s at 8 kHz, 2 steps.
TINY = ("--encoder test_resnet --num_mel_bins 16 --sampling_rate 8000 --clip_seconds 0.5 --hop_length 400 --n_fft 256 "
        "--max_train_steps 2 --asc_batch_size 4 --aet_batch_size 4 --eval_batch_size 64 --num_cpu_threads 1 "
        "--dataloader_num_workers 0")


def _tone(frequency: float, seconds: float = 0.5, rate: int = 8000, channels: int = 1, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * frequency * t) + 0.05 * np.random.default_rng(seed).standard_normal(t.size)
    return np.repeat(wave[:, None], channels, axis=1).astype(np.float32)


def write_tut_folder(root: Path) -> Path:
    """A TUT 2018 development folder: meta.csv, evaluation_setup/fold1_*.txt, audio/. Each scene has two training
    locations (so a validation split can be carved by location) and one test location."""
    (root / "audio").mkdir(parents=True)
    (root / "evaluation_setup").mkdir()
    rows = []
    for s, scene in enumerate(TUT2018_SCENES):
        for city, location in (("barcelona", 0), ("barcelona", 1), ("helsinki", 0)):
            for clip in range(2 if city == "barcelona" else 1):
                name = f"audio/{scene}-{city}-{s}{location}-{clip}-a.wav"
                sf.write(root / name, _tone(200 + 60 * s, channels=2, seed=len(rows)), 8000, subtype="PCM_16")
                rows.append((name, scene, f"{city}-{s}{location}", "a"))
    (root / "meta.csv").write_text("filename\tscene_label\tidentifier\tsource_label\n" + "".join("\t".join(r) + "\n" for r in rows))
    train, test = [r for r in rows if "barcelona" in r[2]], [r for r in rows if "helsinki" in r[2]]
    setup = root / "evaluation_setup"
    (setup / "fold1_train.txt").write_text("".join(f"{r[0]}\t{r[1]}\n" for r in train))
    (setup / "fold1_evaluate.txt").write_text("".join(f"{r[0]}\t{r[1]}\n" for r in test))
    (setup / "fold1_test.txt").write_text("".join(f"{r[0]}\n" for r in test))
    return root


def write_audioset_folder(root: Path, train_per_class: int = 6, eval_per_class: int = 4) -> Path:
    """An AudioSet folder: the official balanced-train and eval segment CSVs and audio/<id>_<start>.wav."""
    (root / "audio").mkdir(parents=True)
    for csv, per_class in (("balanced_train_segments.csv", train_per_class), ("eval_segments.csv", eval_per_class)):
        lines = []
        for c, mid in enumerate(EVENTS):
            for clip in range(per_class):
                video = f"{csv[0]}{c}{clip:02d}".ljust(11, "x")
                labels = [mid] + ([list(EVENTS)[(c + 1) % len(EVENTS)]] if clip == 0 else [])  # a few clips carry two
                lines.append(f'{video}, 0.000, 10.000, "{",".join(labels)}"\n')
                sf.write(root / "audio" / f"{video}_0.000.wav", _tone(300 + 150 * c, seed=len(lines) + 100 * per_class)[:, 0], 8000)
        (root / csv).write_text(HEADER + "".join(lines))
    return root


def tiny_sweeps(folder: Path) -> Path:
    """The repo's sweep files for Figures 2 and 3a on tiny event sets: the reference set k = 4 (every class of the
    folder), the correlated and uncorrelated sets k = 2 (the random one left out to save a training)."""
    folder.mkdir()
    for name, events in (("alpha", "k=4_hours=0.05_strategy_random"),
                         ("strategy", ["k=2_hours=0.02_strategy_correlated", "k=2_hours=0.02_strategy_uncorrelated"])):
        config = yaml.safe_load((ROOT / "sweeps" / f"{name}.yaml").read_text())
        config["parameters"]["aet_dataset"] = {"values": [f"data/aet_subsets/{e}" for e in events]} if isinstance(events, list) \
            else {"value": f"data/aet_subsets/{events}"}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("reproduce_paper", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    return write_tut_folder(root / "TUT-urban-acoustic-scenes-2018-development"), write_audioset_folder(root / "audioset")


def test_a_tiny_study_runs_every_stage_to_the_report_and_a_second_call_runs_nothing(tmp_path, sources, script, capsys):
    tut, audioset = sources
    out = tmp_path / "study"
    command = ["--asc_dataset", str(tut), "--audioset", str(audioset), "--audioset_config", "balanced", "--figures", "3a",
               "--sweeps_dir", str(tiny_sweeps(tmp_path / "sweeps")), "--seeds", "0", "--output_root", str(out),
               "--launcher", "python", "--gpus", "none", "--parallel", "2",
               "--extra_args", f"{TINY} --feature_store_dir {tmp_path / 'store'}"]
    assert script.main(command) == 0, capsys.readouterr()
    printed = capsys.readouterr()
    assert "built 3 event set(s), wrote the ranking, ran 3 training(s) (0 failed)" in printed.out
    assert "study: Figures 3a: 2 runs (2 Fig. 3a)" in printed.err and "trainings: 3" in printed.err
    assert re.search(r"estimate against measured: wall time .* estimated, .* measured", printed.out)  # both sweeps

    # The tagger is Figure 2's alpha = 1 run of the first seed, trained on the reference set.
    tagger = json.loads((out / "runs" / "alpha" / "alpha=1.0_seed=0" / "results.json").read_text())
    assert tagger["alpha"] == 1.0 and tagger["config"]["aet_dataset"] == str(out / "aet_subsets" / "k=4_hours=0.05_strategy_random")
    ranking = json.loads((out / "ranking.json").read_text())
    ranked = [entry["name"] for entry in ranking["ranking"]]
    assert sorted(ranked) == sorted(EVENTS.values()) and ranking["clips"] == 40  # the 40 scene training clips
    # The correlated set holds the tagger's top two classes, the uncorrelated set its bottom two.
    for strategy, expected in (("correlated", ranked[:2]), ("uncorrelated", ranked[-2:])):
        info = json.loads((out / "aet_subsets" / f"k=2_hours=0.02_strategy_{strategy}" / "subset_info.json").read_text())
        assert info["strategy"] == strategy and sorted(info["events"]) == sorted(expected) and info["ranking"]
        assert str(audioset) in info["source"]
    for strategy in ("correlated", "uncorrelated"):
        results = json.loads((out / "runs" / "strategy" / f"aet_dataset=k=2_hours=0.02_strategy_{strategy}_seed=0" / "results.json").read_text())
        assert results["alpha"] == 0.95 and results["steps"] == 2 and results["config"]["asc_dataset"] == str(tut)
        assert 0.0 <= results["final"]["asc_macro_accuracy"] <= 1.0
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["runs"] == 3 and summary["figures"]["strategy"] == "fig3a_strategy.png"
    assert {row["value"] for row in summary["groups"]["strategy"]} == {"correlated", "uncorrelated"}
    assert (out / "report" / "fig3a_strategy.png").stat().st_size > 0 and (out / "report" / "summary.md").is_file()

    kept = {path: path.stat().st_mtime_ns for path in [out / "ranking.json", *out.rglob("subset_info.json"), *out.rglob("results.json"),
                                                         *(out / "report").iterdir()]}
    assert script.main(command) == 0
    again = capsys.readouterr().out
    assert "built 0 event set(s), kept the ranking, ran 0 training(s) (0 failed)" in again
    assert "report in " + str(out / "report") + " (kept: no run finished after it)" in again
    assert {path: path.stat().st_mtime_ns for path in kept} == kept


def test_the_dry_run_of_the_paper_prints_152_runs_on_14_event_sets_with_its_estimate(tmp_path, sources, script, capsys):
    tut, audioset = sources
    out = tmp_path / "paper"
    code = script.main(["--asc_dataset", str(tut), "--audioset", str(audioset), "--audioset_config", "balanced",
                        "--output_root", str(out), "--dry_run",
                        "--gpus", "0,1,2,3", "--extra_args", f"--feature_store_dir {tmp_path / 'store'} --asc_batch_size 4"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "# study: Figures 2, 3a, 3b, 4, 5: 152 runs (80 Fig. 2 + 12 Fig. 3a + 24 Fig. 3b + 28 Fig. 4 + 8 Fig. 5)" in printed
    assert "# trainings: 136" in printed and "# event sets: 14 in " + str(out / "aet_subsets") in printed
    assert printed.count("to build after the ranking") == 2
    assert "# plan: 136 runs, 0 finished, 136 to run on GPUs 0,1,2,3, 1 per run, 4 run(s) at a time" in printed
    assert "# steps: 136 run(s) from epochs x scene training clips // batch, the clips from the data, loaded undecoded" in printed
    assert "from the H100 profile" in printed
    estimate = next(line for line in printed.splitlines() if line.startswith("# estimate:"))
    assert re.search(r"[\d.]+ GPU-hours, wall time [\d.]+ (s|min|h); it includes [\d.]+ (s|min|h) of decoding into the log-mel "
                     r"store before the runs start", estimate), estimate
    assert re.search(r"# disk: 136 run folders, [\d.]+ MB each .* \+ log-mel store [\d.]+ GB", printed), printed[-2000:]
    commands = [line for line in printed.splitlines() if line.startswith("CUDA_VISIBLE_DEVICES=")]
    assert len(commands) == 136 and "--alpha=1.0 --seed=0" in commands[0]  # the tagger first, alone: the next run waits for GPU 0
    assert commands[0].startswith("CUDA_VISIBLE_DEVICES=0 ") and commands[1].startswith("CUDA_VISIBLE_DEVICES=0 ")
    assert {line.split()[0] for line in commands} == {f"CUDA_VISIBLE_DEVICES={gpu}" for gpu in range(4)}
    assert not out.exists()  # a plan builds nothing


@pytest.mark.parametrize("flag,value,message", [
    ("--asc_dataset", "no/such/folder", "--asc_dataset no/such/folder: no such folder"),
    ("--audioset", "{audioset}/audio", "audio: not an AudioSet folder"),
    ("--figures", "2,6", "'6' is not a figure of the paper"),
    ("--audioset_config", "unbalanced", "without unbalanced_train_segments.csv"),
])
def test_bad_flags_are_named_before_anything_is_built(tmp_path, sources, script, capsys, flag, value, message):
    tut, audioset = sources
    options = {"--asc_dataset": str(tut), "--audioset": str(audioset), "--audioset_config": "balanced", "--figures": "all"}
    options[flag] = value.format(audioset=audioset)
    arguments = [part for pair in options.items() for part in pair]
    assert script.main([*arguments, "--output_root", str(tmp_path / "out"), "--dry_run"]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_settings_two_figures_share_are_trained_once_and_the_sweeps_stay_grids(tmp_path):
    plan = plan_study(ROOT / "sweeps", parse_figures("all"), "/data/TUT-urban-acoustic-scenes-2018-development", tmp_path)
    assert plan.grid_points == {"alpha": 80, "strategy": 12, "hours": 24, "k": 28, "pretrain_vs_joint": 8}
    assert {name: len(expand_grid(config)) for name, config in plan.sweeps.items()} == \
        {"alpha": 80, "strategy": 12, "hours": 20, "k": 20, "pretrain_vs_joint": 4}
    assert len(plan.shared) == 16 and ("pretrain_vs_joint", "mode=joint_seed=3", "alpha/alpha=0.95_seed=3") in plan.shared
    assert ("k", "aet_dataset=k=35_hours=90_strategy_random_seed=0", "strategy/aet_dataset=k=35_hours=90_strategy_random_seed=0") in plan.shared
    assert len({json.dumps(run.arguments[:-1]) for run in plan.runs}) == len(plan.runs) == 136  # no training twice
    assert [s.name for s in plan.event_sets if s.ranked] == ["k=35_hours=90_strategy_correlated", "k=35_hours=90_strategy_uncorrelated"]
    # A figure alone keeps its whole grid; without a ranked set there is no tagger.
    alone = plan_study(ROOT / "sweeps", parse_figures("3b"), "owner/tut", tmp_path)
    assert alone.tagger is None and len(alone.runs) == 24 and len(alone.event_sets) == 6


def test_the_batch_composition_and_alpha_per_t_are_offered_by_name_never_by_all(tmp_path):
    assert parse_figures("all") == ["2", "3a", "3b", "4", "5"]
    assert parse_figures("alpha_hours, all,batch") == ["2", "3a", "3b", "4", "5", "batch", "alpha_hours"]
    with pytest.raises(ValueError, match="'regularisers' is not a figure of the paper nor one of its other experiments"):
        parse_figures("regularisers")
    plan = plan_study(ROOT / "sweeps", parse_figures("all,batch,alpha_hours"), "/data/tut", tmp_path)
    assert plan.grid_points == {"alpha": 80, "strategy": 12, "hours": 24, "k": 28, "pretrain_vs_joint": 8,
                                "batch_composition": 24, "alpha_hours": 456}
    assert len(plan.event_sets) == 14  # alpha x T trains on the six sets of Figure 3b
    # alpha x T drops T = 90 h (Figure 2's grid) and alpha = 0.95 (Figure 3b's): 18 alphas x 5 T x 4 seeds left
    assert len(expand_grid(plan.sweeps["alpha_hours"])) == 360 and len(plan.runs) == 136 + 24 + 360
    assert "(80 Fig. 2 + 12 Fig. 3a + 24 Fig. 3b + 28 Fig. 4 + 8 Fig. 5 + 24 batch composition + 456 alpha x T)" in plan_lines(plan)[0]


def test_share_grid_points_drops_only_points_an_earlier_sweep_trains():
    base = {"method": "grid", "program": "train.py"}
    first = {**base, "parameters": {"a": {"values": [1, 2]}, "seed": {"values": [0, 1]}}}
    second = {**base, "parameters": {"a": {"values": [2, 3]}, "b": {"value": "x"}, "seed": {"values": [0, 1]}}}
    third = {**base, "parameters": {"a": {"values": [2, 3]}, "seed": {"values": [0, 1]}}}
    kept, shared = share_grid_points({"first": first, "second": second, "third": third})
    assert kept["second"] == second  # b=x makes every point another setting
    assert kept["third"]["parameters"]["a"] == {"values": [3]}
    assert shared == [("third", "a=2_seed=0", "first/a=2_seed=0"), ("third", "a=2_seed=1", "first/a=2_seed=1")]
    assert share_grid_points({"first": first, "again": first})[0].keys() == {"first"}  # all shared: left out


def test_the_wandb_sweeps_it_would_create_are_valid_and_write_into_the_study(tmp_path):
    plan = plan_study(ROOT / "sweeps", parse_figures("all"), "/data/tut", tmp_path, report_to="wandb")
    configs = wandb_configs(plan, "my-project")
    assert list(configs) == ["alpha", "strategy", "hours", "k", "pretrain_vs_joint"]
    assert sum(len(expand_grid(config)) for config in configs.values()) == 136
    for name, config in configs.items():
        assert schema_violations(config) == [], name
        assert config["project"] == "my-project" and config["parameters"]["report_to"] == {"value": "wandb"}
        assert config["parameters"]["asc_dataset"] == {"value": "/data/tut"}
        assert f'--output_dir="{tmp_path.resolve()}/runs/{name}/$WANDB_RUN_ID"' in "".join(config["command"])
    assert configs["pretrain_vs_joint"]["parameters"]["mode"] == {"values": ["pretrain_finetune"]}
    assert str(tmp_path.resolve() / "aet_subsets" / "k=35_hours=90_strategy_correlated") in configs["strategy"]["parameters"]["aet_dataset"]["values"]

    # Sweeps already created (their ids recorded) are not created again: no W&B call, each configuration written beside them.
    recorded = {name: f"me/my-project/id-{name}" for name in configs}
    (tmp_path / "wandb_sweeps").mkdir()
    (tmp_path / "wandb_sweeps" / "sweeps.json").write_text(json.dumps(recorded))
    assert create_wandb_sweeps(plan, "my-project", "me") == recorded
    assert yaml.safe_load((tmp_path / "wandb_sweeps" / "k.yaml").read_text()) == configs["k"]


@pytest.mark.parametrize("name,expected", [
    ("data/aet_subsets/k=35_hours=90_strategy_random", EventSet(35, 90.0, "random")),
    ("k=2_hours=90_strategy_speech_music/", EventSet(2, 90.0, "speech_music")),
    ("k=4_hours=0.05_strategy_correlated", EventSet(4, 0.05, "correlated")),
])
def test_event_set_names_round_trip(name, expected):
    assert event_set(name) == expected and event_set(expected.name) == expected


@pytest.mark.parametrize("name", ["k35_hours=90_strategy_random", "k=35_hours=90_strategy_loud"])
def test_a_sweep_value_that_is_no_event_set_is_named(name):
    with pytest.raises(ValueError, match=re.escape(name)):
        event_set(name)
