"""A job's driver process as list / status / resume / logs see it.

A driver killed with SIGKILL (or by the OOM killer, or a reboot) cannot record the job's end, so the
store still says ``running``. On the machine that ran it, ``driver.pid`` tells: list and status show
such a job as interrupted with the resume command, resume refuses a job whose driver still runs (two
drivers on one job would evaluate candidates twice), and ``logs --follow`` prints until the driver ends.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from nasforge.cli import main
from nasforge.compose import driver_process
from nasforge.core.spec import JobSpec
from nasforge.core.types import Job, JobState
from nasforge.store import open_store

ROOT = Path(__file__).resolve().parents[2]
SLEEP = "import sys, time; time.sleep(float(sys.argv[1]))"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path))
    monkeypatch.delenv("NASFORGE_STORE_URL", raising=False)
    return tmp_path


def _job(home: Path, state: JobState) -> Job:
    store = open_store(f"sqlite:///{home / 'nasforge.db'}")
    spec = JobSpec.model_validate(yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text()))
    job = store.create_job(spec.to_dict(), name=spec.name, seed=spec.seed)
    store.set_job_state(job.id, state)
    (home / "jobs" / job.id).mkdir(parents=True, exist_ok=True)
    return store.get_job(job.id)


def _pid_file(home: Path, job_id: str, pid: int, host: str | None = None) -> None:
    (home / "jobs" / job_id / "driver.pid").write_text(f"{pid} {host or socket.gethostname()}\n")


def _fake_driver(seconds: float) -> subprocess.Popen[bytes]:
    """A live process standing in for a driver (started before its pid file is written, like one)."""
    return subprocess.Popen([sys.executable, "-c", SLEEP, str(seconds), "nasforge-test-driver"])


def test_driver_process_tells_alive_gone_and_unknown(home: Path) -> None:
    job = _job(home, JobState.RUNNING)
    assert driver_process(job.id) == ("unknown", None)  # no pid file: never ran here, or ended cleanly
    alive = _fake_driver(30)
    try:
        _pid_file(home, job.id, alive.pid)
        assert driver_process(job.id) == ("alive", alive.pid)
        _pid_file(home, job.id, alive.pid, host="another-host.example")
        assert driver_process(job.id) == ("unknown", None)  # its pid means nothing here
    finally:
        alive.kill()
        alive.wait()
    _pid_file(home, job.id, alive.pid)
    assert driver_process(job.id) == ("gone", alive.pid)
    # the driver's pid taken by a process started after the pid file was written (pid reuse)
    other = subprocess.Popen(["sleep", "30"])
    try:
        _pid_file(home, job.id, other.pid)
        pid_file = home / "jobs" / job.id / "driver.pid"
        written = time.time() - 60
        os.utime(pid_file, (written, written))
        assert driver_process(job.id) == ("gone", other.pid)
    finally:
        other.kill()
        other.wait()


def test_status_and_list_show_a_killed_driver_as_interrupted(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = _job(home, JobState.RUNNING)
    driver = _fake_driver(30)
    try:
        _pid_file(home, job.id, driver.pid)
        assert main(["status", job.id, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["state"] == "running"
    finally:
        driver.kill()
        driver.wait()
    assert main(["status", job.id, "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["state"] == "interrupted"
    assert f"process {driver.pid}" in row["error"] and f"nasforge resume {job.id}" in row["error"]
    assert main(["status", job.id]) == 0
    out = capsys.readouterr().out
    assert f"({job.name}): interrupted" in out and f"continue with: nasforge resume {job.id}" in out
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["state"] for r in rows] == ["interrupted"]
    # not a duration that counts on while nothing runs: the dead run ends at its last activity (here
    # the driver.pid file written just after the job started)
    ran = rows[0]["duration_s"]
    assert ran is not None and 0 <= ran < 30
    time.sleep(1.5)
    assert main(["list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["duration_s"] == pytest.approx(ran, abs=0.01)
    # what the store says is left as it is: resume sets it when it runs
    assert open_store(f"sqlite:///{home / 'nasforge.db'}").get_job(job.id).state == JobState.RUNNING


def test_resume_refuses_a_job_whose_driver_still_runs(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = _job(home, JobState.RUNNING)
    driver = _fake_driver(30)
    try:
        _pid_file(home, job.id, driver.pid)
        assert main(["resume", job.id]) == 2
        err = capsys.readouterr().err
        assert f"nasforge: error: job {job.id} is still running (driver process {driver.pid} on this machine)" in err
        assert f"nasforge cancel {job.id}" in err and len(err.strip().splitlines()) == 1
        store = open_store(f"sqlite:///{home / 'nasforge.db'}")
        assert store.get_job(job.id).state == JobState.RUNNING and not store.get_candidates(job.id)
        assert (home / "jobs" / job.id / "driver.pid").read_text().split()[0] == str(driver.pid)
    finally:
        driver.kill()
        driver.wait()


def test_logs_follow_prints_until_the_driver_ends(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = _job(home, JobState.RUNNING)
    jdir = home / "jobs" / job.id
    (jdir / "driver.log").write_text("job started\n")
    # a stand-in driver: writes its pid file, logs three lines over ~1.5 s, records the end like
    # run_job does (state first, then the pid file goes), and exits
    script = textwrap.dedent(f"""
        import os, socket, sys, time
        from pathlib import Path
        from nasforge.core.types import JobState
        from nasforge.store import open_store
        jdir = Path({str(jdir)!r})
        (jdir / "driver.pid").write_text(f"{{os.getpid()}} {{socket.gethostname()}}\\n")
        Path(sys.argv[1]).touch()
        for i in range(3):
            time.sleep(0.5)
            with open(jdir / "driver.log", "a") as f:
                f.write(f"evaluated {{i + 1}}/3\\n")
        open_store({f"sqlite:///{home / 'nasforge.db'}"!r}).set_job_state({job.id!r}, JobState.DONE)
        with open(jdir / "driver.log", "a") as f:
            f.write("job done\\n")
        (jdir / "driver.pid").unlink()
    """)
    started = home / "started"
    proc = subprocess.Popen([sys.executable, "-c", script, str(started), "nasforge-test-driver"])
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), "the stand-in driver did not start"
        assert main(["logs", job.id]) == 0  # without --follow: what is there now
        assert capsys.readouterr().out.startswith("job started\n")
        assert main(["logs", job.id, "--follow"]) == 0
        assert proc.wait(timeout=30) == 0
        assert capsys.readouterr().out == "job started\nevaluated 1/3\nevaluated 2/3\nevaluated 3/3\njob done\n"
    finally:
        proc.kill()
        proc.wait()
    # a driver that died without recording the end: follow prints what is there and stops
    job2 = _job(home, JobState.RUNNING)
    (home / "jobs" / job2.id / "driver.log").write_text("evaluated 1/3\n")
    _pid_file(home, job2.id, proc.pid)
    assert main(["logs", job2.id, "--follow"]) == 0
    assert capsys.readouterr().out == "evaluated 1/3\n"


def test_status_and_list_show_how_far_training_got(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """While a supernet trains, status said only 'round 0; evaluated 0/120' for minutes (hours on a real one)."""
    job = _job(home, JobState.TRAINING)
    driver = _fake_driver(30)
    try:
        _pid_file(home, job.id, driver.pid)
        assert main(["status", job.id]) == 0
        assert "  training: the first epoch is under way" in capsys.readouterr().out
        progress = {"epoch": 3, "epochs": 10, "metrics": {"largest_val_acc": 0.9125, "epoch_seconds": 20.0}}
        (home / "jobs" / job.id / "supernet").mkdir()
        (home / "jobs" / job.id / "supernet" / "progress.json").write_text(json.dumps(progress))
        assert main(["status", job.id]) == 0
        assert "  training: epoch 3 of 10 trained (largest_val_acc=0.9125); about 140 s to go" in capsys.readouterr().out
        assert main(["list", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)[0]["training"] == progress
        assert main(["list"]) == 0
        assert "epoch 3/10" in capsys.readouterr().out
    finally:
        driver.kill()
        driver.wait()
    # Ctrl-C during training: the job is interrupted with 0/120 evaluated; status says which epoch
    # resume trains on from, with no time to go (nothing runs)
    home_store = open_store(f"sqlite:///{home / 'nasforge.db'}")
    home_store.set_job_state(job.id, JobState.INTERRUPTED, error="interrupted (Ctrl-C or SIGTERM)")
    (home / "jobs" / job.id / "driver.pid").unlink(missing_ok=True)
    assert main(["status", job.id]) == 0
    out = capsys.readouterr().out
    assert ": interrupted\n" in out
    assert "  training: epoch 3 of 10 trained (largest_val_acc=0.9125); resume trains on from there\n" in out
    assert main(["list"]) == 0
    assert "epoch 3/10" in capsys.readouterr().out
    # once the supernet is trained, a stopped job shows its evaluations again
    done = {**progress, "epoch": 10}
    (home / "jobs" / job.id / "supernet" / "progress.json").write_text(json.dumps(done))
    assert main(["list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["training"] is None
