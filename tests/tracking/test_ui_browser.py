"""`nasforge ui` in a real browser: a job logged through MlflowTracker, the MLflow UI started by
``python -m nasforge.tracking.ui``, the experiment page rendered by headless Debian Chromium, and
the candidate runs found in the rendered DOM (MLflow's UI is a React app: they exist only after
its JavaScript has fetched and drawn them)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest

from nasforge.core.types import CandidateStatus, JobState
from nasforge.tracking import MlflowTracker
from tests.tracking.helpers import make_job

pytestmark = [pytest.mark.slow, pytest.mark.browser]
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen, timeout_s: float) -> None:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the UI process exited with {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout_s:.0f} s")


def _dump_dom(chromium: str, url: str, profile: Path, budget_ms: int) -> str:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           f"--virtual-time-budget={budget_ms}", "--dump-dom", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    return out.stdout


def _visible_text(dom: str) -> str:
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))


def _log_through_the_server(server: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from nasforge.store.export_formats import write_parquet

    lj = make_job(tmp_path / "store-http.db", n=6, name="http-job")
    lj.store.set_pareto(lj.job.id, [lj.candidates[0].key])
    cands = lj.store.get_candidates(lj.job.id)
    tracker = MlflowTracker(server, "over-http")
    tracker.start_job(lj.job)
    tracker.log_candidates(lj.job.id, cands)
    tracker.log_progress(lj.job.id, 1, {"evaluated": 6.0})
    parquet = write_parquet(cands, tmp_path / "candidates.parquet")
    tracker.finish_job(lj.job.id, JobState.DONE, [cands[0]], {"candidates.parquet": parquet})
    tracker.close()
    assert tracker.disabled_reason is None
    client = MlflowClient(tracking_uri=server)
    runs = client.search_runs([client.get_experiment_by_name("over-http").experiment_id], max_results=100)
    children = [r for r in runs if r.data.tags.get("nasforge.role") == "candidate"]
    parent = next(r for r in runs if r.data.tags.get("nasforge.role") == "job")
    assert len(children) == 6 and parent.info.status == "FINISHED"
    assert {r.data.tags["candidate_key"] for r in children if r.data.tags["pareto"] == "true"} == {cands[0].key}
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    assert {r.info.status for r in children} == {"FINISHED", "FAILED"}
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["candidates.parquet"]


def test_mlflow_ui_lists_the_candidate_runs(tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (scripts/test-setup.sh runs: apt-get install -y chromium)")
    lj = make_job(tmp_path / "store.db", n=12, name="ui-job")
    done = [c for c in lj.candidates if c.status == CandidateStatus.DONE]
    lj.store.set_pareto(lj.job.id, [done[-1].key])
    cands = lj.store.get_candidates(lj.job.id)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(uri, "ui-test")
    tracker.start_job(lj.job)
    tracker.log_candidates(lj.job.id, cands)
    tracker.finish_job(lj.job.id, JobState.DONE, [c for c in cands if c.pareto], {})
    tracker.close()
    assert tracker.disabled_reason is None

    from mlflow import MlflowClient

    experiment_id = MlflowClient(tracking_uri=uri).get_experiment_by_name("ui-test").experiment_id
    port = _free_port()
    env = {**os.environ, "NASFORGE_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-m", "nasforge.tracking.ui", "--port", str(port), "--uri", uri],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc, timeout_s=240)
        # Sorted by a metric, MLflow lists child runs flat (by start time it nests them under the job).
        order = quote("metrics.`accuracy`")
        url = f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs?orderByKey={order}&orderByAsc=false"
        expected = {f"c{c.id}-{c.key[:8]}" for c in cands}
        found: set[str] = set()
        text = ""
        for budget_ms in (20_000, 60_000):  # a second, longer try when the machine is loaded
            text = _visible_text(_dump_dom(chromium, url, tmp_path / f"profile-{budget_ms}", budget_ms))
            found = set(re.findall(r"c\d+-[0-9a-f]{8}", text)) & expected
            if found == expected and lj.job.id in text:
                break
        assert found == expected, f"runs missing from the rendered page: {sorted(expected - found)}; page: {text[:800]}"
        assert lj.job.id in text  # the parent run
        print(f"\nMLflow UI rendered {len(found)} candidate runs and the job run {lj.job.id}")

        # The same server as a tracking URI: the tracker's client path (no bulk database writes).
        _log_through_the_server(f"http://127.0.0.1:{port}", tmp_path)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # run_ui stops the server's process group
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == 0
    with socket.socket() as s:  # the server is gone: the port no longer answers
        assert s.connect_ex(("127.0.0.1", port)) != 0
