"""The mini reproduction's plan (every run, both worlds, paired seeds), its ground-truth ranking, and its verdicts
on fixture results with known differences (checked against scipy's paired t-test and Pearson r)."""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr, ttest_rel

from sceneevent.data import synthetic
from sceneevent.study import design, mini, mini_report
from sceneevent.training.results import RESULTS_SCHEMA_VERSION

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SCALE = design.SCALES["cpu"]


def test_the_ground_truth_ranking_orders_classes_by_how_often_scenes_plant_them():
    # By hand from the scene tables: each scene's weights normalised, averaged over the ten scenes.
    share = {name: 0.0 for name in synthetic.EVENT_NAMES}
    for table in synthetic.SCENE_EVENTS.values():
        for name, weight in table.items():
            share[name] += weight / sum(table.values()) / len(synthetic.SCENE_EVENTS)
    ranking = synthetic.ground_truth_ranking()
    assert sorted(ranking) == sorted(synthetic.EVENT_NAMES)
    assert [share[name] for name in ranking] == sorted(share.values(), reverse=True)
    # The top ten are the scenes' main events, one per scene: a correlated subset at k = 10 covers every scene.
    assert set(ranking[:10]) == {max(table, key=table.get) for table in synthetic.SCENE_EVENTS.values()}
    assert set(ranking[-20:]) == set(synthetic.UNCORRELATED_EVENTS)  # the never-planted classes come last
    # The bottom ten are the top ten's counterparts, the most planted class's last; swapping the roles swaps the ends.
    assert ranking[-10:] == [synthetic.COUNTERPARTS[name] for name in reversed(ranking[:10])]
    swapped = synthetic.ground_truth_ranking(swap_event_roles=True)
    assert set(swapped[:10]) == set(ranking[-10:]) and set(swapped[-10:]) == set(ranking[:10])
    # The mean planted share over scenes is the tables' share plus one uniform rate: below informativeness 1 every
    # class also occurs, alike, so the ranking (by the tables) does not depend on the knob.
    for informativeness in (0.0, 0.5, 1.0):
        mean = {name: np.mean([synthetic.planted_event_probabilities(scene, informativeness)[name]
                               for scene in synthetic.SCENES]) for name in synthetic.EVENT_NAMES}
        assert [mean[name] for name in ranking] == pytest.approx(
            [informativeness * share[name] + (1 - informativeness) / 40 for name in ranking], abs=1e-12)


def test_the_plan_runs_every_setting_with_the_same_seeds_in_both_worlds(tmp_path):
    first, second = mini.stage_one(tmp_path, SCALE), mini.stage_two(tmp_path, SCALE)
    seeds, link_seeds = len(SCALE.seeds), len(SCALE.link_seeds)
    assert set(SCALE.seeds) <= set(SCALE.link_seeds)  # the link runs pair with the scene-only runs too
    # Per world: alpha 4 values and pre-train with `seeds`; correlated, uncorrelated and the A/A redraw with
    # `link_seeds`. The planted world adds T and k.
    grid = len(SCALE.grid_subsets())
    assert grid == 5  # k = 2, 10, 40 at 0.2 h and T = 0.1, 0.4 h at k = 40 (0.2 h shared)
    assert len(first) == seeds * ((4 + 1) * 2 + grid) + link_seeds * 3 * 2
    assert len(second) == seeds * 2
    folders = [run.output_dir for run in first + second]
    assert len(set(folders)) == len(folders)
    for world, informativeness in design.WORLDS.items():
        runs = [run for run in first + second if run.output_dir.is_relative_to(tmp_path / world)]
        assert all(f"--synthetic_event_informativeness={informativeness}" in run.command for run in runs)
        by_setting = {}
        for run in runs:
            if run.output_dir.parent.name == "link":  # run s of an arm trains on that arm's own draw s
                arm = next(arm for arm in design.LINK_ARMS if run.parameters["aet_dataset"]
                           == str(mini.subset_dir(tmp_path, SCALE.link_subset(arm, run.parameters["seed"]))))
                setting = ("link", arm)
            else:
                setting = tuple(sorted((k, str(v)) for k, v in run.parameters.items() if k != "seed"))
            by_setting.setdefault(setting, set()).add(run.parameters["seed"])
        for setting, found in by_setting.items():  # every comparison is paired
            assert found == set(SCALE.link_seeds if setting[0] == "link" else SCALE.seeds), setting
        assert sum(setting[0] == "link" for setting in by_setting) == 3
    # Odd seeds of the link arms run in the world with event roles swapped, on subsets ranked in that world; the
    # other experiments all run in the default world.
    for run in first:
        seed, link = run.parameters["seed"], run.output_dir.parent.name == "link"
        assert ("--synthetic_swap_event_roles=true" in run.command) == (link and seed % 2 == 1), run.output_dir
        if link:
            assert run.parameters["aet_dataset"].endswith("_roles=swapped") == (seed % 2 == 1)
    # The arms' draws: correlated and uncorrelated share each seed's generated event set; the A/A arm does not.
    draws = {arm: {SCALE.link_subset(arm, seed).seed for seed in SCALE.link_seeds} for arm in design.LINK_ARMS}
    assert draws["correlated"] == draws["uncorrelated"] == set(SCALE.link_seeds)
    assert not draws["correlated"] & draws["correlated, redrawn"]
    # The balanced runs read the alpha = 0 and alpha = 1 runs of the first seed of their own world.
    planned = {str(folder) for folder in folders}
    for run in second:
        assert run.parameters["alpha"] == "auto"
        for key in ("asc_baseline", "aet_baseline"):
            assert run.parameters[key] in planned
            assert Path(run.parameters[key]).parent.parent == run.output_dir.parent.parent
    # Every run trains for the same number of epochs; pre-training + fine-tuning adds up to it.
    epochs = SCALE.pretrain_epochs + SCALE.finetune_epochs
    assert all(f"--num_train_epochs={epochs}" in run.command for run in first + second)


def write_fixture(folder: Path, seed: int, alpha, asc, lwlrap, subset: design.Subset | None = None, mode=None) -> None:
    config = {"alpha": alpha, "seed": seed, "aet_dataset": "synthetic"}
    data = {"event_labels": ["x"] * 40}
    if mode:
        config["mode"] = mode
    if subset is not None:
        config["aet_dataset"] = str(folder)
        data["aet_subset"] = {"k": subset.k, "hours": subset.hours, "strategy": subset.strategy, "seed": subset.seed}
    results = {"schema_version": RESULTS_SCHEMA_VERSION, "alpha": alpha, "seed": seed, "config": config, "data": data,
               "final": {"asc_macro_accuracy": asc, "aet_lwlrap": lwlrap, "best_epoch": 1}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results))


def write_study(root: Path, link_effect: float, rng: np.random.Generator, unplanted_effect: float = 0.0) -> dict:
    """Fixture results for every planned run: correlated beats uncorrelated by `link_effect` in the planted world
    and by `unplanted_effect` in the unplanted one."""
    truth = {}
    for run in mini.stage_one(root, SCALE) + mini.stage_two(root, SCALE):
        parameters, seed = run.parameters, run.parameters["seed"]
        world = run.output_dir.relative_to(root).parts[0]
        subset = next((s for s in SCALE.subsets() if parameters.get("aet_dataset", "").endswith("/" + s.folder)), None)
        alpha = {"auto": 0.93}.get(parameters.get("alpha"), parameters.get("alpha"))
        asc = 0.6 + 0.02 * seed + float(rng.normal(0, 0.01))
        if subset is not None and subset.strategy == "correlated":
            asc += link_effect if world == "planted" else unplanted_effect
        if subset is not None and subset.strategy == "random":
            asc += 0.001 * subset.k + 0.01 * subset.hours
        lwlrap = None if alpha == 0.0 else 0.5 + 0.3 * float(alpha or 1.0) + float(rng.normal(0, 0.01))
        if alpha == 1.0:
            asc = 0.1
        write_fixture(run.output_dir, seed, None if parameters.get("mode") else float(alpha), asc, lwlrap, subset,
                      mode=parameters.get("mode"))
        truth[str(run.output_dir)] = asc
    return truth


def test_the_verdicts_find_a_planted_difference_with_scipys_numbers(tmp_path):
    # The fixture's noise is independent per run, so a null row falls below p = 0.05 in 5 % of draws; this
    # draw is fixed (its A/A p-values: 0.51 planted, 0.11 unplanted; unplanted correlated vs uncorrelated 0.99).
    truth = write_study(tmp_path, link_effect=0.05, rng=np.random.default_rng(2))
    groups = mini.world_groups(tmp_path, SCALE, "planted")
    claims = mini_report.world_claims("planted", groups, SCALE)
    link = claims[0]
    assert "correlated vs uncorrelated" in link.question
    def link_run(arm, seed):
        return truth[str(tmp_path / "planted" / "link" / f"aet_dataset={SCALE.link_subset(arm, seed).folder}_seed={seed}")]

    ours = [link_run("correlated", seed) for seed in SCALE.link_seeds]
    theirs = [link_run("uncorrelated", seed) for seed in SCALE.link_seeds]
    assert link.comparison.n_pairs == 8
    assert link.comparison.difference.mean == pytest.approx(np.mean(np.subtract(ours, theirs)), abs=1e-12)
    assert link.comparison.t_test_p == pytest.approx(ttest_rel(ours, theirs).pvalue, rel=1e-9)
    assert link.as_expected and link.verdict == "correlated higher"
    # The T trend: Pearson r over the 12 runs of the T grid, as scipy computes it.
    hours = next(claim for claim in claims if "against T" in claim.question)
    points = [(s.hours, truth[str(tmp_path / "planted" / "subsets" / f"aet_dataset={s.folder}_seed={seed}")])
              for s in (design.Subset(40, h, "random") for h in SCALE.hours_grid) for seed in SCALE.seeds]
    expected = pearsonr([p[0] for p in points], [p[1] for p in points])
    assert hours.correlation["n"] == 12
    assert hours.correlation["r"] == pytest.approx(expected.statistic, abs=1e-12)
    # lwlrap rises with alpha by construction.
    assert next(claim for claim in claims if "lwlrap against alpha" in claim.question).verdict == "rises"

    unplanted = mini_report.world_claims("unplanted", mini.world_groups(tmp_path, SCALE, "unplanted"), SCALE)
    assert not any("against T" in claim.question for claim in unplanted)  # the grids run in the planted world only
    payload = mini_report.write_verdicts(claims + unplanted, {"planted": groups}, SCALE, tmp_path / "report",
                                         [{"minutes": 1.5, "runs": 3}, {"minutes": 2.0, "runs": 1}], tmp_path)
    assert payload["instrument_check"]["passed"]
    assert payload["wall_minutes"] == 3.5
    text = (tmp_path / "report" / "summary.md").read_text()
    assert "Wall time: 3.5 min in 2 invocations: 1.5 min (3 runs), 2.0 min (1 runs)" in text
    # A resumed study adds its time to the invocations this report recorded; another study's report does not count.
    assert mini.previous_invocations(tmp_path / "report", tmp_path) == payload["invocations"]
    assert mini.previous_invocations(tmp_path / "report", tmp_path / "elsewhere") == []
    assert "**passed**" in text and "| planted | correlated vs uncorrelated" in text
    assert (tmp_path / "report" / "verdicts.png").read_bytes().startswith(PNG_SIGNATURE)
    assert json.loads((tmp_path / "report" / "verdicts.json").read_text())["instrument_check"]["passed"]


def test_the_check_fails_when_the_planted_link_does_not_come_out(tmp_path):
    # No link: correlated and uncorrelated differ by noise only (this draw: p = 0.77; a draw may fall below 0.05
    # by chance, which is the test's 5 % false-positive rate, so the draw is fixed).
    write_study(tmp_path, link_effect=0.0, rng=np.random.default_rng(4))
    claims = [claim for world in design.WORLDS
              for claim in mini_report.world_claims(world, mini.world_groups(tmp_path, SCALE, world), SCALE)]
    check = mini_report.instrument_check(claims)
    assert not check["passed"]
    failed = [item for item in check["checks"] if not item["as_expected"]]
    assert [(item["world"], item["expected"], item["verdict"]) for item in failed] == [
        ("planted", "correlated higher, p < 0.05", "no significant difference")]
    assert failed[0]["p"] == pytest.approx(0.7705, abs=1e-4)


def test_the_check_fails_when_a_difference_comes_out_where_nothing_is_planted(tmp_path):
    write_study(tmp_path, link_effect=0.05, rng=np.random.default_rng(2), unplanted_effect=-0.03)
    claims = [claim for world in design.WORLDS
              for claim in mini_report.world_claims(world, mini.world_groups(tmp_path, SCALE, world), SCALE)]
    check = mini_report.instrument_check(claims)
    failed = [item for item in check["checks"] if not item["as_expected"]]
    assert not check["passed"]
    assert [(item["world"], item["expected"], item["verdict"]) for item in failed] == [
        ("unplanted", "no significant difference", "correlated lower")]


def test_missing_runs_read_as_not_measured(tmp_path):
    claims = mini_report.world_claims("planted", {}, SCALE)
    assert claims[0].verdict.startswith("not measured")
    assert not mini_report.instrument_check(claims)["passed"]
