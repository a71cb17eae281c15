"""The mini reproduction's plan (every run, both worlds, paired seeds), its ground-truth ranking, and its verdicts
on fixture results with known differences (checked against scipy's paired t-test and Pearson r)."""

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import datasets
import numpy as np
import pytest
from scipy.stats import pearsonr, ttest_rel

from sceneevent.data import synthetic
from sceneevent.study import design, mini, mini_report
from sceneevent.training.results import RESULTS_SCHEMA_VERSION

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parent.parent
# The cpu scale at a fixed size and margin: the fixture studies below are sized for 8 pairs and a margin of 0.025,
# whatever the shipped design's seeds and margin are.
SCALE = replace(design.SCALES["cpu"], link_seeds=tuple(range(16)), equivalence_margin=0.025)


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
    # Per world: alpha 4 values and pre-train with `seeds`; correlated, uncorrelated and the A/A redraw with
    # `link_seeds`. The planted world adds T and k.
    grid, batch, budget = len(SCALE.grid_subsets()), len(SCALE.scene_batch_grid), SCALE.search_budget
    assert grid == 5  # k = 2, 10, 40 at 0.2 h and T = 0.1, 0.4 h at k = 40 (0.2 h shared)
    # The tuned control's two searches (one seed, `budget` runs each) in both worlds; the scene batch sizes, planted.
    assert len(first) == seeds * ((4 + 1) * 2 + grid + batch) + link_seeds * 3 * 2 + 2 * 2 * budget
    assert len(second) == seeds * 2
    assert mini.stage_one(tmp_path, SCALE, link_only=True) == mini.link_runs(tmp_path, SCALE)
    assert len(mini.link_runs(tmp_path, SCALE)) == link_seeds * 3 * 2 and mini.stage_two(tmp_path, SCALE, link_only=True) == []
    folders = [run.output_dir for run in first + second]
    assert len(set(folders)) == len(folders)
    # Every run's flags parse (the caches are prepared from them before any run starts), the pre-training runs' too.
    assert {mini.data_arguments(run).synthetic_event_informativeness for run in first + second} == set(design.WORLDS.values())
    for world, informativeness in design.WORLDS.items():
        runs = [run for run in first + second if run.output_dir.is_relative_to(tmp_path / world)]
        assert all(f"--synthetic_event_informativeness={informativeness}" in run.command for run in runs)
        by_setting = {}
        for run in runs:
            if run.output_dir.parent.name == "link":
                arm = next(arm for arm in design.LINK_ARMS if run.parameters["aet_dataset"]
                           == str(mini.subset_dir(tmp_path, SCALE.link_subset(arm, run.parameters["seed"]))))
                setting = ("link", arm)
            elif run.output_dir.parent.name.endswith("_search"):
                setting = ("search", run.output_dir.parent.name)
            else:
                setting = tuple(sorted((k, str(v)) for k, v in run.parameters.items() if k != "seed"))
            by_setting.setdefault(setting, set()).add(run.parameters["seed"])
        for setting, found in by_setting.items():  # every comparison is paired; the searches choose on a seed of their own
            expected = {"link": SCALE.link_seeds, "search": (SCALE.search_seed,)}.get(setting[0], SCALE.seeds)
            assert found == set(expected), setting
        assert sum(setting[0] == "link" for setting in by_setting) == 3
        assert SCALE.search_seed not in SCALE.seeds
        searches = [run for run in runs if run.output_dir.parent.name.endswith("_search")]
        assert sorted(run.parameters["alpha"] for run in searches if run.output_dir.parent.name == "alpha_search") == list(SCALE.alpha_search)
        scene_search = [run.parameters for run in searches if run.output_dir.parent.name == "control_search"]
        assert len(scene_search) == SCALE.search_budget and all(p["alpha"] == 0 for p in scene_search)
        assert len({p["dropout"] for p in scene_search}) == SCALE.search_budget  # distinct random draws
        # The batch sweep's own scene batch size is not overridden by the scale's.
        for run in runs:
            if run.output_dir.parent.name == "batch":
                assert [flag for flag in run.command if flag.startswith("--asc_batch_size=")] == [f"--asc_batch_size={run.parameters['asc_batch_size']}"]
    # The link seeds come in pairs (2p, 2p + 1): the odd seed runs with event roles swapped, on subsets ranked in
    # that world; both run in the pair's own scene world. The other experiments run in the default world 0.
    def flag(run, name):
        return next((part.split("=", 1)[1] for part in run.command if part.startswith(f"--{name}=")), None)

    for run in first + second:
        seed, link = run.parameters["seed"], run.output_dir.parent.name == "link"
        assert ("--synthetic_swap_event_roles=true" in run.command) == (link and seed % 2 == 1), run.output_dir
        assert flag(run, "synthetic_seed") == (str(1000 + seed // 2) if link else None)
        if link:
            assert run.parameters["aet_dataset"].endswith("_roles=swapped") == (seed % 2 == 1)
    # The draws: both seeds of a pair share them; the correlated and uncorrelated arms share one pool per pair
    # (so a class set is the same draw in both role assignments), the A/A redraw has its own; distinct between
    # pairs, and none equal to any training seed.
    draws = {(arm, seed): SCALE.link_subset(arm, seed).seed for arm in design.LINK_ARMS for seed in SCALE.link_seeds}
    for (arm, seed), draw in draws.items():
        assert draw == draws[(arm, seed ^ 1)] and (draw == draws[("correlated", seed)]) == (arm != "correlated, redrawn")
    assert len(set(draws.values())) == 2 * link_seeds // 2
    assert not set(draws.values()) & set(SCALE.link_seeds) and min(draws.values()) > max(SCALE.link_seeds)
    assert all(SCALE.link_subset(arm, 0).pool_clips == 2560 and "_pool=2560" in SCALE.link_subset(arm, 0).folder
               for arm in design.LINK_ARMS)
    # The balanced runs read the alpha = 0 and alpha = 1 runs of the first seed of their own world.
    planned = {str(folder) for folder in folders}
    for run in second:
        assert run.parameters["alpha"] == "auto"
        for key in ("asc_baseline", "aet_baseline"):
            assert run.parameters[key] in planned
            assert Path(run.parameters[key]).parent.parent == run.output_dir.parent.parent
    # Every run trains for the same number of epochs; pre-training + fine-tuning adds up to it (and is given only
    # its stages' epochs, which are what it trains).
    epochs = SCALE.pretrain_epochs + SCALE.finetune_epochs
    staged = [run for run in first if run.output_dir.parent.name == "pretrain"]
    assert staged and all(flag(run, "num_train_epochs") is None for run in staged)
    assert all(int(flag(run, "pretrain_epochs")) + int(flag(run, "finetune_epochs")) == epochs for run in staged)
    assert all(flag(run, "num_train_epochs") == str(epochs) for run in first + second if run not in staged)


@pytest.mark.parametrize("text, seeds", [("100-103", (100, 101, 102, 103)), ("0,1,4,5", (0, 1, 4, 5)), ("0-1,8,9", (0, 1, 8, 9))])
def test_link_seed_ranges(text, seeds):
    assert design.parse_seed_range(text) == seeds


@pytest.mark.parametrize("text, message", [("1-4", r"\[1, 4\] lack their partner"), ("0-x", "expected e.g. 100-115"),
                                           ("2", r"\[2\] lack")])
def test_link_seeds_that_do_not_form_pairs_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        design.parse_seed_range(text)


def write_fixture(folder: Path, seed: int, alpha, asc, lwlrap, subset: design.Subset | None = None, mode=None,
                  flags: dict | None = None, validation: float | None = None) -> None:
    """A results.json: `flags` (the run's other parameters) in its config, `validation` its one epoch's validation
    scene accuracy."""
    config = {"asc_batch_size": 16, **(flags or {}), "alpha": alpha, "seed": seed, "aet_dataset": "synthetic"}  # the cpu scale's batch
    data = {"event_labels": ["x"] * 40}
    if mode:
        config["mode"] = mode
    if subset is not None:
        config["aet_dataset"] = str(folder)
        data["aet_subset"] = {"k": subset.k, "hours": subset.hours, "strategy": subset.strategy, "seed": subset.seed}
    results = {"schema_version": RESULTS_SCHEMA_VERSION, "alpha": alpha, "seed": seed, "config": config, "data": data,
               "history": [] if validation is None else [{"epoch": 1, "val_asc_macro_accuracy": validation}],
               "final": {"asc_macro_accuracy": asc, "aet_lwlrap": lwlrap, "best_epoch": 1}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results))


def write_study(root: Path, link_effect: float, rng: np.random.Generator, unplanted_effect: float = 0.0) -> dict:
    """Fixture results for every planned run: correlated beats uncorrelated by `link_effect` in the planted world
    and by `unplanted_effect` in the unplanted one; the search runs' validation readings are random, and joint at
    the chosen alpha beats the tuned scene-only model by 0.02."""
    truth = {}
    planned = mini.stage_one(root, SCALE) + mini.stage_two(root, SCALE)
    for run in planned:
        if run.output_dir.parent.name.endswith("_search"):  # written first: stage three chooses from them
            write_fixture(run.output_dir, run.parameters["seed"], float(run.parameters["alpha"]), 0.5, None,
                          flags=run.parameters, validation=float(rng.uniform(0.4, 0.6)))
    for run in planned + mini.stage_three(root, SCALE):
        parameters, seed = run.parameters, run.parameters["seed"]
        if run.output_dir.parent.name.endswith("_search"):
            continue
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
        asc += 0.02 if run.output_dir.parent.name == "tuned_joint" else 0.0
        write_fixture(run.output_dir, seed, None if parameters.get("mode") else float(alpha), asc, lwlrap, subset,
                      mode=parameters.get("mode"), flags=parameters)
        truth[str(run.output_dir)] = asc
    return truth


def pair_means(values: dict[int, float]) -> list[float]:
    """Per pair (2p, 2p + 1), the mean of its two seeds' values, in pair order (by hand)."""
    return [(values[seed] + values[seed + 1]) / 2 for seed in sorted(values) if seed % 2 == 0]


def test_the_verdicts_find_a_planted_difference_with_scipys_numbers(tmp_path):
    truth = write_study(tmp_path, link_effect=0.05, rng=np.random.default_rng(2))
    groups = mini.world_groups(tmp_path, SCALE, "planted")
    claims = mini_report.world_claims("planted", groups, SCALE)
    link = claims[0]
    assert "correlated vs uncorrelated" in link.question

    def link_run(arm, seed):
        return truth[str(tmp_path / "planted" / "link" / f"aet_dataset={SCALE.link_subset(arm, seed).folder}_seed={seed}")]

    # The link rows read pairs: a pair's value is the mean of its two seeds' differences.
    ours = pair_means({seed: link_run("correlated", seed) for seed in SCALE.link_seeds})
    theirs = pair_means({seed: link_run("uncorrelated", seed) for seed in SCALE.link_seeds})
    assert link.comparison.n_pairs == 8
    assert link.comparison.difference.mean == pytest.approx(np.mean(np.subtract(ours, theirs)), abs=1e-12)
    assert link.comparison.t_test_p == pytest.approx(ttest_rel(ours, theirs).pvalue, rel=1e-9)
    assert link.as_expected and link.verdict == "correlated higher" and link.expected == "95 % CI above 0"
    aa = claims[1]
    assert aa.expected == "95 % CI inside ±0.025" and aa.as_expected and aa.verdict.startswith("equivalent within ±0.025")
    # The T trend: Pearson r over the 12 runs of the T grid, as scipy computes it.
    hours = next(claim for claim in claims if "against T" in claim.question)
    points = [(s.hours, truth[str(tmp_path / "planted" / "subsets" / f"aet_dataset={s.folder}_seed={seed}")])
              for s in (design.Subset(40, h, "random") for h in SCALE.hours_grid) for seed in SCALE.seeds]
    expected = pearsonr([p[0] for p in points], [p[1] for p in points])
    assert hours.correlation["n"] == 12
    assert hours.correlation["r"] == pytest.approx(expected.statistic, abs=1e-12)
    # lwlrap rises with alpha by construction.
    assert next(claim for claim in claims if "lwlrap against alpha" in claim.question).verdict == "rises"

    # The tuned control: each side's choice is its search's best validation reading, re-run on the study's seeds.
    selection = json.loads((tmp_path / "planted" / "tuned_control.json").read_text())
    searched = {name: [json.loads(path.read_text()) for path in (tmp_path / "planted" / name).rglob("results.json")]
                for name in ("control_search", "alpha_search")}
    best = {name: max(runs, key=lambda run: run["history"][0]["val_asc_macro_accuracy"]) for name, runs in searched.items()}
    assert selection["joint"]["alpha"] == best["alpha_search"]["alpha"]
    assert selection["scene_only"]["setting"]["dropout"] == pytest.approx(best["control_search"]["config"]["dropout"])
    assert selection["scene_only"]["budget"] == selection["joint"]["budget"] == SCALE.search_budget
    # Where the chosen alpha is one the alpha sweep ran, its runs are the tuned joint runs (none planned twice).
    alpha = selection["joint"]["alpha"]
    joint_folder = "alpha" if alpha in design.ALPHAS else "tuned_joint"
    assert (tmp_path / "planted" / "tuned_joint").exists() == (joint_folder == "tuned_joint")
    joint_runs = [truth[str(tmp_path / "planted" / joint_folder / (f"alpha={alpha}_seed={seed}" if joint_folder == "alpha"
                                                                    else f"seed={seed}"))] for seed in SCALE.seeds]
    scene_runs = [truth[str(tmp_path / "planted" / "tuned_scene_only" / f"seed={seed}")] for seed in SCALE.seeds]
    control = next(claim for claim in claims if claim.question.startswith("joint at the alpha chosen on validation"))
    assert control.comparison.n_pairs == len(SCALE.seeds)
    assert control.comparison.difference.mean == pytest.approx(np.mean(np.subtract(joint_runs, scene_runs)), abs=1e-12)
    assert control.comparison.t_test_p == pytest.approx(ttest_rel(joint_runs, scene_runs).pvalue, rel=1e-9)
    # The batch trend: Pearson r over the scene batch sizes' runs and alpha 0.9's (at the scale's 16), as scipy has it.
    batch = next(claim for claim in claims if "scene clips per batch" in claim.question)
    sizes = {**{size: "batch" for size in SCALE.scene_batch_grid}, 16: "alpha"}
    points = [(size, truth[str(tmp_path / "planted" / folder / (f"asc_batch_size={size}_seed={seed}" if folder == "batch"
                                                                 else f"alpha=0.9_seed={seed}"))])
              for size, folder in sizes.items() for seed in SCALE.seeds]
    assert batch.correlation["n"] == 12
    assert batch.correlation["r"] == pytest.approx(pearsonr(*zip(*points)).statistic, abs=1e-12)

    unplanted = mini_report.world_claims("unplanted", mini.world_groups(tmp_path, SCALE, "unplanted"), SCALE)
    assert not any("against T" in claim.question or "per batch" in claim.question for claim in unplanted)  # planted only
    assert any(claim.question.startswith("joint at the alpha chosen") for claim in unplanted)
    selections = {world: json.loads((tmp_path / world / "tuned_control.json").read_text()) for world in design.WORLDS}
    payload = mini_report.write_verdicts(claims + unplanted, {"planted": groups}, SCALE, tmp_path / "report",
                                         [{"minutes": 1.5, "runs": 3}, {"minutes": 2.0, "runs": 1}], tmp_path, selections)
    check = payload["instrument_check"]
    assert check["passed"] and check["margin"] == 0.025 and len(check["checks"]) == 4
    oc = check["operating_characteristics"]
    assert oc["n_pairs"] == 8 and oc["pass_if_unbiased"] > 0.9 and min(oc["fail_if_biased"].values()) > 0.97
    assert payload["wall_minutes"] == 3.5 and payload["link_seeds"] == list(SCALE.link_seeds)
    text = (tmp_path / "report" / "summary.md").read_text()
    assert "Wall time: 3.5 min in 2 invocations: 1.5 min (3 runs), 2.0 min (1 runs)" in text
    assert "Operating characteristics at 8 pairs" in text and "inside ±0.025" in text
    # A resumed study adds its time to the invocations this report recorded; another study's report does not count.
    assert mini.previous_invocations(tmp_path / "report", tmp_path) == payload["invocations"]
    assert mini.previous_invocations(tmp_path / "report", tmp_path / "elsewhere") == []
    assert "**passed**" in text and "| planted | correlated vs uncorrelated" in text
    assert f"- planted: scene only chose {selection['scene_only']['setting_text']}" in text
    assert f"joint chose alpha = {selection['joint']['alpha']:g}" in text and f"{SCALE.search_budget} runs on seed(s) [50]" in text
    assert (tmp_path / "report" / "verdicts.png").read_bytes().startswith(PNG_SIGNATURE)
    assert json.loads((tmp_path / "report" / "verdicts.json").read_text())["instrument_check"]["passed"]


def test_a_failed_search_run_leaves_its_world_without_a_control_and_the_study_goes_on(tmp_path, capsys):
    """A search run that failed (no results.json) makes that world's budgets unequal: its control is neither chosen
    nor run, the report says so, and the other world's control stands."""
    write_study(tmp_path, link_effect=0.05, rng=np.random.default_rng(3))
    failed = next((tmp_path / "unplanted" / "control_search").iterdir())
    (failed / "results.json").unlink()
    runs = mini.stage_three(tmp_path, SCALE)
    assert "unplanted: no tuned control: unequal budgets: 5 scene-only search run(s)" in capsys.readouterr().err
    assert runs and all(run.output_dir.is_relative_to(tmp_path / "planted") for run in runs)
    assert not (tmp_path / "unplanted" / "tuned_control.json").exists()
    assert (tmp_path / "planted" / "tuned_control.json").exists()
    selections = {"planted": json.loads((tmp_path / "planted" / "tuned_control.json").read_text()), "unplanted": None}
    lines = mini_report.control_lines(selections)
    assert "- unplanted: **no tuned control**: its searches did not all finish" in "\n".join(lines)
    assert sum(line.startswith("- planted: scene only chose") for line in lines) == 1


def check_of(root: Path) -> dict:
    claims = [claim for world in design.WORLDS
              for claim in mini_report.world_claims(world, mini.world_groups(root, SCALE, world), SCALE)]
    return mini_report.instrument_check(claims, SCALE.equivalence_margin)


def test_the_check_fails_when_the_planted_link_does_not_come_out(tmp_path):
    write_study(tmp_path, link_effect=0.0, rng=np.random.default_rng(4))
    check = check_of(tmp_path)
    assert not check["passed"]
    failed = [item for item in check["checks"] if not item["as_expected"]]
    assert [(item["world"], item["expected"]) for item in failed] == [("planted", "95 % CI above 0")]
    assert failed[0]["ci_low"] <= 0


def test_the_check_fails_when_a_difference_as_large_as_the_margin_comes_out_where_nothing_is_planted(tmp_path):
    write_study(tmp_path, link_effect=0.05, rng=np.random.default_rng(2), unplanted_effect=-0.03)
    check = check_of(tmp_path)
    failed = [item for item in check["checks"] if not item["as_expected"]]
    assert not check["passed"]
    assert [(item["world"], item["expected"]) for item in failed] == [("unplanted", "95 % CI inside ±0.025")]
    assert failed[0]["verdict"].startswith("not shown equivalent within ±0.025") and failed[0]["ci_low"] < -0.025


def test_a_significant_difference_well_inside_the_margin_passes_as_equivalent(tmp_path):
    # Equivalence, not significance: an unplanted difference of -0.012 with a tight CI is "significant" and yet
    # shows that the instrument invents nothing as large as the margin (this draw: -0.0126 [-0.0165, -0.0087]).
    write_study(tmp_path, link_effect=0.05, rng=np.random.default_rng(3), unplanted_effect=-0.012)
    check = check_of(tmp_path)
    unplanted = next(item for item in check["checks"] if item["world"] == "unplanted" and "correlated vs" in item["question"])
    assert unplanted["p"] < 0.05 and -0.025 < unplanted["ci_low"] < unplanted["ci_high"] < 0
    assert unplanted["as_expected"] and check["passed"]


def test_missing_runs_read_as_not_measured(tmp_path):
    claims = mini_report.world_claims("planted", {}, SCALE)
    assert claims[0].verdict.startswith("not measured")
    check = mini_report.instrument_check(claims, SCALE.equivalence_margin)
    assert not check["passed"] and check["operating_characteristics"] is None


def test_a_seed_without_its_pair_partner_is_left_out_and_named(tmp_path):
    write_study(tmp_path, link_effect=0.05, rng=np.random.default_rng(2))
    groups = mini.world_groups(tmp_path, SCALE, "planted")
    label = SCALE.arm_label("uncorrelated")
    groups[label] = [run for run in groups[label] if run.seed != 5]
    link = mini_report.world_claims("planted", groups, SCALE)[0]
    assert link.comparison.n_pairs == 7 and "seeds without their pair partner left out: [4]" in link.comparison.notes


def test_link_only_runs_the_check_end_to_end_on_the_given_seeds(tmp_path):
    """`reproduce_mini.py --link_only --link_seeds 0-1` at the smoke scale: 12 real runs (both worlds, three arms,
    one pair), each in its pair's world and role assignment, and the check written; one pair gives no CI, so
    the check cannot pass and the exit code says so."""
    report = tmp_path / "report"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "reproduce_mini.py"), "--scale", "smoke", "--link_only",
                             "--link_seeds", "0-1", "--output_root", str(tmp_path / "runs"), "--report_dir", str(report)],
                            capture_output=True, text=True, cwd=ROOT, timeout=900,
                            env={**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 1, result.stderr[-3000:]
    assert "instrument check FAILED" in result.stdout
    results = list((tmp_path / "runs").rglob("results.json"))
    assert len(results) == 12 and not list((tmp_path / "runs").glob("planted/alpha"))  # only the link runs
    smoke = design.SCALES["smoke"]
    for world in design.WORLDS:
        for seed in (0, 1):
            for arm in design.LINK_ARMS:
                run = json.loads((tmp_path / "runs" / world / "link" / f"aet_dataset={smoke.link_subset(arm, seed).folder}_seed={seed}"
                                  / "results.json").read_text())
                # The run's scene world and event draw are recorded, as the design says.
                assert run["seed"] == seed and run["config"]["synthetic_seed"] == 1000
                assert run["config"]["synthetic_swap_event_roles"] == (seed == 1)
                assert run["data"]["aet_subset"]["seed"] == design.draw_seed(arm, seed)
    # Unplanted, the pair's two seeds train on the same clips with the arms' roles exchanged: seed 0's
    # uncorrelated set is seed 1's correlated set, clip for clip and label for label (by class name).
    def clips(arm, seed):
        train = datasets.load_from_disk(str(mini.subset_dir(tmp_path / "runs", smoke.link_subset(arm, seed))))["train"]
        names = train.features["events"].feature.names
        audio = train.cast_column("audio", datasets.Audio(decode=False))["audio"]
        return [hashlib.sha256(clip["bytes"]).hexdigest() for clip in audio], [sorted(names[i] for i in events) for events in train["events"]]

    for arm, partner in (("uncorrelated", "correlated"), ("correlated", "uncorrelated")):
        assert clips(arm, 0) == clips(partner, 1) and clips(arm, 0) != clips("correlated, redrawn", 0)
    verdicts = json.loads((report / "verdicts.json").read_text())
    assert verdicts["link_seeds"] == [0, 1] and not verdicts["instrument_check"]["passed"]
    assert [item["n_pairs"] for item in verdicts["instrument_check"]["checks"]] == [1, 1, 1, 1]
    assert "Link seeds: 0, 1" in (report / "summary.md").read_text()
    assert not (report / "planted").exists()  # no per-world figures: --link_only writes the check alone
