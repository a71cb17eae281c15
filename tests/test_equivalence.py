"""The instrument check's rule (effect rows above 0, null rows inside +-margin) and its operating characteristics
by simulation, against cases computed by hand and scipy's noncentral t distribution."""

import math

import pytest
from scipy import stats

from sceneevent.study.equivalence import Row, operating_characteristics, pairs_needed, row_passes, simulate_pass_rate


@pytest.mark.parametrize("kind, low, high, holds", [
    ("null", -0.010, 0.020, True),  # inside +-0.025
    ("null", -0.030, 0.010, False),  # crosses -0.025: not shown equivalent, though it crosses 0 too
    ("null", 0.001, 0.024, True),  # a CI that excludes 0 can still be equivalent: the margin is what counts
    ("null", -0.025, 0.0, False),  # on the margin is not inside it
    ("effect", 0.001, 0.050, True),
    ("effect", -0.001, 0.050, False),
    ("effect", -0.050, -0.010, False),  # an effect of the wrong sign
    ("effect", None, None, False),  # fewer than two pairs: no CI, no pass
    ("null", None, None, False),
])
def test_the_rule(kind, low, high, holds):
    assert row_passes(kind, low, high, margin=0.025) is holds


def test_a_null_row_biased_by_the_margin_passes_at_most_2_5_percent_of_the_time():
    # With the true difference at +margin, the row passes only if the CI's upper end falls below the true mean:
    # P(mean + t * s / sqrt(n) < mu) = P(T < -t_0.975) = 0.025 exactly, times P(lower end > -margin) ~ 1 here.
    rate = simulate_pass_rate([Row("aa", "null", 0.025, 0.01)], n_pairs=8, margin=0.025, trials=100_000)
    assert rate == pytest.approx(0.025, abs=3 * math.sqrt(0.025 * 0.975 / 100_000))


def test_an_effect_row_passes_with_the_power_of_the_one_sided_t_test():
    # P(CI above 0) = P(T > t_0.975) with T noncentral t, df = n - 1, noncentrality mu * sqrt(n) / sd.
    n, mu, sd, trials = 8, 0.02, 0.03, 100_000
    power = stats.nct.sf(stats.t.ppf(0.975, n - 1), n - 1, mu * math.sqrt(n) / sd)
    rate = simulate_pass_rate([Row("link", "effect", mu, sd)], n_pairs=n, margin=0.025, trials=trials)
    assert rate == pytest.approx(power, abs=3 * math.sqrt(power * (1 - power) / trials))


def test_rows_are_simulated_independently_and_all_must_pass():
    # Two independent effect rows: the check passes with the product of their powers.
    n, trials = 6, 100_000
    rows = [Row("a", "effect", 0.03, 0.03), Row("b", "effect", 0.02, 0.03)]
    powers = [stats.nct.sf(stats.t.ppf(0.975, n - 1), n - 1, row.mean * math.sqrt(n) / row.sd) for row in rows]
    expected = powers[0] * powers[1]
    assert simulate_pass_rate(rows, n, 0.025, trials) == pytest.approx(expected, abs=3 * math.sqrt(expected / trials))


def test_operating_characteristics_and_the_pairs_an_unbiased_pass_needs():
    rows = [Row("planted link", "effect", 0.03, 0.02), Row("unplanted", "null", 0.01, 0.01), Row("A/A", "null", -0.02, 0.01)]
    oc = operating_characteristics(rows, n_pairs=8, margin=0.025, trials=50_000)
    assert [row.mean for row in oc.rows] == [0.03, 0.0, 0.0]  # unbiased: the null rows' true differences are 0
    assert oc.pass_if_unbiased > 0.9
    # Biased by the margin in one null row, the check fails at least 97.5 % of the time (the case above).
    assert set(oc.fail_if_biased) == {"unplanted", "A/A"}
    assert all(rate > 0.97 for rate in oc.fail_if_biased.values())
    # More pairs never lower the pass rate; the fewest pairs for 0.9 is where the rate first reaches it.
    needed = pairs_needed(rows, margin=0.025, target=0.9, trials=20_000)
    assert needed is not None and 2 <= needed <= 8
    assert simulate_pass_rate(oc.rows, needed, 0.025, 20_000) >= 0.9
    assert simulate_pass_rate(oc.rows, needed - 1, 0.025, 20_000) < 0.9
    # A margin far below the noise cannot be shown within 200 pairs.
    assert pairs_needed([Row("A/A", "null", 0.0, 0.2)], margin=0.001, most=200, trials=500) is None
