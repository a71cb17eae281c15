"""Issue 26's controls on fixture results.json files with known numbers: the regularisers beside joint training,
the alpha curves per T, and the tuned control (its choice on validation only, equal budgets, its re-run sweeps and
its report section), with every number checked against scipy."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import t, ttest_rel, wilcoxon

from sceneevent.study import regularisation, sweeps, tuned_control
from sceneevent.study.report import write_report
from sceneevent.study.run_readings import load_runs

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2, 3, 4, 5)
PNG = b"\x89PNG\r\n\x1a\n"
REFERENCE = "data/aet_subsets/k=115_hours=90_strategy_random"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(folder: Path, *, seed: int, alpha: float, test: float | None, validation: list[float] | None = None,
              flags: dict | None = None, aet_dataset: str = REFERENCE) -> None:
    """A schema-2 results.json: `flags` as the run's config, `validation` its per-epoch validation scene accuracy,
    `test` its final (test) scene accuracy."""
    validation = validation or [0.5]
    config = {"alpha": alpha, "seed": seed, "asc_dataset": "tut", "aet_dataset": aet_dataset, "asc_batch_size": 64,
              **(flags or {})}
    history = [{"epoch": epoch, "val_asc_macro_accuracy": value, "val_aet_lwlrap": None if alpha == 0 else 0.4}
               for epoch, value in enumerate(validation, 1)]
    results = {"schema_version": 2, "config": config, "alpha": alpha, "seed": seed, "history": history,
               "final": {"asc_macro_accuracy": test, "aet_lwlrap": None if alpha == 0 else 0.4, "best_epoch": 1,
                         "selected_by": "val_asc_macro_accuracy"}}
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results))


def preset(name: str) -> dict:
    return {flag: value for flag, value in regularisation.REGULARISER_PRESETS[name].items() if flag != "alpha"}


# --- the regularisers and alpha per T, in one report ----------------------------------------------------------


@pytest.fixture(scope="module")
def controls(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(7)
    seed_effect = rng.normal(0, 0.03, len(SEEDS))
    values = {"none": seed_effect + 0.55, "dropout": seed_effect + 0.57 + rng.normal(0, 0.004, len(SEEDS)),
              "all": seed_effect + 0.60 + rng.normal(0, 0.01, len(SEEDS)), "joint": seed_effect + 0.62 + rng.normal(0, 0.01, len(SEEDS))}
    for name, accuracies in values.items():
        for seed in SEEDS:
            write_run(root / "regularisers" / f"{name}_{seed}", seed=seed, alpha=0.9 if name == "joint" else 0.0,
                      test=round(float(accuracies[seed]), 5), flags=preset(name))
    asc_only = seed_effect + 0.58
    for seed in SEEDS[:3]:
        write_run(root / "alpha" / f"0_{seed}", seed=seed, alpha=0.0, test=float(asc_only[seed]))  # default regularisation
    curves = {}
    for hours in (11, 90):
        for alpha in (0.5, 0.95):
            curves[hours, alpha] = asc_only[:3] + 0.0001 * hours + 0.02 * alpha + rng.normal(0, 0.005, 3)
            for seed in SEEDS[:3]:
                write_run(root / "alpha_hours" / f"{hours}_{alpha}_{seed}", seed=seed, alpha=alpha, test=float(curves[hours, alpha][seed]),
                          aet_dataset=f"data/aet_subsets/k=115_hours={hours}_strategy_random")
    summary = write_report(load_runs(root), root / "report")
    return values, asc_only, curves, summary, root / "report"


def test_regularisers_are_compared_with_joint_by_seed_as_scipy_does(controls):
    values, _, _, summary, out = controls
    section = summary["regularisers"]
    assert [row.name for row in section["rows"]] == ["none", "dropout", "all", "joint (alpha = 0.9)"]
    for row, name in zip(section["rows"], ("none", "dropout", "all", "joint")):
        ours = np.round(values[name], 5)
        half = t.ppf(0.975, len(ours) - 1) * ours.std(ddof=1) / np.sqrt(len(ours))
        assert row.asc_macro_accuracy.n == len(SEEDS) and row.seeds == list(SEEDS)
        assert row.asc_macro_accuracy.mean == pytest.approx(ours.mean())
        assert (row.asc_macro_accuracy.ci_low, row.asc_macro_accuracy.ci_high) == pytest.approx((ours.mean() - half, ours.mean() + half))
    joint = np.round(values["joint"], 5)
    markdown = (out / "summary.md").read_text()
    for comparison, name in zip(section["comparisons"], ("none", "dropout", "all")):
        ours = np.round(values[name], 5)
        assert (comparison.setting, comparison.baseline, comparison.n_pairs) == (name, "joint (alpha = 0.9)", len(SEEDS))
        assert comparison.difference.mean == pytest.approx((ours - joint).mean())
        assert comparison.t_test_p == pytest.approx(ttest_rel(ours, joint).pvalue)
        assert comparison.wilcoxon_p == pytest.approx(wilcoxon(ours - joint).pvalue)
        assert f"| {name} | joint (alpha = 0.9) | scene macro accuracy | {len(SEEDS)} |" in markdown
    assert section["comparisons"][0].t_test_p < 0.05  # no regulariser: clearly below joint
    assert (out / "regularisers_vs_joint.png").read_bytes().startswith(PNG)
    assert "## Regularisers beside joint training" in markdown


def test_the_paper_figures_leave_the_regulariser_runs_out(controls):
    _, asc_only, _, summary, _ = controls
    alpha_groups = {row.value: row for row in summary["groups"]["alpha"]}
    assert alpha_groups[0.0].runs == 3 and alpha_groups[0.0].asc_macro_accuracy.mean == pytest.approx(asc_only[:3].mean())
    assert 0.9 not in alpha_groups  # joint with all regularisers is the regulariser comparison's, not Figure 2's


def test_alpha_curves_per_hours_match_numpy_and_scipy(controls):
    _, asc_only, curves, summary, out = controls
    section = summary["alpha_per_hours"]
    assert list(section["curves"]) == [11.0, 90.0]
    for hours, rows in section["curves"].items():
        for row in rows:
            expected = curves[int(hours), row.value]
            assert row.asc_macro_accuracy.n == 3 and row.asc_macro_accuracy.mean == pytest.approx(expected.mean())
    for comparison, hours in zip(section["comparisons"], (11, 90)):
        assert comparison.setting == f"T={hours} h, alpha=0.95" and comparison.n_pairs == 3
        assert comparison.t_test_p == pytest.approx(ttest_rel(curves[hours, 0.95], asc_only[:3]).pvalue)
    markdown = (out / "summary.md").read_text()
    cell = curves[90, 0.5]
    half = t.ppf(0.975, 2) * cell.std(ddof=1) / np.sqrt(3)
    assert f"{cell.mean():.4f} [{cell.mean() - half:.4f}, {cell.mean() + half:.4f}] (3)" in markdown
    assert (out / "alpha_per_hours.png").read_bytes().startswith(PNG)


# --- the tuned control --------------------------------------------------------------------------------------

# Search runs: (flags or alpha, validation per epoch, test). The test-best run is never the validation-best one.
SCENE_SEARCH = [
    ({"dropout": 0.1, "weight_decay": 1e-5, "mixup": False}, [0.50, 0.61], 0.59),
    ({"dropout": 0.4, "drop_path_rate": 0.2, "mixup_alpha": 0.7}, [0.55, 0.64, 0.62], 0.55),  # best on validation (0.64)
    ({"dropout": 0.3, "specaugment": False}, [0.60], 0.70),  # best on test: must not win
]
ALPHA_SEARCH = [(0.5, [0.60], 0.75), (0.9, [0.58, 0.66], 0.61), (0.99, [0.63], 0.64)]  # 0.9 wins on validation


@pytest.fixture
def searches(tmp_path):
    for index, (flags, validation, test) in enumerate(SCENE_SEARCH):
        write_run(tmp_path / "scene" / f"trial={index}", seed=100, alpha=0.0, test=test, validation=validation, flags=flags)
    for alpha, validation, test in ALPHA_SEARCH:
        write_run(tmp_path / "alpha" / f"alpha={alpha}", seed=100, alpha=alpha, test=test, validation=validation)
    return tmp_path / "scene", tmp_path / "alpha"


def test_the_choice_reads_validation_only_and_records_equal_budgets(searches):
    scene, alpha = searches
    selection = tuned_control.select_control(scene, alpha)
    chosen = selection["scene_only"]
    assert chosen["run"].endswith("trial=1") and chosen["validation_asc_macro_accuracy"] == 0.64 and chosen["epoch"] == 2
    assert chosen["setting"] == {**regularisation.TRAINING_DEFAULTS, "dropout": 0.4, "drop_path_rate": 0.2, "mixup_alpha": 0.7}
    assert selection["joint"]["alpha"] == 0.9 and selection["joint"]["validation_asc_macro_accuracy"] == 0.66
    assert (chosen["budget"], selection["joint"]["budget"], selection["budgets_equal"]) == (3, 3, True)
    assert chosen["search_seeds"] == selection["joint"]["search_seeds"] == [100]
    assert selection["joint"]["event_set"] == {"k": 115, "hours": 90.0, "strategy": "random"}
    for path in scene.rglob("results.json"):  # no test number anywhere: a choice made without them is the same
        payload = json.loads(path.read_text())
        payload["final"] = {"asc_macro_accuracy": 0.0}
        path.write_text(json.dumps(payload))
    assert tuned_control.select_control(scene, alpha)["scene_only"]["run"] == chosen["run"]


def test_unequal_budgets_and_wrong_runs_are_refused_by_name(searches, tmp_path):
    scene, alpha = searches
    write_run(scene / "trial=3", seed=100, alpha=0.0, test=0.5, validation=[0.1])
    with pytest.raises(ValueError, match=r"unequal budgets: 4 scene-only search run\(s\) .* against 3"):
        tuned_control.select_control(scene, alpha)
    assert tuned_control.select_control(scene, alpha, allow_unequal_budgets=True)["budgets_equal"] is False
    write_run(alpha / "alpha=0.0", seed=100, alpha=0.0, test=0.5)
    with pytest.raises(ValueError, match=r"alpha search 0 < alpha < 1 runs; these are not: .*alpha=0\.0"):
        tuned_control.select_control(scene, alpha)
    with pytest.raises(ValueError, match="--alpha_search .*missing: no such folder"):
        tuned_control.select_control(scene, tmp_path / "missing")


def test_the_rerun_sweeps_are_valid_and_keep_off_the_search_seeds(searches, tmp_path, capsys):
    scene, alpha = searches
    out = tmp_path / "chosen"
    code = load_script("select_control").main(["--scene_search", str(scene), "--alpha_search", str(alpha), "--output_dir", str(out)])
    assert code == 0 and "best of 3 runs" in capsys.readouterr().out
    saved = tuned_control.read_selection(out)
    assert saved["rerun_seeds"] == [0, 1, 2, 3] and saved["scene_only"]["budget"] == saved["joint"]["budget"] == 3
    scene_runs = sweeps.plan_runs(sweeps.load_sweep(out / "tuned_scene_only.yaml"), "tuned_scene_only", tmp_path / "runs")
    joint_runs = sweeps.plan_runs(sweeps.load_sweep(out / "tuned_joint.yaml"), "tuned_joint", tmp_path / "runs")
    assert [run.parameters["seed"] for run in scene_runs] == [0, 1, 2, 3] == [run.parameters["seed"] for run in joint_runs]
    assert {"--alpha=0", "--dropout=0.4", "--drop_path_rate=0.2", "--mixup_alpha=0.7"} <= set(scene_runs[0].arguments)
    assert {"--alpha=0.9", f"--aet_dataset={REFERENCE}"} <= set(joint_runs[0].arguments)
    assert load_script("select_control").main(["--scene_search", str(scene), "--alpha_search", str(alpha), "--output_dir",
                                               str(out), "--seeds", "0,100"]) == 2
    assert "seed(s) [100] chose the settings" in capsys.readouterr().err


def test_the_report_section_compares_the_reruns_on_test_as_scipy_does(searches, tmp_path, capsys):
    scene, alpha = searches
    selection = tuned_control.select_control(scene, alpha)
    tuned_control.write_selection(selection, tmp_path / "chosen")
    runs = tmp_path / "runs"
    chosen_flags = selection["scene_only"]["setting"]
    tuned = np.array([0.60, 0.62, 0.58, 0.63])
    joint = np.array([0.625, 0.63, 0.61, 0.64])
    for seed in range(4):
        write_run(runs / "tuned_scene_only" / f"seed={seed}", seed=seed, alpha=0.0, test=float(tuned[seed]), flags=chosen_flags)
        write_run(runs / "tuned_joint" / f"seed={seed}", seed=seed, alpha=0.9, test=float(joint[seed]))
        write_run(runs / "other" / f"seed={seed}", seed=seed, alpha=0.0, test=0.1, flags={"dropout": 0.45})  # another setting
    write_run(runs / "search_copy" / "seed=100", seed=100, alpha=0.9, test=0.99)  # a search seed: never in the comparison
    assert load_script("report").main([str(runs), "--tuned_control", str(tmp_path / "chosen" / "tuned_control.json"),
                                       "--output_dir", str(tmp_path / "report")]) == 0
    assert "tuned control: scene only dropout=0.4" in capsys.readouterr().out
    section = json.loads((tmp_path / "report" / "summary.json").read_text())["tuned_control"]
    comparison = section["comparison"]
    differences = joint - tuned
    half = t.ppf(0.975, 3) * differences.std(ddof=1) / 2
    assert comparison["n_pairs"] == 4 and comparison["seeds"] == [0, 1, 2, 3]
    assert comparison["difference"]["mean"] == pytest.approx(differences.mean())
    assert (comparison["difference"]["ci_low"], comparison["difference"]["ci_high"]) == pytest.approx(
        (differences.mean() - half, differences.mean() + half))
    assert comparison["t_test_p"] == pytest.approx(ttest_rel(joint, tuned).pvalue)
    assert [row["asc_macro_accuracy"]["mean"] for row in section["rows"]] == pytest.approx([tuned.mean(), joint.mean()])
    markdown = (tmp_path / "report" / "summary.md").read_text()
    assert "with equal budgets: the scene-only regularisation from 3 search run(s), the joint model's alpha from 3" in markdown
    assert "scene only, chosen: dropout=0.4, drop_path_rate=0.2, weight_decay=0.0001, mixup_alpha=0.7" in markdown
    assert f"| {comparison['setting']} | scene only, tuned on validation | scene macro accuracy | 4 |" in markdown
    assert (tmp_path / "report" / "tuned_control.png").read_bytes().startswith(PNG)
