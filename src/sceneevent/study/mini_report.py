"""The verdicts of the mini reproduction (`design`, `mini`): each claim as a paired comparison over seeds or a
Pearson correlation over runs, the instrument check (does the planted link come out, and only where it is
planted?), and their table, figure and JSON."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io_utils import atomic_write_json, atomic_write_text
from .design import ALPHAS, JOINT_ALPHA, WORLDS, Scale, Subset, swapped_roles
from .figures import pyplot, save_figure
from .report import to_plain
from .run_readings import RunReading
from .seed_statistics import SIGNIFICANCE, PairedComparison, compare_paired, describe, pearson


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


def world_claims(world: str, groups: dict[str, list[RunReading]], scale: Scale) -> list[Claim]:
    """The verdicts of one world, in the order of the table; the first is the instrument check."""
    def get(name: str) -> list[RunReading]:
        return groups.get(name, [])  # a missing group reads as "not measured"

    correlated, uncorrelated, redrawn = (scale.arm_label(arm) for arm in ("correlated", "uncorrelated", "correlated, redrawn"))
    joint = f"alpha={JOINT_ALPHA:g}"
    claims = [
        paired_claim(world, f"correlated vs uncorrelated event classes (k = {scale.strategy_k}, T = {scale.subset_hours:g} h, "
                     f"alpha = {JOINT_ALPHA:g}), scene accuracy", get(correlated), get(uncorrelated), "asc_macro_accuracy",
                     "correlated", "uncorrelated"),
        paired_claim(world, "A/A null control: correlated vs correlated drawn again (another subset seed), scene accuracy",
                     get(redrawn), get(correlated), "asc_macro_accuracy", "second draw", "first draw"),
        # The comparison within each role assignment: the difference between the two is how the class sets'
        # sounds act, which the counterbalancing cancels in the first row. (No row sets the link runs against
        # scene only: on odd seeds they ran in the other world.)
        *(paired_claim(world, f"correlated vs uncorrelated, {roles} seeds only, scene accuracy",
                       [run for run in get(correlated) if swapped_roles(run.seed) == swapped],
                       [run for run in get(uncorrelated) if swapped_roles(run.seed) == swapped],
                       "asc_macro_accuracy", "correlated", "uncorrelated")
          for swapped, roles in ((False, "default-role (even)"), (True, "swapped-role (odd)"))),
        paired_claim(world, "balanced alpha (eq. 3) vs scene only, scene accuracy", get("balanced"), get("alpha=0"),
                     "asc_macro_accuracy", "balanced alpha", "scene only"),
        paired_claim(world, f"joint at alpha = {JOINT_ALPHA:g} vs scene only, scene accuracy", get(joint), get("alpha=0"),
                     "asc_macro_accuracy", f"alpha {JOINT_ALPHA:g}", "scene only"),
        paired_claim(world, f"pre-train on events + fine-tune vs joint (alpha = {JOINT_ALPHA:g}), scene accuracy",
                     get("pretrain"), get(joint), "asc_macro_accuracy", "pre-train + fine-tune", "joint"),
        paired_claim(world, "balanced alpha vs events only, event lwlrap", get("balanced"), get("alpha=1"),
                     "aet_lwlrap", "balanced alpha", "events only"),
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
    if k_runs:
        claims.append(correlation_claim(world, f"scene accuracy against k (T = {scale.subset_hours:g} h, alpha = {JOINT_ALPHA:g})",
                                        k_runs, "k", "asc_macro_accuracy"))
    if WORLDS[world] > 0:  # the planted link must be found ...
        expect(claims[0], "correlated higher, p < 0.05", lambda p, mean: p < SIGNIFICANCE and mean > 0)
    else:  # ... only where it is planted
        expect(claims[0], "no significant difference", lambda p, mean: p >= SIGNIFICANCE)
    expect(claims[1], "no significant difference", lambda p, mean: p >= SIGNIFICANCE)  # and nothing invented
    return claims


def expect(claim: Claim, expected: str, holds) -> None:
    """Mark what the world's construction says must come out (the instrument check) and whether it did."""
    p, mean = claim.comparison.t_test_p, claim.comparison.difference.mean
    claim.expected = expected
    claim.as_expected = p is not None and mean is not None and bool(holds(p, mean))


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


def instrument_check(claims: list[Claim]) -> dict:
    checked = [claim for claim in claims if claim.expected is not None]
    return {"passed": bool(checked) and all(claim.as_expected for claim in checked),
            "checks": [{"world": claim.world, "question": claim.question, "expected": claim.expected,
                        "as_expected": claim.as_expected, "verdict": claim.verdict,
                        "p": claim.comparison.t_test_p, "difference": claim.comparison.difference.mean} for claim in checked]}


def wall_time_text(invocations: list[dict]) -> str:
    if not invocations:
        return "Wall time: not recorded."
    total = sum(item["minutes"] for item in invocations)
    if len(invocations) == 1:
        return f"Wall time: {total:.1f} min."
    parts = ", ".join(f"{item['minutes']:.1f} min" + (f" ({item['runs']} runs)" if item.get("runs") else "") for item in invocations)
    return f"Wall time: {total:.1f} min in {len(invocations)} invocations: {parts}."


def to_markdown(claims: list[Claim], groups: dict[str, dict[str, list[RunReading]]], scale: Scale, invocations: list[dict]) -> str:
    check = instrument_check(claims)
    lines = [
        "# Mini reproduction: verdicts",
        "",
        f"Scale: {scale.description}. Worlds: " + ", ".join(f"{w} (event_informativeness {v:g})" for w, v in WORLDS.items())
        + ". " + wall_time_text(invocations),
        "",
        "## Instrument check",
        "",
        f"**{'passed' if check['passed'] else 'FAILED'}**. What the worlds' construction says must come out:",
        "",
        *(f"- {item['world']}, {item['question']}: expected {item['expected']}; got {item['verdict']} "
          f"(difference {_signed(item['difference'])}, p = {_p(item['p'])}) {'✓' if item['as_expected'] else '✗'}"
          for item in check["checks"]),
        "",
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
                   invocations: list[dict] | None = None, output_root: Path | None = None) -> dict:
    """summary.md, verdicts.json and verdicts.png in `output_dir`; returns the JSON payload.

    `invocations` ([{"minutes", "runs"}]) are the calls that ran the study's runs; their sum is its wall time."""
    output_dir.mkdir(parents=True, exist_ok=True)
    invocations = list(invocations or [])
    payload = {"scale": scale.description, "worlds": WORLDS, "output_root": str(output_root) if output_root else None,
               "wall_minutes": sum(item["minutes"] for item in invocations) if invocations else None,
               "invocations": invocations, "instrument_check": instrument_check(claims), "claims": to_plain(claims),
               "runs": {world: {name: [run.source for run in runs] for name, runs in g.items()} for world, g in groups.items()}}
    atomic_write_text(output_dir / "summary.md", to_markdown(claims, groups, scale, invocations))
    atomic_write_json(output_dir / "verdicts.json", payload)
    plot_claims(claims, output_dir / "verdicts.png")
    return payload
