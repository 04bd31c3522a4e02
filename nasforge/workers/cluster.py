"""Jobs on a Ray cluster through the Ray Jobs API (``ray.job_submission.JobSubmissionClient``).

``nasforge submit job.yaml --address http://HEAD:8265`` uploads the job file (runtime_env
``working_dir``) and, when nasforge or the job's own code (``package.module:Class`` references)
is a source checkout rather than an installed package, that code too (``py_modules``); the
entrypoint ``python -m nasforge.cli submit FILE --address auto`` then runs on the cluster as the
job's driver, connects to the cluster's Ray, and writes to the cluster's store (``store.url`` of
the job, else ``NASFORGE_STORE_URL`` / ``NASFORGE_HOME`` of the head node's environment).

The Ray submission id (``nasforge-NAME-YYYYmmdd-HHMMSS-xxxx``) is the handle of ``status``,
``logs`` and ``cancel --address``; the nasforge job id that the driver creates on the cluster is
read back from the job's log (``job ID created``), so ``nasforge status JOB --store URL`` works
where the cluster's store is reachable.

Authentication is Ray's own: with ``RAY_AUTH_MODE=token`` in the client's environment Ray's SDK
sends the token (``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH``, else
``~/.ray/auth_token``) as ``Authorization: Bearer``. nasforge neither reads nor stores the token.
"""

from __future__ import annotations

import importlib.util
import json
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nasforge.core.errors import NasforgeError
from nasforge.core.spec import JobSpec

#: a line the driver prints when it creates its job (nasforge.compose.run_job)
_JOB_CREATED = re.compile(r"^job (?P<id>[A-Za-z0-9_.-]+) created$", re.MULTILINE)
_PROGRESS = re.compile(r"^evaluated \d+/\d+ .*$", re.MULTILINE)
_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class ClusterError(NasforgeError):
    """The Ray cluster cannot be reached, refuses us, or does not know the submission."""


def _client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as e:  # noqa: BLE001 - connection / auth problems become one line
        raise ClusterError(_explain(address, e)) from None


def _explain(address: str, err: BaseException) -> str:
    text = " ".join(str(err).split())
    if "Authentication" in text or "401" in text or "403" in text:
        return (f"--address {address}: the Ray cluster refused the request ({text[:200]}); it uses token "
                "authentication: set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN or "
                "RAY_AUTH_TOKEN_PATH (see docs/cluster.md)")
    return f"--address {address}: cannot reach the Ray Jobs API ({text[:300]}); is the head's dashboard up?"


def _call(address: str, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except RuntimeError as e:
        text = str(e)
        if "does not exist" in text or "404" in text or "not found" in text.lower():
            raise ClusterError(f"--address {address}: no Ray job {what!r} on this cluster") from None
        raise ClusterError(_explain(address, e)) from None
    except Exception as e:  # noqa: BLE001
        raise ClusterError(_explain(address, e)) from None


# ------------------------------------------------------------------------------------------------
# runtime environment


def _import_paths(spec: JobSpec) -> Iterable[str]:
    """``package.module:attr`` references of the job that its driver and workers import."""
    if spec.supernet is not None and ":" in spec.supernet.name:
        yield spec.supernet.name
    if spec.model is not None and spec.model.module is not None:
        yield spec.model.source


def _source_package(top: str) -> Path | None:
    """The folder of top-level package ``top`` when it is a source checkout (not site-packages)."""
    found = importlib.util.find_spec(top)
    if found is None or not found.submodule_search_locations:
        return None
    folder = Path(next(iter(found.submodule_search_locations))).resolve()
    if any(part in ("site-packages", "dist-packages") for part in folder.parts):
        return None  # installed: the cluster's image has it from the same pyproject
    return folder


def build_runtime_env(job_path: Path, spec: JobSpec, staging: Path) -> dict[str, Any]:
    """runtime_env of the submission: the job file in ``working_dir``, source packages in ``py_modules``."""
    shutil.copy2(job_path, staging / job_path.name)
    modules: list[str] = []
    for top in ["nasforge", *(p.partition(":")[0].split(".")[0] for p in _import_paths(spec))]:
        folder = _source_package(top)
        if folder is not None and str(folder) not in modules:
            modules.append(str(folder))
    env: dict[str, Any] = {
        "working_dir": str(staging),
        "env_vars": {"PYTHONUNBUFFERED": "1"},
        "excludes": ["__pycache__", "*.pyc", ".nasforge"],
    }
    if modules:
        env["py_modules"] = modules
    return env


def new_submission_id(name: str) -> str:
    now = datetime.now(timezone.utc)
    return f"nasforge-{name}-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


# ------------------------------------------------------------------------------------------------
# commands


def submit_to_cluster(job_path: str | Path, spec: JobSpec, *, address: str, wait: bool, json_out: bool) -> int:
    """Submit the job; with ``wait``, stream its log until it ends. Returns the CLI exit code."""
    job_path = Path(job_path).resolve()
    client = _client(address)
    sid = new_submission_id(spec.name)
    with tempfile.TemporaryDirectory(prefix="nasforge-submit-") as tmp:
        runtime_env = build_runtime_env(job_path, spec, Path(tmp))
        entrypoint = f"python -m nasforge.cli submit {job_path.name} --address auto"
        _call(address, sid, client.submit_job, entrypoint=entrypoint, submission_id=sid, runtime_env=runtime_env,
              metadata={"nasforge.job_name": spec.name, "nasforge.job_file": job_path.name})
    if not wait:
        print(json.dumps({"submission_id": sid, "state": "submitted"}) if json_out else sid)
        return 0
    if not json_out:
        print(f"submitted {sid} to {address}", file=sys.stderr)
    status, logs = _follow(client, address, sid, echo=not json_out)
    info = describe(client, address, sid, logs=logs)
    if json_out:
        print(json.dumps(info))
    else:
        print(f"ray job {sid}: {status}" + (f" (nasforge job {info['job_id']})" if info["job_id"] else ""))
    return 0 if status in ("SUCCEEDED", "STOPPED") else 1


def _follow(client: Any, address: str, sid: str, *, echo: bool, poll_s: float = 1.0) -> tuple[str, str]:
    """Poll status and log until the job ends; print new log text as it comes."""
    shown = 0
    while True:
        status = str(_call(address, sid, client.get_job_status, sid).value)
        logs = _call(address, sid, client.get_job_logs, sid)
        if echo and len(logs) > shown:
            sys.stdout.write(logs[shown:])
            sys.stdout.flush()
            shown = len(logs)
        if status in _TERMINAL:
            return status, logs
        time.sleep(poll_s)


def nasforge_job_id(logs: str) -> str | None:
    m = _JOB_CREATED.search(logs)
    return m.group("id") if m else None


def describe(client: Any, address: str, sid: str, *, logs: str | None = None) -> dict[str, Any]:
    """Ray's view of the submission plus what its log says about the nasforge job."""
    info = _call(address, sid, client.get_job_info, sid)
    if logs is None:
        logs = _call(address, sid, client.get_job_logs, sid)
    progress = _PROGRESS.findall(logs)
    return {
        "submission_id": sid,
        "status": str(info.status.value),
        "message": info.message,
        "job_id": nasforge_job_id(logs),
        "progress": progress[-1] if progress else None,
        "entrypoint": info.entrypoint,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "metadata": dict(info.metadata or {}),
    }


def cluster_status(sid: str, *, address: str, json_out: bool) -> int:
    info = describe(_client(address), address, sid)
    if json_out:
        print(json.dumps(info))
        return 0
    print(f"ray job {sid}: {info['status']}" + (f" - {info['message']}" if info["message"] else ""))
    print(f"  nasforge job: {info['job_id'] or '- (not created yet)'}")
    print(f"  last progress: {info['progress'] or '-'}")
    return 0


def cluster_logs(sid: str, *, address: str, follow: bool) -> int:
    client = _client(address)
    if follow:
        status, _ = _follow(client, address, sid, echo=True)
        return 0 if status in ("SUCCEEDED", "STOPPED") else 1
    sys.stdout.write(_call(address, sid, client.get_job_logs, sid))
    return 0


def cluster_cancel(sid: str, *, address: str, timeout_s: float = 60.0) -> bool:
    """Ask Ray to stop the job (its driver gets SIGTERM and records the job as interrupted).

    Returns False when the job had already ended; waits until Ray reports it stopped."""
    client = _client(address)
    status = str(_call(address, sid, client.get_job_status, sid).value)
    if status in _TERMINAL:
        return False
    _call(address, sid, client.stop_job, sid)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if str(_call(address, sid, client.get_job_status, sid).value) in _TERMINAL:
            break
        time.sleep(0.5)
    return True
