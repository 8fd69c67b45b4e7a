import pytest

from mai_repro.train.goodput import breakdown, from_goodput_and_overhead

H = 3600.0


def test_report_arithmetic():
    gp = from_goodput_and_overhead(0.9, 51 * H, {"recomputation": 6.5 * H,
                                                 "non-stepping time": 14 * H,
                                                 "MFU drop": 18 * H})
    assert gp.actual_s == pytest.approx(510 * H)
    assert gp.ideal_s == pytest.approx(459 * H)
    assert gp.goodput == pytest.approx(0.9)
    assert gp.parts_s["unattributed"] == pytest.approx(12.5 * H)
    assert sum(gp.shares().values()) == pytest.approx(1.0)
    assert gp.shares()["MFU drop"] == pytest.approx(18 / 51)


def test_breakdown_adds_up():
    gp = breakdown(90, 100, {"restart": 4})
    assert gp.overhead_s == 10 and gp.parts_s == {"restart": 4, "unattributed": 6}


@pytest.mark.parametrize("args, match", [
    ((100, 90, {}), "ideal <= actual"),
    ((0, 90, {}), "ideal <= actual"),
    ((90, 100, {"a": 20}), "exceed the overhead"),
])
def test_bad_breakdown(args, match):
    with pytest.raises(ValueError, match=match):
        breakdown(*args)


@pytest.mark.parametrize("g", [0.0, 1.0, 1.2])
def test_goodput_out_of_range(g):
    with pytest.raises(ValueError, match="goodput"):
        from_goodput_and_overhead(g, 10, {})
