import pytest

from mai_repro import reference
from mai_repro.data.mixture import plan_mixture, rounding_interval

T = 1e12


def report_plan(**kw):
    comp = reference.COMPOSITION
    return plan_mixture({k: v[0] * T for k, v in comp.items()},
                        {k: v[2] for k, v in comp.items()}, 30 * T, **kw)


def test_planner_reproduces_the_report_table():
    plan = report_plan()
    assert plan.planned_tokens == pytest.approx(30 * T)
    assert not plan.warnings
    for fam, (unique, training, share, epochs) in reference.COMPOSITION.items():
        row = plan[fam]
        assert row.training_tokens / T == pytest.approx(training, abs=0.06), fam
        lo, hi = rounding_interval(unique, share / 100, 30.0, unique_step=0.1, share_step=0.001)
        assert lo <= row.epochs <= hi, fam
        assert lo <= epochs <= hi, fam
    assert plan["Math"].epochs == pytest.approx(5.39, abs=0.01)
    assert plan["Multilingual (other)"].epochs == pytest.approx(0.06, abs=0.005)


def test_hand_example():
    plan = plan_mixture({"a": 10, "b": 100}, {"a": 1, "b": 3}, 40)
    assert plan["a"].training_tokens == 10 and plan["a"].epochs == 1.0
    assert plan["b"].training_tokens == 30 and plan["b"].epochs == 0.3
    assert plan.share("a") == 0.25
    assert plan.table()[-1] == {"family": "Total", "unique": 110, "training": 40, "share": 1.0,
                                "epochs": 40 / 110}


def test_cap_moves_shortfall_in_proportion_and_warns():
    plan = plan_mixture({"a": 10, "b": 100, "c": 100}, {"a": 0.5, "b": 0.25, "c": 0.25}, 80,
                        max_epochs={"a": 2})
    assert plan["a"].capped and plan["a"].training_tokens == 20  # wanted 40
    assert plan["b"].training_tokens == pytest.approx(30) == plan["c"].training_tokens
    assert plan.planned_tokens == pytest.approx(80)
    assert any("a: 4.00 epochs would exceed its cap of 2" in w for w in plan.warnings)
    assert any("moved to b, c" in w for w in plan.warnings)


def test_cascading_caps_and_shortfall():
    plan = plan_mixture({"a": 10, "b": 10}, {"a": 0.5, "b": 0.5}, 100, max_epochs=2)
    assert plan.planned_tokens == 40
    assert any("no family has headroom" in w and "60" in w for w in plan.warnings)
    # b absorbs a's shortfall, then hits its own cap
    plan = plan_mixture({"a": 10, "b": 24, "c": 1000}, {"a": 1, "b": 1, "c": 1}, 90,
                        max_epochs=1.5)
    assert plan["a"].capped and plan["b"].capped and not plan["c"].capped
    assert plan.planned_tokens == pytest.approx(90)


@pytest.mark.parametrize("unique, shares, budget, match", [
    ({"a": 1}, {"b": 1}, 1, "families differ"),
    ({"a": 1}, {"a": 1}, 0, "budget must be positive"),
    ({"a": 1}, {"a": -1}, 1, "negative"),
    ({"a": 1}, {"a": 0}, 1, "sum to zero"),
])
def test_bad_input(unique, shares, budget, match):
    with pytest.raises(ValueError, match=match):
        plan_mixture(unique, shares, budget)
