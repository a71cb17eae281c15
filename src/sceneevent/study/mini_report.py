"""The verdicts of the mini reproduction (`design`, `mini`): each claim as a paired comparison over seeds or a
Pearson correlation over runs, the instrument check (does the planted link come out, and only where it is
planted?), and their table, figure and JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..io_utils import atomic_write_json, atomic_write_text
from .design import ALPHAS, JOINT_ALPHA, WORLDS, Scale, Subset, pair_of, swapped_roles
from .equivalence import Kind, OperatingCharacteristics, Row, expectation_text, operating_characteristics, pairs_needed, row_passes
from .figures import pyplot, save_figure
from .report import to_plain
from .run_readings import RunReading
from .seed_statistics import SIGNIFICANCE, PairedComparison, compare_paired, describe, pearson


# The tuned control's groups (`mini.stage_three`) and the batch composition's, as `mini.world_groups` names them.
TUNED_SCENE_ONLY = "scene only, regularisation tuned on validation"
TUNED_JOINT = "joint, alpha tuned on validation"


def batch_label(scene_clips: int) -> str:
    return f"{scene_clips} scene clips per batch, alpha = {JOINT_ALPHA:g}"


@dataclass
class Claim:
    """One reading: a paired comparison over seeds, or a Pearson correlation over runs."""

    world: str
    question: str
    comparison: PairedComparison | None = None
    correlation: dict | None = None  # {"r", "p", "n"}
    verdict: str = ""
    expected: str | None = None  # what the world's ground truth says must come out (the instrument check)
    as_expected: bool | None = None
    check_kind: Kind | None = None  # "effect" or "null" for a row of the instrument check


def paired_claim(world: str, question: str, setting: list[RunReading], reference: list[RunReading], metric: str,
                 setting_name: str, reference_name: str) -> Claim:
    comparison = compare_paired(setting, reference, metric, setting_name, reference_name)
    claim = Claim(world=world, question=question, comparison=comparison)
    mean, p = comparison.difference.mean, comparison.t_test_p
    if mean is None or p is None:
        claim.verdict = "not measured (" + "; ".join(comparison.notes) + ")"
    elif p < SIGNIFICANCE:
        claim.verdict = f"{setting_name} {'higher' if mean > 0 else 'lower'}"
    else:
        claim.verdict = "no significant difference"
    return claim


def correlation_claim(world: str, question: str, runs: list[RunReading], factor: str, metric: str) -> Claim:
    """Pearson r of `metric` with `factor` over the runs (`seed_statistics.pearson`)."""
    correlation = pearson(runs, factor, metric)
    claim = Claim(world=world, question=question, correlation=correlation)
    r, p = correlation["r"], correlation["p"]
    if r is None:
        claim.verdict = f"not measured ({correlation['note']})"
    else:
        claim.verdict = ("rises" if r > 0 else "falls") if p < SIGNIFICANCE else "no significant trend"
    return claim


def paired_by_pair(world: str, question: str, setting: list[RunReading], reference: list[RunReading],
                   setting_name: str, reference_name: str) -> Claim:
    """A link row read over pairs of seeds (`design.pair_of`): a pair's value is the mean of its two seeds'
    differences, so each pair has one seed in each role assignment. Only pairs complete in both groups count."""
    seeds = {run.seed for run in setting} & {run.seed for run in reference}
    complete = {seed for seed in seeds if seed is not None and seed ^ 1 in seeds}

    def as_pairs(runs: list[RunReading]) -> list[RunReading]:
        return [replace(run, seed=pair_of(run.seed)) for run in runs if run.seed in complete]

    claim = paired_claim(world, question, as_pairs(setting), as_pairs(reference), "asc_macro_accuracy", setting_name, reference_name)
    if seeds - complete:
        claim.comparison.notes.append(f"seeds without their pair partner left out: {sorted(seeds - complete)}")
    return claim


def link_claims(world: str, groups: dict[str, list[RunReading]], scale: Scale) -> list[Claim]:
    """The correlated / uncorrelated / A/A rows of one world; the first two are rows of the instrument check."""
    def get(name: str) -> list[RunReading]:
        return groups.get(name, [])  # a missing group reads as "not measured"

    correlated, uncorrelated, redrawn = (scale.arm_label(arm) for arm in ("correlated", "uncorrelated", "correlated, redrawn"))
    claims = [
        paired_by_pair(world, f"correlated vs uncorrelated event classes (k = {scale.strategy_k}, T = {scale.subset_hours:g} h, "
                       f"alpha = {JOINT_ALPHA:g}), scene accuracy, by pair", get(correlated), get(uncorrelated),
                       "correlated", "uncorrelated"),
        paired_by_pair(world, "A/A null control: correlated vs correlated drawn again, scene accuracy, by pair",
                       get(redrawn), get(correlated), "second draw", "first draw"),
        # Within each role assignment (by seed): how the two class sets' sounds act is the difference between these
        # two, which the pairs cancel in the first row.
        *(paired_claim(world, f"correlated vs uncorrelated, {roles} seeds only, scene accuracy",
                       [run for run in get(correlated) if swapped_roles(run.seed) == swapped],
                       [run for run in get(uncorrelated) if swapped_roles(run.seed) == swapped],
                       "asc_macro_accuracy", "correlated", "uncorrelated")
          for swapped, roles in ((False, "default-role (even)"), (True, "swapped-role (odd)"))),
    ]
    # The planted link must be found, and nothing as large as the margin invented: not between the class sets where
    # nothing is planted, not between two draws of one set in either world.
    expect(claims[0], "effect" if WORLDS[world] > 0 else "null", scale.equivalence_margin)
    expect(claims[1], "null", scale.equivalence_margin)
    return claims


def world_claims(world: str, groups: dict[str, list[RunReading]], scale: Scale) -> list[Claim]:
    """The verdicts of one world, in the order of the table; the first two are rows of the instrument check."""
    def get(name: str) -> list[RunReading]:
        return groups.get(name, [])

    joint = f"alpha={JOINT_ALPHA:g}"
    claims = [
        *link_claims(world, groups, scale),
        # (No row sets the link runs against scene only: they run in their pairs' own worlds.)
        paired_claim(world, "balanced alpha (eq. 3) vs scene only, scene accuracy", get("balanced"), get("alpha=0"),
                     "asc_macro_accuracy", "balanced alpha", "scene only"),
        paired_claim(world, f"joint at alpha = {JOINT_ALPHA:g} vs scene only, scene accuracy", get(joint), get("alpha=0"),
                     "asc_macro_accuracy", f"alpha {JOINT_ALPHA:g}", "scene only"),
        paired_claim(world, f"pre-train on events + fine-tune vs joint (alpha = {JOINT_ALPHA:g}), scene accuracy",
                     get("pretrain"), get(joint), "asc_macro_accuracy", "pre-train + fine-tune", "joint"),
        paired_claim(world, "balanced alpha vs events only, event lwlrap", get("balanced"), get("alpha=1"),
                     "aet_lwlrap", "balanced alpha", "events only"),
    ]
    budget = scale.search_budget
    claims += [
        paired_claim(world, f"joint at the alpha chosen on validation vs scene only with its regularisation chosen on "
                     f"validation ({budget} search runs each), scene accuracy", get(TUNED_JOINT), get(TUNED_SCENE_ONLY),
                     "asc_macro_accuracy", "joint, tuned alpha", "scene only, tuned"),
        paired_claim(world, "scene only: regularisation chosen on validation vs the defaults, scene accuracy",
                     get(TUNED_SCENE_ONLY), get("alpha=0"), "asc_macro_accuracy", "tuned", "defaults"),
    ]

    def runs_of(names) -> list[RunReading]:
        return [run for name in names for run in get(name)]

    weighted = [f"alpha={alpha:g}" for alpha in ALPHAS] + ["balanced"]
    claims.append(correlation_claim(world, "event lwlrap against alpha (0 < alpha <= 1)",
                                    runs_of(n for n in weighted if n != "alpha=0"), "alpha", "aet_lwlrap"))
    claims.append(correlation_claim(world, "scene accuracy against alpha (0 <= alpha < 1)",
                                    runs_of(n for n in weighted if n != "alpha=1"), "alpha", "asc_macro_accuracy"))
    hours_runs = runs_of(Subset(40, hours, "random").label for hours in scale.hours_grid)
    k_runs = runs_of(Subset(k, scale.subset_hours, strategy).label for k, strategy in scale.k_grid)
    if hours_runs:
        claims.append(correlation_claim(world, f"scene accuracy against T (k = 40, random classes, alpha = {JOINT_ALPHA:g})",
                                        hours_runs, "hours", "asc_macro_accuracy"))
    batch_runs = runs_of(batch_label(size) for size in scale.scene_batch_grid)
    if batch_runs:
        claims.append(correlation_claim(world, f"scene accuracy against scene clips per batch (events per batch fixed, "
                                        f"alpha = {JOINT_ALPHA:g})", batch_runs + get(joint), "asc_batch_size", "asc_macro_accuracy"))
    if k_runs:
        claims.append(correlation_claim(world, f"scene accuracy against k (T = {scale.subset_hours:g} h, alpha = {JOINT_ALPHA:g})",
                                        k_runs, "k", "asc_macro_accuracy"))
    return claims


def expect(claim: Claim, kind: Kind, margin: float) -> None:
    """Mark the claim as a row of the instrument check: what the world's construction says must come out
    (`equivalence.row_passes`) and whether it did."""
    d = claim.comparison.difference
    claim.check_kind, claim.expected = kind, expectation_text(kind, margin)
    claim.as_expected = row_passes(kind, d.ci_low, d.ci_high, margin)
    if d.ci_low is not None and kind == "null":
        claim.verdict = (f"equivalent within ±{margin:g}" if claim.as_expected
                         else f"not shown equivalent within ±{margin:g}") + f" ({claim.verdict})"


# --- writing ----------------------------------------------------------------------------------------------


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.3f}"


def _p(value: float | None) -> str:
    return "–" if value is None else (f"{value:.2g}" if value >= 1e-4 else f"{value:.1e}")


def claim_row(claim: Claim) -> str:
    if claim.comparison is not None:
        c = claim.comparison
        d = c.difference
        ci = f"[{_signed(d.ci_low)}, {_signed(d.ci_high)}]" if d.ci_low is not None else ""
        detectable = "–" if c.detectable_difference is None else f"{c.detectable_difference:.3f}"
        reading = f"{_signed(d.mean)} {ci}"
        return f"| {claim.world} | {claim.question} | {c.n_pairs} | {reading} | {_p(c.t_test_p)} | {detectable} | {claim.verdict} |"
    r = claim.correlation or {}
    reading = "–" if r.get("r") is None else f"r = {r['r']:+.2f}"
    return f"| {claim.world} | {claim.question} | {r.get('n', 0)} runs | {reading} | {_p(r.get('p'))} | – | {claim.verdict} |"


def instrument_check(claims: list[Claim], margin: float) -> dict:
    """Whether every row of the check held, each row's reading, and the check's operating characteristics
    from the spread measured here (`equivalence.operating_characteristics`)."""
    checked = [claim for claim in claims if claim.expected is not None]
    rows = [{"world": claim.world, "question": claim.question, "kind": claim.check_kind, "expected": claim.expected,
             "as_expected": claim.as_expected, "verdict": claim.verdict, "n_pairs": claim.comparison.n_pairs,
             "p": claim.comparison.t_test_p, "difference": claim.comparison.difference.mean,
             "ci_low": claim.comparison.difference.ci_low, "ci_high": claim.comparison.difference.ci_high,
             "sd": claim.comparison.difference.sd} for claim in checked]
    characteristics = check_characteristics(rows, margin)
    return {"passed": bool(checked) and all(claim.as_expected for claim in checked), "margin": margin, "checks": rows,
            "operating_characteristics": asdict(characteristics) if characteristics else None,
            # the pairs with which an unbiased instrument with these sds would pass 9 times in 10
            "pairs_for_pass_rate_0.9": pairs_needed(characteristics.rows, margin) if characteristics else None}


def check_characteristics(rows: list[dict], margin: float) -> OperatingCharacteristics | None:
    """The check's pass rate without bias and failure rates with a bias of the margin, at this design's pairs and
    the sds measured here (None until every row has an sd)."""
    if not rows or any(row["sd"] is None for row in rows):
        return None
    simulated = [Row(f"{row['world']}: {row['question']}", row["kind"], row["difference"], row["sd"]) for row in rows]
    return operating_characteristics(simulated, min(row["n_pairs"] for row in rows), margin)


def check_lines(check: dict) -> list[str]:
    """The instrument check in Markdown: verdict, each row's CI against its rule, the operating characteristics."""
    lines = [f"**{'passed' if check['passed'] else 'FAILED'}**. What the worlds' construction says must come out "
             f"(differences by pair of seeds, mean [95 % CI]; a null row passes only inside ±{check['margin']:g}, "
             "an effect row only above 0):", ""]
    for item in check["checks"]:
        ci = "–" if item["ci_low"] is None else f"[{_signed(item['ci_low'])}, {_signed(item['ci_high'])}]"
        lines.append(f"- {item['world']}, {item['question']}: expected {item['expected']}; got {_signed(item['difference'])} "
                     f"{ci}, n = {item['n_pairs']} pairs, p = {_p(item['p'])} {'✓' if item['as_expected'] else '✗'}")
    oc = check["operating_characteristics"]
    if oc:
        worst = min(oc["fail_if_biased"].values()) if oc["fail_if_biased"] else None
        lines += ["", f"Operating characteristics at {oc['n_pairs']} pairs, from the sds measured here ({oc['trials']:,} "
                  "simulated studies, rows independent, normal pair differences): an instrument with no bias (effect "
                  f"rows at their measured means) passes with probability **{oc['pass_if_unbiased']:.2f}**"
                  + (f"; one with a bias of ±{oc['margin']:g} in a null row fails with probability at least **{worst:.3f}**."
                     if worst is not None else ".")]
        needed = check["pairs_for_pass_rate_0.9"]
        lines += ["", "At these sds an unbiased instrument passes 9 times in 10 with "
                  + (f"**{needed} pairs** ({2 * needed} seeds)." if needed else "more than 200 pairs.")]
    return lines


def wall_time_text(invocations: list[dict]) -> str:
    if not invocations:
        return "Wall time: not recorded."
    total = sum(item["minutes"] for item in invocations)
    if len(invocations) == 1:
        return f"Wall time: {total:.1f} min."
    parts = ", ".join(f"{item['minutes']:.1f} min" + (f" ({item['runs']} runs)" if item.get("runs") else "") for item in invocations)
    return f"Wall time: {total:.1f} min in {len(invocations)} invocations: {parts}."


def control_lines(selections: dict[str, dict | None]) -> list[str]:
    """What each world's tuned control chose on validation, and the budget each side's search had (None: no choice,
    its searches did not all finish)."""
    if not selections:
        return []
    lines = ["## The tuned control", "",
             "Each side searched on the validation split of one seed that no comparison uses, with the same number of runs; "
             "the choices were re-run on the study's seeds and compared on test (the verdicts below).", ""]
    for world, selection in selections.items():
        if selection is None:
            lines.append(f"- {world}: **no tuned control**: its searches did not all finish (a run failed; "
                         "reproduce_mini.py lists the failed runs).")
            continue
        scene, joint = selection["scene_only"], selection["joint"]
        lines.append(f"- {world}: scene only chose {scene['setting_text']} (validation scene accuracy "
                     f"{scene['validation_asc_macro_accuracy']:.3f}, {scene['budget']} runs on seed(s) {scene['search_seeds']}); "
                     f"joint chose alpha = {joint['alpha']:g} ({joint['validation_asc_macro_accuracy']:.3f}, {joint['budget']} runs "
                     f"on seed(s) {joint['search_seeds']})" + ("" if selection["budgets_equal"] else "; **the budgets differ**") + ".")
    return [*lines, ""]


def to_markdown(claims: list[Claim], groups: dict[str, dict[str, list[RunReading]]], scale: Scale, invocations: list[dict],
                check: dict, selections: dict[str, dict] | None = None) -> str:
    lines = [
        "# Mini reproduction: verdicts",
        "",
        f"Scale: {scale.description}. Worlds: " + ", ".join(f"{w} (event_informativeness {v:g})" for w, v in WORLDS.items())
        + ". " + wall_time_text(invocations),
        "",
        "## Instrument check",
        "",
        f"Link seeds: {', '.join(str(seed) for seed in scale.link_seeds)} (pairs 2p, 2p + 1: default and swapped "
        "roles; each pair its own scene world, one event pool for the correlated and uncorrelated arms and one for the "
        "A/A redraw).",
        "",
        *check_lines(check),
        "",
        *control_lines(selections or {}),
        "## Verdicts",
        "",
        "Paired rows: difference setting − reference over the seeds both have, mean [95 % t CI], two-sided paired t-test p, "
        "and the smallest difference this design detects with power 0.8. Trend rows: Pearson r over the individual runs.",
        "",
        "| world | claim | n | difference [95 % CI] or r | p | smallest detectable difference | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *(claim_row(claim) for claim in claims),
        "",
        "## Settings (test metrics, mean [95 % CI], n)",
        "",
        "The selected epoch (argmax of the validation metric) of every run, as median (range) over seeds: well before "
        "the last epoch means the run had stopped improving.",
        "",
        "| world | setting | scene macro accuracy | event lwlrap | selected epoch |",
        "| --- | --- | --- | --- | --- |",
    ]
    for world, world_groups in groups.items():
        for name, runs in world_groups.items():
            cells = []
            for metric in ("asc_macro_accuracy", "aet_lwlrap"):
                s = describe(getattr(run, metric) for run in runs)
                cells.append("–" if s.mean is None else f"{s.mean:.3f}" + (f" [{s.ci_low:.3f}, {s.ci_high:.3f}]" if s.ci_low is not None else "")
                             + f" ({s.n})")
            epochs = [run.best_epoch for run in runs if run.best_epoch is not None]
            cells.append(f"{np.median(epochs):g} ({min(epochs)}–{max(epochs)})" if epochs else "–")
            alphas = sorted({run.alpha for run in runs if run.alpha is not None})
            shown = f"{name} (alpha = {', '.join(f'{a:.4f}' for a in alphas)})" if name == "balanced" else name
            lines.append(f"| {world} | {shown} | {cells[0]} | {cells[1]} | {cells[2]} |")
    return "\n".join(lines) + "\n"


def plot_claims(claims: list[Claim], path: Path) -> None:
    """The paired differences with their 95 % CIs, one row per claim and world, planted beside unplanted."""
    plt = pyplot()
    paired = [claim for claim in claims if claim.comparison is not None and claim.comparison.difference.mean is not None]
    colours = {"planted": "tab:red", "unplanted": "tab:blue"}
    figure, axis = plt.subplots(figsize=(12, 0.5 * len(paired) + 1.5))
    for row, claim in enumerate(reversed(paired)):
        d = claim.comparison.difference
        low, high = (d.ci_low, d.ci_high) if d.ci_low is not None else (d.mean, d.mean)
        axis.errorbar(d.mean, row, xerr=[[d.mean - low], [high - d.mean]], fmt="o", capsize=4, color=colours.get(claim.world, "k"))
    axis.set_yticks(range(len(paired)), [f"{c.world}: {c.question}" for c in reversed(paired)], fontsize=7)
    axis.axvline(0, color="gray", linewidth=1)
    axis.set_xlabel("setting − reference, mean and 95 % CI over seeds")
    axis.set_title("Paired differences: planted (red), unplanted (blue)", fontsize=10)
    axis.grid(axis="x", alpha=0.3)
    save_figure(figure, path)


def write_verdicts(claims: list[Claim], groups: dict[str, dict[str, list[RunReading]]], scale: Scale, output_dir: Path,
                   invocations: list[dict] | None = None, output_root: Path | None = None,
                   selections: dict[str, dict] | None = None) -> dict:
    """summary.md, verdicts.json and verdicts.png in `output_dir`; returns the JSON payload.

    `invocations` ([{"minutes", "runs"}]) are the calls that ran the study's runs; their sum is its wall time.
    `selections` (world -> `tuned_control.select_control`'s choice) are the tuned control's choices."""
    output_dir.mkdir(parents=True, exist_ok=True)
    invocations = list(invocations or [])
    check = instrument_check(claims, scale.equivalence_margin)
    payload = {"scale": scale.description, "worlds": WORLDS, "output_root": str(output_root) if output_root else None,
               "link_seeds": list(scale.link_seeds),
               "wall_minutes": sum(item["minutes"] for item in invocations) if invocations else None,
               "invocations": invocations, "instrument_check": check, "tuned_control": selections or {}, "claims": to_plain(claims),
               "runs": {world: {name: [run.source for run in runs] for name, runs in g.items()} for world, g in groups.items()}}
    atomic_write_text(output_dir / "summary.md", to_markdown(claims, groups, scale, invocations, check, selections))
    atomic_write_json(output_dir / "verdicts.json", payload)
    plot_claims(claims, output_dir / "verdicts.png")
    return payload
