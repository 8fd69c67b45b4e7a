"""The run-directory lock: one writer per run directory, with real processes (issue 20)."""

import os
import signal
import subprocess
import sys
import textwrap

import nbformat
import pytest

from mai_repro import artifacts, pipeline
from mai_repro.artifacts import LOCK_ENV, Run, RunDirError, RunDirLock, check_run_dir
from mai_repro.config import load

HOLDER = textwrap.dedent("""
    import sys, time
    from mai_repro.artifacts import RunDirLock
    RunDirLock(sys.argv[1], "test holder").acquire()
    print("ready", flush=True)
    time.sleep(120)
""")


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock on ``tmp_path / "run"`` (killed at the end)."""
    env = {k: v for k, v in os.environ.items() if k != LOCK_ENV}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "run")],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "ready"
    yield proc
    proc.kill()
    proc.wait()


def child(run_dir, code, env=None):
    return subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True,
                          text=True, env=env, timeout=120)


def test_second_process_fails_at_once_naming_the_holder(tmp_path, holder):
    with pytest.raises(RunDirError, match=rf"in use by PID {holder.pid} \(test holder"):
        RunDirLock(tmp_path / "run").acquire()
    with pytest.raises(RunDirError, match=f"PID {holder.pid}"):
        with Run(load("smoke"), tmp_path / "run").stage("overview"):
            pass


def test_second_pipeline_fails_before_running_a_notebook(tmp_path, holder):
    proc = subprocess.run([sys.executable, "-m", "mai_repro.pipeline", "--preset", "smoke",
                           "--only", "00", "--run-dir", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert f"in use by PID {holder.pid}" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert not (tmp_path / "run" / "executed").exists()


def test_stale_lock_of_a_killed_process_is_taken_over(tmp_path, holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert str(holder.pid) in (tmp_path / "run" / "run.lock").read_text()  # left behind
    lock = RunDirLock(tmp_path / "run").acquire()
    assert lock.took_over_from == holder.pid
    assert lock.holder()["pid"] == os.getpid()
    lock.release()


def test_child_of_the_holder_re_enters_and_a_stranger_does_not(tmp_path):
    code = "import sys; from mai_repro.artifacts import RunDirLock; " \
           "RunDirLock(sys.argv[1]).acquire(); print('entered')"
    with RunDirLock(tmp_path / "run"):
        assert child(tmp_path / "run", code).stdout.strip() == "entered"  # inherits the token
        stranger = {k: v for k, v in os.environ.items() if k != LOCK_ENV}
        proc = child(tmp_path / "run", code, env=stranger)
        assert proc.returncode != 0 and f"in use by PID {os.getpid()}" in proc.stderr
    assert LOCK_ENV not in os.environ or not os.environ[LOCK_ENV]
    assert child(tmp_path / "run", code).stdout.strip() == "entered"  # released


def test_nested_stages_in_one_process_re_enter_and_outer_releases(tmp_path):
    run = Run(load("smoke"), tmp_path)
    stranger = {k: v for k, v in os.environ.items() if k != LOCK_ENV}
    code = "import sys; from mai_repro.artifacts import RunDirLock; " \
           "RunDirLock(sys.argv[1]).acquire()"
    with run.stage("overview"):
        with run.stage("wikipedia"):  # a stage that rebuilds its upstream inside its own
            pass
        assert child(tmp_path, code, env=stranger).returncode != 0  # the outer still holds it
    assert child(tmp_path, code, env=stranger).returncode == 0  # free again


def test_pipeline_and_its_notebook_kernels_do_not_deadlock(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("preset = 'laptop'\nrun_dir = None\nseed = None\n"
                                  "device = None\noverrides = {}"),
        nbformat.v4.new_code_cell("from mai_repro import artifacts, config\n"
                                  "run = artifacts.Run(config.load(preset), run_dir)\n"
                                  "with run.stage('overview'):\n    pass")])
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, nbs / "00_stage.ipynb")
    code = pipeline.main(["--preset", "smoke", "--notebooks", str(nbs),
                          "--run-dir", str(tmp_path / "run")])
    assert code == 0
    assert (tmp_path / "run" / "overview" / "manifest.json").is_file()
    RunDirLock(tmp_path / "run").acquire().release()  # the pipeline let go


def test_bad_run_dirs_give_one_line_errors(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(RunDirError, match="is a file"):
        check_run_dir(afile)
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    nbformat.write(nbformat.v4.new_notebook(), nbs / "00_x.ipynb")
    code = pipeline.main(["--preset", "smoke", "--notebooks", str(nbs), "--run-dir", str(afile)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: run directory") and "is a file" in err
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(RunDirError, match="not writable"):
            check_run_dir(ro)
        with pytest.raises(RunDirError, match="cannot create"):
            check_run_dir(ro / "sub")
    assert artifacts.check_run_dir(tmp_path / "new") == tmp_path / "new"
