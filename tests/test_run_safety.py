"""Runs that never mix or lose work: overwrite, resume checks, the output-dir lock, checkpoint damage, argument checks."""

import json
import shutil
import subprocess
import sys
import time

import pytest

from sceneevent.training.arguments import DataArguments, JointTrainingArguments, ModelArguments, parse_args
from sceneevent.training.checkpointing import CheckpointError, checkpoint_dirs
from sceneevent.training.checkpointing import OutputDirInUse

from test_train_joint import SMALL, in_process, run_script

PARSE = (ModelArguments, DataArguments, JointTrainingArguments)
RUN = [*SMALL[2:], "--max_train_steps", "4", "--checkpointing_steps", "2"]  # SMALL with 4 steps, checkpoints at 2 and 4


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One run of RUN with checkpoints at steps 2 and 4, shared by the tests that only try to resume it."""
    out = tmp_path_factory.mktemp("shared") / "run"
    in_process("--output_dir", str(out), *RUN)
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    """A private copy of the shared run, for tests that damage it."""
    return shutil.copytree(finished_run, tmp_path / "run")


def test_overwrite_removes_the_old_runs_checkpoints_before_writing(tmp_path):
    out = tmp_path / "run"
    in_process("--output_dir", str(out), *SMALL[2:], "--max_train_steps", "6", "--checkpointing_steps", "3")
    assert [p.name for p in checkpoint_dirs(out)] == ["step_3", "step_6"]
    in_process("--output_dir", str(out), "--overwrite_output_dir", *RUN, "--save_total_limit", "2", "--learning_rate", "1e-4")
    # Only the new run's checkpoints: the old step_6 neither survives nor pushes the new ones out of the limit.
    assert [p.name for p in checkpoint_dirs(out)] == ["step_2", "step_4"]
    resumed_from = json.loads((out / "checkpoints" / "step_4" / "trainer_state.json").read_text())
    assert resumed_from["signature"]["settings"]["learning_rate"] == 1e-4


@pytest.mark.parametrize(
    "changed,named",
    [
        (["--learning_rate", "5e-3"], "learning_rate"),
        (["--asc_batch_size", "4"], "asc_batch_size"),
        (["--synthetic_difficulty", "0.2"], "synthetic_difficulty"),
        (["--hop_length", "256"], "hop_length"),
        (["--encoder", "resnet18"], "encoder"),
        (["--num_mel_bins", "32"], "feature_num_mel_bins"),
    ],
)
def test_resume_refuses_other_settings_and_names_each_difference(finished_run, changed, named):
    out = finished_run
    started = time.time()
    with pytest.raises(CheckpointError, match=rf"does not match this run:[\s\S]*{named}: checkpoint"):
        in_process("--output_dir", str(out), *RUN, "--resume_from_checkpoint", "latest", *changed)
    assert time.time() - started < 30  # refused before any data is prepared or trained on


def test_resume_refuses_other_data(finished_run):
    out = finished_run
    with pytest.raises(CheckpointError, match="max_asc_train_samples"):
        in_process("--output_dir", str(out), *RUN, "--resume_from_checkpoint", "latest", "--max_asc_train_samples", "56")


def test_more_epochs_may_be_added_at_resume(tmp_path):
    out = tmp_path / "run"
    one_epoch = ["--output_dir", str(out), *SMALL[2:], "--max_asc_train_samples", "16", "--checkpointing_steps", "epoch",
                 "--num_train_epochs", "1"]
    in_process(*one_epoch)
    results = in_process(*one_epoch, "--num_train_epochs", "2", "--logging_steps", "2", "--resume_from_checkpoint", "latest")
    assert results["steps"] == 4 and [record["epoch"] for record in results["history"]] == [1, 2]


def test_a_second_run_into_a_folder_in_use_stops_at_once(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); f.write('4242'); f.flush(); "
        "print('locked', flush=True); time.sleep(60)"), str(out / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputDirInUse, match=r"in use by another run \(pid 4242\)"):
            in_process("--output_dir", str(out), *SMALL)
        assert not (out / "results.json").exists() and not (out / "model.safetensors").exists()
    finally:
        holder.kill()
        holder.wait()
    in_process("--output_dir", str(out), *SMALL)  # the holder's lock died with it
    assert (out / "results.json").exists()


def test_damaged_checkpoints_are_named_before_any_work(run_copy):
    out = run_copy
    weights = out / "checkpoints" / "step_4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match=r"step_4 is damaged: model\.safetensors[\s\S]*--resume_from_checkpoint \S*step_2"):
        in_process("--output_dir", str(out), *RUN, "--resume_from_checkpoint", "latest")
    state = out / "checkpoints" / "step_2" / "trainer_state.json"
    state.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"step_2 is damaged: trainer_state\.json"):
        in_process("--output_dir", str(out), *RUN, "--resume_from_checkpoint", str(out / "checkpoints" / "step_2"))


def test_folders_that_are_not_checkpoints_are_ignored(run_copy):
    out = run_copy
    backup = out / "checkpoints" / "step_4.bak"
    (out / "checkpoints" / "step_4").rename(backup)
    assert (backup / "trainer_state.json").exists()  # complete, but not named like a checkpoint
    assert [p.name for p in checkpoint_dirs(out)] == ["step_2"]


@pytest.mark.parametrize(
    "text,message",
    [
        ("asc_batch_size: 10.5\n", r"asc_batch_size: 10\.5 is not a whole number"),
        ("num_train_epochs: 1.5\n", r"num_train_epochs: 1\.5 is not a whole number"),
        ("alpha: [0.5]\n", r"alpha: \[0\.5\] is not a single value"),
        ("specaugment: 'no'\n", r"specaugment: 'no' is not true/false"),
        ("report_to: tensorboard\n", r"report_to: 'tensorboard' is not one of 'none', 'wandb'"),
    ],
)
def test_config_file_values_are_type_checked(tmp_path, text, message):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    with pytest.raises(ValueError, match=rf"{config}: {message}"):
        parse_args(PARSE, ["--config", str(config)])


def test_config_file_that_is_not_utf8_is_named(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_bytes(b"alpha: \xff\xfe0.5\n")
    with pytest.raises(ValueError, match=rf"--config {config}: not UTF-8"):
        parse_args(PARSE, ["--config", str(config)])


def test_an_unknown_flag_never_echoes_its_value(tmp_path):
    secret = "hf_" + "Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2"
    done = run_script("--output_dir", str(tmp_path), "--hub_token", secret)
    assert done.returncode != 0 and "--hub_token" in done.stderr
    assert secret not in done.stderr and secret not in done.stdout


def test_a_checkpoint_from_before_a_setting_existed_resumes_only_at_that_settings_default(tmp_path):
    from sceneevent.training.checkpointing import CheckpointError, check_resume_matches
    from sceneevent.training.checks import signature_defaults

    defaults = signature_defaults()
    assert defaults["synthetic_test_clips_per_scene"] == 30 and defaults["learning_rate"] is None
    saved = {"learning_rate": 0.002, "seed": 1}  # written before synthetic_test_clips_per_scene existed
    check_resume_matches(tmp_path, saved, {**saved, "synthetic_test_clips_per_scene": 30}, defaults)
    with pytest.raises(CheckpointError, match="synthetic_test_clips_per_scene: checkpoint 30 vs now 100"):
        check_resume_matches(tmp_path, saved, {**saved, "synthetic_test_clips_per_scene": 100}, defaults)
    with pytest.raises(CheckpointError, match="seed: checkpoint 1 vs now 2"):  # recorded settings still decide
        check_resume_matches(tmp_path, saved, {**saved, "seed": 2, "synthetic_test_clips_per_scene": 30}, defaults)


def test_a_checkpoint_signed_with_the_raw_feature_flags_resumes_when_the_resolved_features_match(tmp_path):
    from sceneevent.training.checkpointing import check_resume_matches
    from sceneevent.training.checks import run_signature

    real = DataArguments(asc_dataset="/data/tut2018")
    current = run_signature(ModelArguments(), real, JointTrainingArguments(), 0.95, 1)
    assert "hop_length" not in current and current["feature_hop_length"] == 320
    # written when --hop_length defaulted to 320 and the signature held the raw flag beside the resolved one
    older = {**current, "hop_length": 320, "sampling_rate": None}
    check_resume_matches(tmp_path, older, current)
    # the demo's hop did change (320 -> 640): an older synthetic checkpoint is refused, on that setting alone
    demo = run_signature(ModelArguments(), DataArguments(), JointTrainingArguments(), 0.95, 1)
    with pytest.raises(CheckpointError, match=r"match this run:\n  feature_hop_length: checkpoint 320 vs now 640$"):
        check_resume_matches(tmp_path, {**demo, "hop_length": 320, "feature_hop_length": 320}, demo)


# --- YAML and JSON a user writes (issue 28.9) ----------------------------------------------------------------


def billion_laughs(key: str, indent: str = "") -> str:
    """Nine lines of YAML that stand for 9^9 (387 million) values under `key`."""
    lines = [f"{key}:", f'{indent}  - &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{indent}  - &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_a_config_alias_bomb_is_refused_at_once(tmp_path):
    import time

    config = tmp_path / "run.yaml"
    config.write_text(billion_laughs("alpha"))
    started = time.perf_counter()
    # before: "alpha: [[[...]]] is not a single value" printed 387 million values (MemoryError after ~30 s)
    with pytest.raises(ValueError, match=rf"--config {config}: not valid YAML \(refused: its aliases expand it to over 100,000"):
        parse_args(PARSE, ["--config", str(config)])
    assert time.perf_counter() - started < 5
    config.write_text("seeds: &seeds 7\nseed: *seeds\n")  # an alias within the bound is read as before
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['seeds'\]"):
        parse_args(PARSE, ["--config", str(config)])


def test_what_a_config_error_prints_of_a_value_is_capped(tmp_path):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"alpha": list(range(1_000_000)), "run_name": {"x" * 1_000_000: 1}, "y" * 1_000_000: 1}))
    with pytest.raises(ValueError) as error:
        parse_args(PARSE, ["--config", str(config)])
    assert len(str(error.value)) < 1_000 and "unknown argument(s) ['yyyyy" in str(error.value)
    config.write_text(json.dumps({"alpha": list(range(1_000_000)), "run_name": {"x" * 1_000_000: 1}}))
    with pytest.raises(ValueError, match=r"alpha: \[0, 1, 2, 3, 4, 5, 6, 7, \.\.\.\] is not a single value; run_name: \{'xxx") as error:
        parse_args(PARSE, ["--config", str(config)])
    assert len(str(error.value)) < 1_000


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_config_nested_too_deeply_or_with_a_byte_order_mark(tmp_path, suffix):
    config = tmp_path / f"run{suffix}"
    config.write_text('{"alpha": ' + "[" * 100_000 + "]" * 100_000 + "}")  # RecursionError escaped as a traceback
    with pytest.raises(ValueError, match=rf"--config {config}: nested too deeply to read"):
        parse_args(PARSE, ["--config", str(config)])
    config.write_bytes(b"\xef\xbb\xbf" + b'{"alpha": "0.5"}')  # JSON with a BOM was "not valid JSON"
    assert parse_args(PARSE, ["--config", str(config)])[2].alpha == "0.5"


def test_a_sweep_file_alias_bomb_is_refused_at_once(tmp_path):
    from sceneevent.study.sweeps import load_sweep

    sweep = tmp_path / "bomb.yaml"
    sweep.write_text("method: grid\nparameters:\n  alpha:\n" + billion_laughs("    values", indent="    "))
    # before: the grid expanded 387 million values into its runs (MemoryError after ~25 s)
    with pytest.raises(ValueError, match=rf"sweep file {sweep}: not valid UTF-8 YAML \(refused: its aliases expand it"):
        load_sweep(sweep)


def test_distributed_timeout_must_be_positive(tmp_path):
    from sceneevent.training.launch import make_accelerator

    with pytest.raises(ValueError, match="--distributed_timeout must be a positive number of seconds, got 0"):
        make_accelerator(JointTrainingArguments(output_dir=str(tmp_path), distributed_timeout=0), tmp_path)
