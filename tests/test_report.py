"""The report on fixture results.json files with known numbers: figures, tables, Pearson correlations,
statistics over seeds (against scipy and hand computations), duplicates and old results."""

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr, t, ttest_rel

from sceneevent.study import factors, figures, report, run_readings, seed_statistics
from sceneevent.training.results import RunResults

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def subset_name(k: int, hours: int, strategy: str) -> str:
    return f"data/aet_subsets/k={k}_hours={hours}_strategy_{strategy}"


def reading(results: dict, source: str) -> run_readings.RunReading:
    return run_readings.run_from_results(RunResults.from_dict(results), source)


def fixture_runs() -> list[dict]:
    """One dict per run: its factors and metrics, laid out like the five sweeps in sweeps/ (3 seeds each)."""
    rng = np.random.default_rng(0)
    runs = []

    def add(sweep, alpha=0.95, k=115, hours=90, strategy="random", mode=None, in_subset=True, gradients=False, batch=64, **_):
        for seed in SEEDS:
            asc = None if alpha == 1.0 else round(0.60 + 0.08 * alpha + 0.0004 * k + 0.0002 * hours + float(rng.normal(0, 0.01)), 4)
            lwlrap = None if alpha == 0.0 else round(0.30 + 0.2 * alpha + float(rng.normal(0, 0.01)), 4)
            runs.append(dict(sweep=sweep, seed=seed, alpha=alpha, k=k, hours=hours, strategy=strategy, mode=mode,
                             in_subset=in_subset, asc=asc, lwlrap=lwlrap, gradients=gradients, batch=batch))

    for alpha in (0.0, 0.5, 0.9, 0.95, 0.99, 1.0):
        add("alpha", alpha=alpha, in_subset=False, gradients=alpha in (0.5, 0.95))  # factors from the folder name only
    for strategy in ("random", "correlated", "uncorrelated"):
        add("strategy", k=35, strategy=strategy)
    for hours in (11, 45, 90, 360):
        add("hours", hours=hours)
    for k, strategy in ((2, "speech_music"), (10, "random"), (35, "random"), (115, "random")):
        add("k", k=k, strategy=strategy)
    add("pretrain_vs_joint", mode="pretrain_finetune")
    add("pretrain_vs_joint", mode="joint")
    for batch in (16, 256):  # with the 64 of the runs above: the batch composition
        add("batch_composition", batch=batch)
    return runs


def floor_of(run: dict) -> float | None:
    """The fixture's floor: a run with a scene task has one, the same for every setting of a seed."""
    return None if run["asc"] is None else 0.5 + 0.01 * run["seed"]


def write_results(root: Path, run: dict, index: int) -> None:
    config = {"alpha": run["alpha"], "seed": run["seed"], "aet_dataset": subset_name(run["k"], run["hours"], run["strategy"]),
              "asc_dataset": "synthetic", "asc_batch_size": run.get("batch", 64)}
    if run["mode"]:
        config["mode"] = run["mode"]
    data = {"scene_labels": ["a", "b"], "event_labels": ["x"], "rows": {}, "fingerprints": {}, "bad_audio": []}
    if run["in_subset"]:
        config["aet_dataset"] = f"/scratch/subset_{index}"  # a name that says nothing: the subset record must win
        data["aet_subset"] = {"k": run["k"], "hours": run["hours"], "strategy": run["strategy"], "seed": 0}
    history = [{"epoch": 1, "step": 10, "train_loss": 1.0, "train_loss_asc": 1.0, "train_loss_aet": 0.1,
                "val_asc_macro_accuracy": run["asc"], "val_aet_lwlrap": run["lwlrap"], "loss_weights": {}}]
    if run["gradients"]:
        history[0]["task_gradients"] = [{"step": s, "grad_norm_asc": 1.0, "grad_norm_aet": 2.0, "cosine": 0.1 * run["alpha"] + 0.01 * s}
                                        for s in (1, 2)]
    results = {"schema_version": 2, "config": config, "alpha": run["alpha"], "seed": run["seed"], "history": history,
               "final": {"asc_macro_accuracy": run["asc"], "aet_lwlrap": run["lwlrap"], "loss_asc": 1.0, "loss_aet": 0.1,
                         "best_epoch": 1, "selected_by": "val_asc_macro_accuracy",
                         "last_epoch": {"epoch": 1, "asc_macro_accuracy": run["asc"], "aet_lwlrap": run["lwlrap"]},
                         "floor_asc_macro_accuracy": floor_of(run)},
               "train_runtime": 1.0, "data": data}
    folder = root / run["sweep"] / f"run{index}"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("runs")
    runs = fixture_runs()
    for index, run in enumerate(runs):
        write_results(runs_dir, run, index)
    (runs_dir / ".staging" / "x").mkdir(parents=True)
    (runs_dir / ".staging" / "x" / "results.json").write_text("{not json")  # hidden: never read
    out = tmp_path_factory.mktemp("report")
    assert report_script().main([str(runs_dir), "--output_dir", str(out)]) == 0
    return runs, out, json.loads((out / "summary.json").read_text())


# The runs each slice must hold: the sweep's own runs plus the runs that share its fixed setting.
SLICES = {
    "alpha": lambda r: r["mode"] != "pretrain_finetune" and (r["alpha"] == 0.0 or (r["k"], r["hours"], r["strategy"]) == (115, 90, "random")),
    "strategy": lambda r: r["alpha"] == 0.95 and r["mode"] in (None, "joint") and (r["k"], r["hours"]) == (35, 90),
    "hours": lambda r: r["alpha"] == 0.95 and r["mode"] in (None, "joint") and (r["k"], r["strategy"]) == (115, "random"),
    "k": lambda r: r["alpha"] == 0.95 and r["mode"] in (None, "joint") and r["hours"] == 90 and r["strategy"] in ("random", "speech_music"),
    "mode": lambda r: (r["k"], r["hours"], r["strategy"]) == (115, 90, "random") and (r["alpha"] == 0.95 or r["mode"] == "pretrain_finetune"),
}
# Every slice but the batch composition's holds the paper's 64 scene clips per batch.
SLICES = {factor: (lambda r, take=take: take(r) and r["batch"] == 64) for factor, take in SLICES.items()}
SLICES["asc_batch_size"] = lambda r: r["alpha"] == 0.95 and r["mode"] in (None, "joint") and (r["k"], r["hours"], r["strategy"]) == (115, 90, "random")


def value_of(run: dict, factor: str):
    if factor == "asc_batch_size":
        return run["batch"]
    if factor == "mode":
        return run["mode"] or "joint"
    if factor == "strategy" and run["strategy"] == "speech_music":
        return "random"
    return run[factor]


@pytest.mark.parametrize("factor", sorted(figures.FIGURES))
def test_every_figure_is_a_real_png(written, factor):
    _, out, summary = written
    name = figures.FIGURES[factor][0]
    assert summary["figures"][factor] == name
    data = (out / name).read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 15_000


def test_the_floor_is_the_mean_over_runs_in_the_summary_and_a_dashed_line_in_the_figures(written):
    runs, out, summary = written
    floors = [floor_of(run) for run in runs if floor_of(run) is not None]
    assert summary["floor"] == {"asc_macro_accuracy": pytest.approx(np.mean(floors)), "runs": len(floors)}
    assert f"Floor: {np.mean(floors):.4f}" in (out / "summary.md").read_text()
    readings = [reading({"schema_version": 2, "final": {"asc_macro_accuracy": 0.6, "floor_asc_macro_accuracy": value}}, f"run{i}")
                for i, value in enumerate((0.4, 0.5, None))]
    figure, axis = figures.pyplot().subplots()
    figures._floor_line(axis, readings)
    (line,) = axis.lines
    assert line.get_linestyle() == "--" and list(line.get_ydata()) == [pytest.approx(0.45)] * 2
    assert "n = 2" in line.get_label()
    figures.pyplot().close(figure)


def test_gradient_figure_and_cosines(written):
    runs, out, summary = written
    assert (out / figures.GRADIENT_FIGURE).read_bytes().startswith(PNG_SIGNATURE)
    assert [row["alpha"] for row in summary["task_gradients"]] == [0.5, 0.95]
    assert summary["task_gradients"][1]["cosine_mean"] == pytest.approx(0.095 + 0.015)
    assert summary["skipped"] == {}


@pytest.mark.parametrize("factor", sorted(figures.FIGURES))
def test_csv_and_markdown_means_match_the_fixture(written, factor):
    runs, out, summary = written
    members = [run for run in runs if SLICES[factor](run)]
    expected = {}
    for value in {value_of(run, factor) for run in members}:
        group = [run for run in members if value_of(run, factor) == value]
        asc = [run["asc"] for run in group if run["asc"] is not None]
        expected[f"{value:g}" if isinstance(value, float) else str(value)] = (len(group), asc)
    with open(out / "summary.csv") as handle:
        rows = {row["value"]: row for row in csv.DictReader(handle) if row["factor"] == factor}
    assert set(rows) == set(expected)
    markdown = (out / "summary.md").read_text()
    for value, (count, asc) in expected.items():
        assert int(rows[value]["runs"]) == count
        if not asc:
            assert rows[value]["asc_macro_accuracy_mean"] == ""
            continue
        mean, sd, n = np.mean(asc), np.std(asc, ddof=1), len(asc)
        half = t.ppf(0.975, n - 1) * sd / np.sqrt(n)  # hand-computed Student-t CI
        assert float(rows[value]["asc_macro_accuracy_mean"]) == pytest.approx(mean)
        assert float(rows[value]["asc_macro_accuracy_sd"]) == pytest.approx(sd)
        assert float(rows[value]["asc_macro_accuracy_ci_low"]) == pytest.approx(mean - half)
        assert float(rows[value]["asc_macro_accuracy_ci_high"]) == pytest.approx(mean + half)
        assert int(rows[value]["asc_macro_accuracy_n"]) == n
        assert f"| {value} | {count} | {mean:.4f} | {sd:.4f} | [{mean - half:.4f}, {mean + half:.4f}] | {n} |" in markdown


@pytest.mark.parametrize("factor", ["hours", "k"])
def test_pearson_matches_scipy_over_individual_runs(written, factor):
    runs, out, summary = written
    members = [run for run in runs if SLICES[factor](run) and run["asc"] is not None]
    expected = pearsonr([float(run[factor]) for run in members], [run["asc"] for run in members])
    found = summary["pearson"][factor]
    assert found["n"] == len(members)
    assert found["r"] == pytest.approx(expected.statistic)
    assert found["p"] == pytest.approx(expected.pvalue)
    assert f"| {factors.LABELS[factor]} | {expected.statistic:.4f} | {expected.pvalue:.4g} | {len(members)} |" in (out / "summary.md").read_text()


def test_alpha_figure_baselines_come_from_the_single_task_runs(written):
    runs, _, _ = written
    loaded = [reading({"schema_version": 2, "alpha": r["alpha"], "seed": r["seed"],
                       "config": {"aet_dataset": subset_name(r["k"], r["hours"], r["strategy"])},
                       "final": {"asc_macro_accuracy": r["asc"], "aet_lwlrap": r["lwlrap"]}}, "x") for r in runs]
    found = factors.baseline(loaded, 0.0, "asc_macro_accuracy")
    assert found.n == 3 and found.mean == pytest.approx(np.mean([r["asc"] for r in runs if r["alpha"] == 0.0]))
    assert all(run.k is None for run in loaded if run.alpha == 0.0)  # no event data: matches any slice


@pytest.mark.parametrize(
    "aet_dataset, subset, expected",
    [
        ("data/aet_subsets/k=35_hours=90_strategy_correlated", None, (35, 90.0, "correlated")),
        ("data/aet_subsets/k=35/", None, (35, None, None)),
        ("data/aet_subsets/hours=22.5", None, (None, 22.5, None)),
        ("data/aet_subsets/T=11_strategy=uncorrelated", None, (None, 11.0, "uncorrelated")),
        ("data/aet_subsets/strategy_random", None, (None, None, "random")),
        ("data/my_k=5/other", None, (None, None, run_readings.FULL_EVENT_SET)),  # only the folder's own name counts
        ("whatever", {"k": 2, "hours": 45, "strategy": "speech_music"}, (2, 45.0, "speech_music")),
        ("synthetic", None, (None, None, run_readings.FULL_EVENT_SET)),  # a whole source: its own setting, not a wildcard
    ],
)
def test_event_factors_from_subset_record_or_folder_name(aet_dataset, subset, expected):
    results = {"schema_version": 2, "alpha": 0.95, "config": {"aet_dataset": aet_dataset}, "final": {},
               "data": {"aet_subset": subset} if subset else {}}
    run = reading(results, "x")
    assert (run.k, run.hours, run.strategy) == expected


def test_single_factor_folder_skips_the_other_figures(tmp_path):
    for index, hours in enumerate((11, 22, 45, 11, 22, 45)):
        write_results(tmp_path / "runs", dict(sweep="hours", seed=index, alpha=0.95, k=115, hours=hours, strategy="random", mode=None,
                                              in_subset=True, asc=0.6 + 0.001 * hours + 0.001 * index, lwlrap=0.5, gradients=False), index)
    summary = report.write_report(run_readings.load_runs(tmp_path / "runs"), tmp_path / "out")
    assert set(summary["figures"]) == {"hours"}
    assert set(summary["skipped"]) == {"alpha", "strategy", "k", "mode", "asc_batch_size", "task_gradients"}
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["fig3b_hours.png", "summary.csv", "summary.json", "summary.md"]
    assert summary["pearson"]["k"]["r"] is None


def test_no_runs_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no runs"):
        report.write_report(run_readings.load_runs(tmp_path), tmp_path / "out")
    with pytest.raises(ValueError, match="no such folder"):
        run_readings.load_runs(tmp_path / "missing")


def test_wandb_project_without_login_fails_fast_and_clearly(tmp_path, monkeypatch, capsys):
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    with pytest.raises(RuntimeError, match="--wandb_project me/sceneevent: could not read runs from W&B"):
        run_readings.load_wandb_runs("me/sceneevent", timeout=5)


# --- statistics over seeds ----------------------------------------------------------------------------

PAIRED_SEEDS = range(6)


def write_run(root: Path, name: str, seed: int, alpha: float, asc: float | None, lwlrap: float | None = None, **extra) -> Path:
    """A minimal schema-2 results.json in root/name."""
    run = dict(sweep=name, seed=seed, alpha=alpha, k=115, hours=90, strategy="random", mode=None, in_subset=False,
               asc=asc, lwlrap=lwlrap, gradients=False)
    write_results(root, run, seed)
    path = root / name / f"run{seed}" / "results.json"
    if extra:
        path.write_text(json.dumps({**json.loads(path.read_text()), **extra}))
    return path.parent


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    """ASC-only baseline with a large seed effect; alpha 0.95 = baseline + 0.05 + small noise (a true difference);
    alpha 0.5 = baseline + symmetric small noise (no difference)."""
    root = tmp_path_factory.mktemp("paired")
    rng = np.random.default_rng(3)
    base = 0.6 + rng.normal(0, 0.03, len(PAIRED_SEEDS))
    better = base + 0.05 + rng.normal(0, 0.005, len(PAIRED_SEEDS))
    same = base + np.array([0.004, -0.004, 0.002, -0.002, 0.001, -0.001])
    for seed in PAIRED_SEEDS:
        write_run(root, "base", seed, 0.0, float(base[seed]))
        write_run(root, "better", seed, 0.95, float(better[seed]), 0.5)
        write_run(root, "same", seed, 0.5, float(same[seed]), 0.4)
    summary = report.write_report(run_readings.load_runs(root), root / "out")
    by_setting = {c.setting: c for c in summary["comparisons"]["alpha"] if c.metric == "asc_macro_accuracy"}
    return base, better, same, summary, by_setting, root / "out"


def test_a_true_difference_is_significant_with_the_hand_computed_ci(paired):
    base, better, _, _, by_setting, _ = paired
    found = by_setting["alpha=0.95"]
    differences = better - base
    n = len(differences)
    half = t.ppf(0.975, n - 1) * differences.std(ddof=1) / np.sqrt(n)
    assert found.baseline == factors.ASC_ONLY and found.n_pairs == n and found.seeds == list(PAIRED_SEEDS)
    assert found.difference.mean == pytest.approx(differences.mean())
    assert (found.difference.ci_low, found.difference.ci_high) == pytest.approx((differences.mean() - half, differences.mean() + half))
    assert found.difference.ci_low > 0
    assert found.t_test_p == pytest.approx(ttest_rel(better, base).pvalue) and found.t_test_p < 0.05
    assert found.significant and found.wilcoxon_p == pytest.approx(2 / 2**n)  # every difference positive: exact p
    assert 0 < found.detectable_difference < 0.05


def test_a_null_difference_is_not_significant(paired):
    base, _, same, _, by_setting, _ = paired
    found = by_setting["alpha=0.5"]
    assert found.t_test_p == pytest.approx(ttest_rel(same, base).pvalue) and found.t_test_p > 0.05
    assert not found.significant
    assert found.difference.ci_low < 0 < found.difference.ci_high


def test_the_summary_says_which_differences_are_significant(paired):
    *_, out = paired
    markdown = (out / "summary.md").read_text()
    assert "alpha=0.95 vs ASC only (alpha = 0), scene macro accuracy: difference +0.05" in markdown
    assert "over n = 6 paired seed(s); significant (paired t p = " in markdown
    assert "alpha=0.5 vs ASC only (alpha = 0), scene macro accuracy: difference +0.0000" in markdown
    assert "; not significant (paired t p = 1)" in markdown
    saved = json.loads((out / "summary.json").read_text())
    entry = next(c for c in saved["comparisons"]["alpha"] if c["setting"] == "alpha=0.95" and c["metric"] == "asc_macro_accuracy")
    assert entry["significant"] is True and entry["n_pairs"] == 6 and entry["difference"]["ci_low"] > 0
    # no alpha = 1 run here: lwlrap has no baseline to be compared with
    assert all(c["metric"] == "asc_macro_accuracy" for c in saved["comparisons"]["alpha"])


def test_only_seeds_both_sides_have_are_paired(tmp_path):
    for seed in (0, 1, 2, 3):
        write_run(tmp_path, "base", seed, 0.0, 0.5 + 0.125 * seed)  # binary fractions: exact differences
    for seed in (2, 3, 4):
        write_run(tmp_path, "joint", seed, 0.95, 0.25 + 0.125 * seed)
    summary = report.write_report(run_readings.load_runs(tmp_path), tmp_path / "out")
    (found,) = summary["comparisons"]["alpha"]
    assert found.seeds == [2, 3] and found.n_pairs == 2
    assert found.difference.mean == -0.25 and found.detectable_difference == 0.0
    assert found.t_test_p is None and "sd = 0" in " ".join(found.notes)  # identical differences: no t-test
    assert "cannot reach p < 0.05" in " ".join(found.notes)


def test_all_zero_differences_give_no_wilcoxon_p():
    runs = [run_readings.RunReading(source=f"{name}{seed}", seed=seed, alpha=alpha, mode="joint", k=None, hours=None,
                                    strategy=None, asc_macro_accuracy=0.5, aet_lwlrap=None)
            for seed in range(4) for name, alpha in (("a", 0.0), ("b", 0.9))]
    found = seed_statistics.compare_paired(runs[1::2], runs[0::2], "asc_macro_accuracy", "b", "a")
    assert found.wilcoxon_p is None and found.t_test_p is None and not found.significant
    assert "no nonzero difference" in " ".join(found.notes)


@pytest.mark.parametrize("n", [3, 6, 12])
def test_detectable_difference_has_the_stated_power(n):
    # Independent check by simulation: paired differences with that true mean are detected 80 % of the time.
    sd = 0.02
    delta = seed_statistics.detectable_difference(sd, n)
    rng = np.random.default_rng(n)
    samples = rng.normal(delta, sd, (40_000, n))
    t_stat = samples.mean(1) / (samples.std(1, ddof=1) / np.sqrt(n))
    assert np.mean(np.abs(t_stat) > t.ppf(0.975, n - 1)) == pytest.approx(0.8, abs=0.01)
    assert delta > (1.959964 + 0.841621) * sd / np.sqrt(n)  # above the normal approximation (t has fatter tails)


def test_strategy_and_mode_are_also_compared_with_their_reference_value(written):
    _, _, summary = written
    strategy = {(c["setting"], c["baseline"]) for c in summary["comparisons"]["strategy"]}
    assert ("strategy=correlated", "strategy=random") in strategy and ("strategy=correlated", factors.ASC_ONLY) in strategy
    mode = {(c["setting"], c["baseline"]) for c in summary["comparisons"]["mode"]}
    assert ("mode=pretrain_finetune", "mode=joint") in mode
    assert all(c["n_pairs"] == len(SEEDS) for c in summary["comparisons"]["strategy"])


# --- duplicates and old results -----------------------------------------------------------------------


def test_a_copied_run_folder_counts_once_and_is_named(tmp_path, caplog):
    import shutil

    for seed in range(3):
        write_run(tmp_path / "runs", "base", seed, 0.0, 0.6 + 0.01 * seed)
        write_run(tmp_path / "runs", "joint", seed, 0.95, 0.7 - 0.01 * seed)
    copy = tmp_path / "runs" / "joint" / "run1_copy"
    shutil.copytree(tmp_path / "runs" / "joint" / "run1", copy)
    summary = report.write_report(run_readings.load_runs(tmp_path / "runs"), tmp_path / "out")
    assert summary["runs_read"] == 7 and summary["runs"] == 6
    assert summary["duplicates"] == {str(tmp_path / "runs" / "joint" / "run1"): [str(copy)]}
    assert str(copy) in caplog.text and "counted once" in caplog.text
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["duplicates"] == summary["duplicates"]
    joint = next(row for row in summary["groups"]["alpha"] if row.value == 0.95)
    assert joint.runs == 3 and joint.asc_macro_accuracy.n == 3


def test_a_rerun_in_another_folder_with_other_logging_is_a_duplicate(tmp_path):
    first = write_run(tmp_path, "a", 0, 0.0, 0.6)
    second = write_run(tmp_path, "b", 0, 0.0, 0.61)
    results = json.loads((second / "results.json").read_text())
    results["config"].update(output_dir="elsewhere", run_name="again", report_to="wandb", logging_steps=1)
    (second / "results.json").write_text(json.dumps(results))
    unique, duplicates = run_readings.drop_duplicates(run_readings.load_runs(tmp_path))
    assert len(unique) == 1 and duplicates == {str(first): [str(second)]}


def test_old_results_are_refused_naming_every_file(tmp_path, capsys, caplog):
    write_run(tmp_path / "runs", "new", 0, 0.0, 0.6)
    write_run(tmp_path / "runs", "new", 1, 0.95, 0.7)
    olds = [write_run(tmp_path / "runs", f"old{seed}", seed, 0.5, 0.65) / "results.json" for seed in (0, 1)]
    for path in olds:
        results = json.loads(path.read_text())
        del results["schema_version"]
        path.write_text(json.dumps(results))
    with pytest.raises(run_readings.OldResultsError, match="test data") as error:
        run_readings.load_runs(tmp_path / "runs")
    assert all(str(path) in str(error.value) for path in olds)
    assert report_script().main([str(tmp_path / "runs"), "--output_dir", str(tmp_path / "out")]) == 2
    stderr = capsys.readouterr().err
    assert "--skip_old_results" in stderr and all(str(path) in stderr for path in olds)

    runs = run_readings.load_runs(tmp_path / "runs", skip_old_results=True)
    assert sorted(run.alpha for run in runs) == [0.0, 0.95]
    assert all(str(path) in caplog.text for path in olds)


def test_old_wandb_runs_are_refused(monkeypatch):
    import sys
    import types

    class FakeRun:
        def __init__(self, run_id, summary):
            self.id, self.path, self.config, self.summary = run_id, ["me", "proj", run_id], {"alpha": 0.0, "seed": 0}, summary

    fake_runs = [FakeRun("new1", {"test/asc_macro_accuracy": 0.7, "eval/asc_macro_accuracy": 0.8}),
                 FakeRun("old1", {"eval/asc_macro_accuracy": 0.8})]
    fake = types.SimpleNamespace(Api=lambda timeout: types.SimpleNamespace(runs=lambda project, filters: fake_runs))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    with pytest.raises(run_readings.OldResultsError, match="wandb:me/proj/old1"):
        run_readings.load_wandb_runs("me/proj")
    (run,) = run_readings.load_wandb_runs("me/proj", skip_old_results=True)
    assert run.asc_macro_accuracy == 0.7  # the test value, never the validation one


def report_script():
    spec = importlib.util.spec_from_file_location("script_report", ROOT / "scripts" / "report.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_a_comparison_whose_seeds_share_one_subset_draw_says_so():
    def read(seed, alpha, asc, folder=None, strategy=None, subset_seed=0):
        data = {"aet_subset": {"k": 10, "hours": 1.0, "strategy": strategy, "seed": subset_seed}} if strategy else {}
        results = {"schema_version": 2, "alpha": alpha, "seed": seed, "data": data,
                   "config": {"alpha": alpha, "seed": seed, "aet_dataset": folder or "synthetic"},
                   "final": {"asc_macro_accuracy": asc, "aet_lwlrap": None if alpha == 0 else 0.5}}
        return reading(results, f"run-{seed}-{folder}")

    seeds = range(3)
    scene_only = [read(seed, 0.0, 0.70 + 0.01 * seed) for seed in seeds]
    fixed = [read(seed, 0.9, 0.75 + 0.02 * seed, "/d/correlated", "correlated") for seed in seeds]  # one folder for all seeds
    per_seed = [read(seed, 0.9, 0.74 + 0.02 * seed, f"/d/uncorrelated_draw={seed}", "uncorrelated", seed) for seed in seeds]
    assert factors.shares_one_draw(fixed) and not factors.shares_one_draw(per_seed)
    assert not factors.shares_one_draw(fixed[:1])  # one seed shares nothing
    assert scene_only[0].event_draw is None  # no event data, no draw
    comparisons = factors.factor_comparisons(fixed + per_seed, "strategy", scene_only + fixed + per_seed)
    notes = {comparison.setting: " ".join(comparison.notes) for comparison in comparisons}
    assert "one draw of its event subset" in notes["strategy=correlated"] and "strategy=correlated" in notes["strategy=correlated"]
    assert "one draw" not in notes["strategy=uncorrelated"]


def test_a_comparison_of_runs_that_computed_differently_says_so():
    def read(seed, alpha, asc, device="cpu", **config):
        results = {"schema_version": 2, "alpha": alpha, "seed": seed, "data": {},
                   "environment": {"mixed_precision": "no", "device": device},
                   "config": {"alpha": alpha, "seed": seed, "torch_compile": False, "torch_compile_mode": "default",
                              "channels_last": True, **config},
                   "final": {"asc_macro_accuracy": asc, "aet_lwlrap": None if alpha == 0 else 0.5}}
        return reading(results, f"run-{seed}-{alpha}")

    seeds = range(3)
    # an unpaired scene-only run of another seed, computed otherwise: not part of any pair, so no note
    scene_only = [read(seed, 0.0, 0.70 + 0.01 * seed) for seed in seeds] + [read(9, 0.0, 0.7, channels_last=False)]
    alike = [read(seed, 0.5, 0.72 + 0.01 * seed, torch_compile_mode="max-autotune") for seed in seeds]  # mode unused
    compiled = [read(seed, 0.9, 0.75 + 0.01 * seed, torch_compile=True) for seed in seeds]
    older = [read(seed, 0.7, 0.71 + 0.01 * seed, channels_last=None) for seed in seeds]  # not recorded: not a difference
    on_gpu = [read(seed, 0.6, 0.71 + 0.01 * seed, device="cuda:0") for seed in seeds]
    joint = alike + compiled + older + on_gpu
    notes = {comparison.setting: " ".join(comparison.notes) for comparison in factors.factor_comparisons(joint, "alpha", scene_only + joint)}
    assert "did not compute alike (torch_compile: False vs True)" in notes["alpha=0.9"]
    assert "did not compute alike (device: cpu vs cuda)" in notes["alpha=0.6"]
    assert "compute alike" not in notes["alpha=0.5"] and "compute alike" not in notes["alpha=0.7"]


# --- values from the runs in summary.md (issue 28.7) -----------------------------------------------------

INJECTION = "evil\n# Injected <script>alert(1)</script> [click](javascript:alert(1)) | cell `code` $\\frac$ &lt;"


def subset_data(strategy: str, seed: int = 0) -> dict:
    return {"scene_labels": ["a", "b"], "event_labels": ["x"], "rows": {}, "fingerprints": {}, "bad_audio": [],
            "aet_subset": {"k": 10, "hours": 90, "strategy": strategy, "seed": seed}}


FORMULA = '=HYPERLINK("http://example.invalid","x")'


def test_values_from_the_runs_are_text_in_summary_md_never_markup(tmp_path):
    import csv
    import io
    import re
    import shutil

    runs = tmp_path / "runs"
    for seed in range(3):
        write_run(runs, "base", seed, 0.0, 0.6 + 0.01 * seed)
        for index, strategy in enumerate(("random", INJECTION, FORMULA)):
            write_run(runs, f"strategy{index}", seed, 0.95, 0.65 + 0.01 * seed + 0.02 * index, 0.5, data=subset_data(strategy))
    shutil.copytree(runs / "base" / "run0", runs / "base" / "copy\n# Heading <b>x</b>")  # a duplicate with an odd name
    summary = report.write_report(run_readings.load_runs(runs), tmp_path / "out")
    # summary.csv: a value a spreadsheet would run as a formula is written with a leading ' (shown, never run)
    cells = [cell for row in csv.reader(io.StringIO((tmp_path / "out" / "summary.csv").read_text())) for cell in row]
    assert "'" + FORMULA in cells and FORMULA not in cells
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "@")]
    markdown = (tmp_path / "out" / "summary.md").read_text()
    headings = [line for line in markdown.splitlines() if line.startswith("#")]
    assert headings and all(line == "# Results" or line.startswith("## ") for line in headings), headings
    assert not re.search(r"(?<!\\)<[A-Za-z/]", markdown) and not re.search(r"(?<!\\)\]\(javascript:", markdown)  # no tag, no link
    assert "evil # Injected \\<script>alert(1)\\</script> \\[click\\](javascript:alert(1)) \\| cell \\`code\\` \\$\\\\frac\\$ \\&lt;" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| evil")]
    assert rows and all(len(re.findall(r"(?<!\\)\|", row)) == 11 for row in rows)  # 10 cells: the value's `|` is text
    assert "- kept " in markdown and "copy # Heading \\<b>x\\</b>" in markdown
    # the figure draws the value as text too (`$\frac$` as mathtext stopped the report), and JSON keeps it as it is
    assert (tmp_path / "out" / figures.FIGURES["strategy"][0]).read_bytes().startswith(PNG_SIGNATURE)
    assert INJECTION in [row["value"] for row in json.loads((tmp_path / "out" / "summary.json").read_text())["groups"]["strategy"]]
    assert summary["runs"] == 12


def test_runs_on_different_event_subsets_are_not_duplicates(tmp_path):
    """One --aet_dataset folder rebuilt with another strategy between two runs: the configurations are equal, the
    recorded subsets are not, so these are two measurements."""
    write_run(tmp_path, "a", 0, 0.95, 0.70, 0.5, data=subset_data("random"))
    write_run(tmp_path, "b", 0, 0.95, 0.72, 0.5, data=subset_data("correlated"))
    write_run(tmp_path, "c", 0, 0.95, 0.71, 0.5, data=subset_data("random", seed=1))  # another draw
    copy = write_run(tmp_path, "d", 0, 0.95, 0.70, 0.5, data=subset_data("random"))
    unrecorded = write_run(tmp_path, "e", 0, 0.95, 0.70, 0.5, data={})  # as a run read from W&B: no subset recorded
    runs = run_readings.load_runs(tmp_path)
    assert len({run.identity for run in runs}) == 1  # the configurations are the same
    unique, duplicates = run_readings.drop_duplicates(runs)
    assert len(unique) == 3 and duplicates == {str(tmp_path / "a" / "run0"): [str(copy), str(unrecorded)]}
