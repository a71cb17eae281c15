"""The report on fixture results.json files with known numbers: figures, tables, Pearson correlations."""

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr

from sceneevent import report

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def subset_name(k: int, hours: int, strategy: str) -> str:
    return f"data/aet_subsets/k={k}_hours={hours}_strategy_{strategy}"


def fixture_runs() -> list[dict]:
    """One dict per run: its factors and metrics, laid out like the five sweeps in sweeps/ (3 seeds each)."""
    rng = np.random.default_rng(0)
    runs = []

    def add(sweep, alpha=0.95, k=115, hours=90, strategy="random", mode=None, in_subset=True, gradients=False, **_):
        for seed in SEEDS:
            asc = None if alpha == 1.0 else round(0.60 + 0.08 * alpha + 0.0004 * k + 0.0002 * hours + float(rng.normal(0, 0.01)), 4)
            lwlrap = None if alpha == 0.0 else round(0.30 + 0.2 * alpha + float(rng.normal(0, 0.01)), 4)
            runs.append(dict(sweep=sweep, seed=seed, alpha=alpha, k=k, hours=hours, strategy=strategy, mode=mode,
                             in_subset=in_subset, asc=asc, lwlrap=lwlrap, gradients=gradients))

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
    return runs


def write_results(root: Path, run: dict, index: int) -> None:
    config = {"alpha": run["alpha"], "seed": run["seed"], "aet_dataset": subset_name(run["k"], run["hours"], run["strategy"]),
              "asc_dataset": "synthetic"}
    if run["mode"]:
        config["mode"] = run["mode"]
    data = {"scene_labels": ["a", "b"], "event_labels": ["x"], "rows": {}, "fingerprints": {}, "bad_audio": []}
    if run["in_subset"]:
        config["aet_dataset"] = f"/scratch/subset_{index}"  # a name that says nothing: the subset record must win
        data["aet_subset"] = {"k": run["k"], "hours": run["hours"], "strategy": run["strategy"], "seed": 0}
    history = [{"epoch": 0, "step": 10, "asc_macro_accuracy": run["asc"], "aet_lwlrap": run["lwlrap"]}]
    if run["gradients"]:
        history[0]["task_gradients"] = [{"step": s, "grad_norm_asc": 1.0, "grad_norm_aet": 2.0, "cosine": 0.1 * run["alpha"] + 0.01 * s}
                                        for s in (1, 2)]
    results = {"config": config, "alpha": run["alpha"], "seed": run["seed"], "history": history, "steps": 10,
               "final": {"asc_macro_accuracy": run["asc"], "aet_lwlrap": run["lwlrap"], "loss_asc": 1.0, "loss_aet": 0.1,
                         "best_epoch": 0, "last_epoch": {"epoch": 0}},
               "wall_time_seconds": 1.0, "data": data}
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
    spec = importlib.util.spec_from_file_location("script_report", ROOT / "scripts" / "report.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([str(runs_dir), "--output_dir", str(out)]) == 0
    return runs, out, json.loads((out / "summary.json").read_text())


# The runs each slice must hold: the sweep's own runs plus the runs that share its fixed setting.
SLICES = {
    "alpha": lambda r: r["mode"] != "pretrain_finetune" and (r["alpha"] == 0.0 or (r["k"], r["hours"], r["strategy"]) == (115, 90, "random")),
    "strategy": lambda r: r["alpha"] == 0.95 and r["mode"] in (None, "joint") and (r["k"], r["hours"]) == (35, 90),
    "hours": lambda r: r["alpha"] == 0.95 and r["mode"] in (None, "joint") and (r["k"], r["strategy"]) == (115, "random"),
    "k": lambda r: r["alpha"] == 0.95 and r["mode"] in (None, "joint") and r["hours"] == 90 and r["strategy"] in ("random", "speech_music"),
    "mode": lambda r: (r["k"], r["hours"], r["strategy"]) == (115, 90, "random") and (r["alpha"] == 0.95 or r["mode"] == "pretrain_finetune"),
}


def value_of(run: dict, factor: str):
    if factor == "mode":
        return run["mode"] or "joint"
    if factor == "strategy" and run["strategy"] == "speech_music":
        return "random"
    return run[factor]


@pytest.mark.parametrize("factor", sorted(report.FIGURES))
def test_every_figure_is_a_real_png(written, factor):
    _, out, summary = written
    name = report.FIGURES[factor][0]
    assert summary["figures"][factor] == name
    data = (out / name).read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 15_000


def test_gradient_figure_and_cosines(written):
    runs, out, summary = written
    assert (out / report.GRADIENT_FIGURE).read_bytes().startswith(PNG_SIGNATURE)
    assert [row["alpha"] for row in summary["task_gradients"]] == [0.5, 0.95]
    assert summary["task_gradients"][1]["cosine_mean"] == pytest.approx(0.095 + 0.015)
    assert summary["skipped"] == {}


@pytest.mark.parametrize("factor", sorted(report.FIGURES))
def test_csv_and_markdown_means_match_the_fixture(written, factor):
    runs, out, summary = written
    members = [run for run in runs if SLICES[factor](run)]
    expected = {}
    for value in {value_of(run, factor) for run in members}:
        group = [run for run in members if value_of(run, factor) == value]
        asc = [run["asc"] for run in group if run["asc"] is not None]
        expected[f"{value:g}" if isinstance(value, float) else str(value)] = (len(group), np.mean(asc) if asc else None, np.std(asc, ddof=1) if len(asc) > 1 else None)
    with open(out / "summary.csv") as handle:
        rows = {row["value"]: row for row in csv.DictReader(handle) if row["factor"] == factor}
    assert set(rows) == set(expected)
    markdown = (out / "summary.md").read_text()
    for value, (count, mean, std) in expected.items():
        assert int(rows[value]["runs"]) == count
        if mean is None:
            assert rows[value]["asc_macro_accuracy_mean"] == ""
            continue
        assert float(rows[value]["asc_macro_accuracy_mean"]) == pytest.approx(mean)
        assert float(rows[value]["asc_macro_accuracy_std"]) == pytest.approx(std)
        assert f"| {value} | {count} | {mean:.4f} ± {std:.4f} |" in markdown


@pytest.mark.parametrize("factor", ["hours", "k"])
def test_pearson_matches_scipy_over_individual_runs(written, factor):
    runs, out, summary = written
    members = [run for run in runs if SLICES[factor](run) and run["asc"] is not None]
    expected = pearsonr([float(run[factor]) for run in members], [run["asc"] for run in members])
    found = summary["pearson"][factor]
    assert found["n"] == len(members)
    assert found["r"] == pytest.approx(expected.statistic)
    assert found["p"] == pytest.approx(expected.pvalue)
    assert f"| {report.LABELS[factor]} | {expected.statistic:.4f} | {expected.pvalue:.4g} | {len(members)} |" in (out / "summary.md").read_text()


def test_alpha_figure_baselines_come_from_the_single_task_runs(written):
    runs, _, _ = written
    loaded = [report.run_from_results({"alpha": r["alpha"], "seed": r["seed"], "config": {"aet_dataset": subset_name(r["k"], r["hours"], r["strategy"])},
                                       "final": {"asc_macro_accuracy": r["asc"], "aet_lwlrap": r["lwlrap"]}}, "x") for r in runs]
    mean, _, n = report.baseline(loaded, 0.0, "asc")
    assert n == 3 and mean == pytest.approx(np.mean([r["asc"] for r in runs if r["alpha"] == 0.0]))
    assert all(run.k is None for run in loaded if run.alpha == 0.0)  # no event data: matches any slice


@pytest.mark.parametrize(
    "aet_dataset, subset, expected",
    [
        ("data/aet_subsets/k=35_hours=90_strategy_correlated", None, (35, 90.0, "correlated")),
        ("data/aet_subsets/k=35/", None, (35, None, None)),
        ("data/aet_subsets/hours=22.5", None, (None, 22.5, None)),
        ("data/aet_subsets/T=11_strategy=uncorrelated", None, (None, 11.0, "uncorrelated")),
        ("data/aet_subsets/strategy_random", None, (None, None, "random")),
        ("data/my_k=5/other", None, (None, None, report.FULL_EVENT_SET)),  # only the folder's own name counts
        ("whatever", {"k": 2, "hours": 45, "strategy": "speech_music"}, (2, 45.0, "speech_music")),
        ("synthetic", None, (None, None, report.FULL_EVENT_SET)),  # a whole source: its own setting, not a wildcard
    ],
)
def test_event_factors_from_subset_record_or_folder_name(aet_dataset, subset, expected):
    results = {"alpha": 0.95, "config": {"aet_dataset": aet_dataset}, "final": {}, "data": {"aet_subset": subset} if subset else {}}
    run = report.run_from_results(results, "x")
    assert (run.k, run.hours, run.strategy) == expected


def test_single_factor_folder_skips_the_other_figures(tmp_path):
    for index, hours in enumerate((11, 22, 45, 11, 22, 45)):
        write_results(tmp_path / "runs", dict(sweep="hours", seed=index, alpha=0.95, k=115, hours=hours, strategy="random", mode=None,
                                              in_subset=True, asc=0.6 + 0.001 * hours + 0.001 * index, lwlrap=0.5, gradients=False), index)
    summary = report.write_report(report.load_runs(tmp_path / "runs"), tmp_path / "out")
    assert set(summary["figures"]) == {"hours"}
    assert set(summary["skipped"]) == {"alpha", "strategy", "k", "mode", "task_gradients"}
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["fig3b_hours.png", "summary.csv", "summary.json", "summary.md"]
    assert summary["pearson"]["k"]["r"] is None


def test_no_runs_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no runs"):
        report.write_report(report.load_runs(tmp_path), tmp_path / "out")
    with pytest.raises(ValueError, match="no such folder"):
        report.load_runs(tmp_path / "missing")


def test_wandb_project_without_login_fails_fast_and_clearly(tmp_path, monkeypatch, capsys):
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    with pytest.raises(RuntimeError, match="--wandb_project me/sceneevent: could not read runs from W&B"):
        report.load_wandb_runs("me/sceneevent", timeout=5)
