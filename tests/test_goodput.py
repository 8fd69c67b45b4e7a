import pytest

from mai_repro.train.goodput import breakdown, from_events, from_goodput_and_overhead, kept_steps

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


def ev(step, t, dt, **kw):
    return {"event": "step", "step": step, "t": t, "dt": dt, **kw}


def test_from_events_adds_up_by_hand():
    events = [{"event": "start", "t": 0.0},
              ev(0, 3.0, 1.0, warmup=True),  # 2 s start-up before it
              ev(1, 4.0, 1.0), ev(2, 5.0, 1.0),
              ev(3, 6.0, 1.0),  # lost in the failure below
              {"event": "restart", "t": 8.0},
              ev(3, 9.0, 1.0, warmup=True), ev(4, 11.0, 2.0),  # a slow step: 1 s MFU drop
              {"event": "end", "t": 11.0}]
    gp = from_events(events)
    assert gp.ideal_s == 5.0  # 5 unique steps x 1 s
    assert gp.actual_s == 11.0
    assert gp.parts_s["recomputation"] == 1.0
    assert gp.parts_s["MFU drop"] == 1.0
    assert gp.parts_s["non-stepping time"] == 11.0 - 7.0
    assert gp.parts_s["unattributed"] == pytest.approx(0.0)
    assert gp.goodput == pytest.approx(5 / 11)


def test_from_events_when_the_slow_steps_were_redone():
    """The median step time comes from slow steps that a failure threw away: the ideal is
    capped at what the kept steps took, and the parts still add up to the wall clock."""
    events = [{"event": "start", "t": 0.0},
              ev(0, 2.0, 2.0), ev(1, 4.0, 2.0), ev(2, 6.0, 2.0),  # slow, all lost
              {"event": "restart", "t": 7.0},
              ev(0, 7.5, 0.5), ev(1, 8.0, 0.5), ev(2, 8.5, 0.5)]
    gp = from_events(events, warmup_steps=0)
    assert gp.ideal_s == 1.5
    assert gp.parts_s["recomputation"] == 6.0
    assert gp.parts_s["MFU drop"] == 0.0
    assert gp.ideal_s + sum(gp.parts_s.values()) == pytest.approx(gp.actual_s)


def test_kept_steps_are_the_last_execution_of_each_step():
    # steps 2 and 3 ran, a failure rolled back to step 1, and they ran again
    events = [{"event": "step", "step": s, "run": r} for s, r in
              [(1, "a"), (2, "a"), (3, "a"), (2, "b"), (3, "b"), (4, "b")]]
    events.insert(3, {"event": "restart"})
    kept = kept_steps(events)
    assert [(e["step"], e["run"]) for e in kept] == [(1, "a"), (2, "b"), (3, "b"), (4, "b")]
