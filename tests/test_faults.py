import json
import os
import sys
import textwrap

import pytest

from mai_repro.train.faults import Fault, parse_faults, supervise

# A stand-in training child: resumes from its "checkpoint" (a file holding the next step),
# checkpoints every 5 steps, writes a heartbeat after every step, and exits 0 at step 30.
CHILD = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from mai_repro.train.faults import maybe_fail, write_heartbeat
    ckpt, hb, done = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    step = json.loads(ckpt.read_text())["next"] if ckpt.exists() else 0
    while step < 30:
        time.sleep(0.01)
        maybe_fail(step)
        with done.open("a") as f:
            f.write(f"{step}\\n")
        write_heartbeat(hb, step)
        step += 1
        if step % 5 == 0:
            ckpt.write_text(json.dumps({"next": step}))
""")


def run(tmp_path, faults, **kw):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    cmd = [sys.executable, str(script), str(tmp_path / "ckpt.json"), str(tmp_path / "hb.json"),
           str(tmp_path / "done.txt")]
    report = supervise(cmd, tmp_path / "hb.json", faults, log=tmp_path / "events.json", **kw)
    steps = [int(s) for s in (tmp_path / "done.txt").read_text().split()]
    return report, steps


def test_no_faults(tmp_path):
    report, steps = run(tmp_path, [])
    assert report.exit_code == 0 and report.restarts == 0 and steps == list(range(30))


def test_kill_raise_and_hang_are_survived(tmp_path):
    faults = [Fault("kill", 7), Fault("raise", 13), Fault("hang", 22)]
    report, steps = run(tmp_path, faults, hang_timeout=1.0)
    assert report.exit_code == 0
    assert report.restarts == 3
    causes = [f["cause"] for f in report.failures]
    assert causes[0].startswith("killed (SIGKILL)")
    assert causes[1].startswith("exited with code 1 after step 12")
    assert causes[2].startswith("hang detected after step 21")
    assert sorted(set(steps)) == list(range(30))  # every step done...
    assert len(steps) > 30  # ...some twice: the recomputation after each failure
    events = json.loads((tmp_path / "events.json").read_text())
    assert [e["event"] for e in events].count("start") == 4


SLOW_START = "import time; time.sleep(1.5)\n"  # a child slow to start: imports on a busy machine


def test_a_slow_start_is_not_a_hang(tmp_path):
    """Before a child's first heartbeat the limit is start_timeout, not hang_timeout: starting
    a process on a loaded machine (importing torch) took longer than a 1-second hang timeout
    and was restarted as a hang."""
    global CHILD
    plain = CHILD
    try:
        CHILD = SLOW_START + plain
        report, steps = run(tmp_path, [], hang_timeout=1.0, start_timeout=10.0)
        assert report.exit_code == 0 and report.restarts == 0 and steps == list(range(30))
        (tmp_path / "done.txt").write_text("")  # killed before its first step
        (tmp_path / "ckpt.json").unlink()
        report, _ = run(tmp_path, [], hang_timeout=1.0, start_timeout=1.0, max_restarts=0)
        assert report.exit_code != 0
        assert report.failures[0]["cause"].startswith("no first heartbeat within 1.0 s")
    finally:
        CHILD = plain


def test_gives_up_after_max_restarts(tmp_path):
    report, _ = run(tmp_path, [Fault("raise", 3)] * 1, max_restarts=0)
    assert report.exit_code != 0 and report.restarts == 0


def test_parse_faults():
    assert parse_faults("kill@10, raise@2") == [Fault("kill", 10), Fault("raise", 2)]
    assert parse_faults("") == []
    with pytest.raises(ValueError, match="kind@step"):
        parse_faults("kill")
    with pytest.raises(ValueError, match="fault kind"):
        parse_faults("melt@3")


def test_interrupted_supervisor_leaves_no_orphan(tmp_path):
    pid_file = tmp_path / "pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); " \
            f"time.sleep(60)"

    def interrupt(step):
        if pid_file.exists() and pid_file.read_text():
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        supervise([sys.executable, "-c", child], tmp_path / "hb.json", hang_timeout=30,
                  on_poll=interrupt)
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
