"""``nasforge submit/status/logs/cancel --address http://...`` against a real Ray head with its
dashboard (the Jobs API), token authentication on, and the toy workload shipped by py_modules.

The head is a ``ray start --head --block`` of our own in a short temp folder, on free ports, so
that it cannot touch another Ray on this machine; at the end every process whose command line
names that folder must be gone.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[2]


def _dashboard_missing() -> str | None:
    try:
        import ray.dashboard.optional_deps  # noqa: F401
    except ImportError as e:
        return f"the Ray dashboard (Jobs API server) needs ray[default]: {e}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pids_naming(text: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            out.append(int(d.name))
    return out


class Head:
    def __init__(self, root: Path):
        self.root = root
        self.temp = root / "r"
        self.token = secrets.token_hex(16)
        (root / "token").write_text(self.token)
        self.user = root / "user"  # the head's HOME; NASFORGE_HOME is not set there
        self.home = self.user / ".nasforge"  # so a Jobs API driver's NASFORGE_HOME, with its store, is ~/.nasforge
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(root / "token"),
                    "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_AUTH_TOKEN", None)
        self.env.pop("RAY_ADDRESS", None)

    def start(self) -> None:
        cmd = ["ray", "start", "--head", "--block", "--num-cpus", "2", "--temp-dir", str(self.temp),
               "--port", str(_free_port()), "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
               "--dashboard-port", str(self.port), "--dashboard-agent-listen-port", str(_free_port()),
               "--dashboard-agent-grpc-port", str(_free_port()), "--runtime-env-agent-port", str(_free_port()),
               "--metrics-export-port", str(_free_port()), "--disable-usage-stats"]
        self.user.mkdir()
        head_env = {**self.env, "HOME": str(self.user)}
        head_env.pop("NASFORGE_STORE_URL", None)
        head_env.pop("NASFORGE_HOME", None)
        self.log = open(self.root / "head.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=head_env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=self.root)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("ray start exited: " + (self.root / "head.log").read_text()[-3000:])
            if self.http("/api/version", auth=True)[0] == 200:
                return
            time.sleep(1)
        raise RuntimeError("the Ray dashboard did not come up in 120 s")

    def http(self, path: str, *, auth: bool) -> tuple[int, str]:
        req = urllib.request.Request(self.url + path)
        if auth:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - loopback
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")
        except OSError:
            return 0, ""

    def stop(self) -> list[int]:
        """Stop the head and everything it started; returns the pids that outlived the group kill."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self.log.close()
        time.sleep(1)
        left = _pids_naming(str(self.temp))
        for pid in left:  # processes that left the group (none expected)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return left

    def cli(self, *args: str, auth: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = {**self.env, "NASFORGE_HOME": str(self.root / "client-home")}
        if not auth:
            env["RAY_AUTH_MODE"] = "disabled"
        return subprocess.run([sys.executable, "-m", "nasforge.cli", *args], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def head() -> Iterator[Head]:
    missing = _dashboard_missing()
    if missing:
        pytest.skip(missing)
    root = Path(tempfile.mkdtemp(prefix="nfc", dir="/tmp"))  # short: Ray's socket paths are limited
    h = Head(root)
    try:
        h.start()
        yield h
    finally:
        left = h.stop() if hasattr(h, "proc") else []
        still = _pids_naming(str(h.temp))
        shutil.rmtree(root, ignore_errors=True)
        assert not still, f"Ray processes left running: {still}"
        assert not left, f"Ray processes outlived the head's process group: {left}"


def _job_file(h: Head, name: str, evaluations: int, delay: float) -> Path:
    path = h.root / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "seed": 0,
        "space": {"name": "toy"},
        "supernet": {"name": "tests.toy:ToyWorkload", "options": {"delay": delay}},
        "strategy": {"name": "random"},
        "objectives": [{"metric": "accuracy", "direction": "maximize"},
                       {"metric": "latency_ms", "direction": "minimize"}],
        "budget": {"evaluations": evaluations, "batch_size": 6},
        "workers": {"count": 2, "cpus": 1, "chunk_size": 2},
        "tracking": {"enabled": False},
    }))
    return path


def _cluster_store(h: Head) -> Any:
    from nasforge.store import open_store

    return open_store(f"sqlite:///{h.home / 'nasforge.db'}")


def test_token_auth_is_on(head: Head) -> None:
    assert head.http("/api/version", auth=False)[0] == 401
    proc = head.cli("status", "nasforge-nope", "--address", head.url, auth=False)
    assert proc.returncode == 2
    assert "token authentication" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_submit_status_logs_through_the_jobs_api(head: Head) -> None:
    job = _job_file(head, "cluster-toy", evaluations=12, delay=0.1)
    t0 = time.monotonic()
    proc = head.cli("submit", str(job), "--address", head.url, "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"cluster submit: {info['submission_id']} {info['status']} nasforge job {info['job_id']} "
          f"in {time.monotonic() - t0:.1f} s")
    assert info["status"] == "SUCCEEDED" and info["job_id"]
    sid, job_id = info["submission_id"], info["job_id"]
    st = json.loads(head.cli("status", sid, "--address", head.url, "--json").stdout)
    assert st["status"] == "SUCCEEDED" and st["job_id"] == job_id
    assert st["metadata"]["nasforge.job_name"] == "cluster-toy"
    logs = head.cli("logs", sid, "--address", head.url)
    assert logs.returncode == 0 and f"job {job_id} created" in logs.stdout
    assert re.search(r"^evaluated 1[0-2]/12 ", logs.stdout, re.M)  # first line past 10
    # the driver ran on the cluster and wrote to the cluster's store, not the client's
    store = _cluster_store(head)
    keys = [c.key for c in store.get_candidates(job_id)]
    assert store.get_job(job_id).state.value == "done" and len(keys) == len(set(keys)) == 12
    assert not (head.root / "client-home" / "nasforge.db").exists()
    # ... in the head's ~/.nasforge, not in the working_dir Ray unpacked the job file into (removed with it)
    assert (head.home / "jobs" / job_id).is_dir()
    missing = head.cli("status", "nasforge-nope", "--address", head.url)
    assert missing.returncode == 2 and "no Ray job 'nasforge-nope'" in missing.stderr


def test_cancel_stops_the_cluster_job(head: Head) -> None:
    job = _job_file(head, "cluster-cancel", evaluations=400, delay=0.3)
    out = head.cli("submit", str(job), "--address", head.url, "--detach", "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    sid = json.loads(out.stdout)["submission_id"]
    deadline = time.monotonic() + 180
    st: dict = {}
    while time.monotonic() < deadline:
        st = json.loads(head.cli("status", sid, "--address", head.url, "--json").stdout)
        if st["progress"]:  # the search is under way
            break
        assert st["status"] in ("PENDING", "RUNNING"), st
        time.sleep(1)
    assert st["progress"], st
    cancel = head.cli("cancel", sid, "--address", head.url)
    assert cancel.returncode == 0 and "stopped" in cancel.stdout, cancel.stderr
    st = json.loads(head.cli("status", sid, "--address", head.url, "--json").stdout)
    assert st["status"] == "STOPPED"
    store = _cluster_store(head)
    state = store.get_job(st["job_id"]).state.value
    n = sum(c.status.value == "done" for c in store.get_candidates(st["job_id"]))
    print(f"cluster cancel: nasforge job {st['job_id']} {state} after {n} done; note: {store.get_job(st['job_id']).error}")
    assert state == "interrupted" and 0 < n < 400  # resumable with nasforge resume
    again = head.cli("cancel", sid, "--address", head.url)
    assert again.returncode == 0 and "already ended" in again.stdout
