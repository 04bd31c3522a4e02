"""Where nasforge keeps its files: ``NASFORGE_HOME`` (default ``./.nasforge``; ``~/.nasforge`` for a
driver the Ray Jobs API runs, see :func:`home`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from nasforge.core.errors import ExportError, ResourceUnavailableError

#: set by Ray's job supervisor in the environment of every driver the Jobs API starts
RAY_JOBS_DRIVER_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def default_home() -> Path:
    """``./.nasforge``, except in a driver the Ray Jobs API started (``nasforge submit --address
    http://...``, ``ray job submit -- nasforge ...``): its current folder is the working_dir Ray
    unpacked the job into, removed with the job's runtime environment, so trained supernets, the
    MLflow store and exports would go with it; there the head's ``~/.nasforge`` is the default."""
    if os.environ.get(RAY_JOBS_DRIVER_ENV):
        return Path.home() / ".nasforge"
    return Path(".nasforge")


def home() -> Path:
    """The project's state folder; created on first use."""
    given = os.environ.get("NASFORGE_HOME")
    p = Path(given or default_home()).resolve()
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        what = f"NASFORGE_HOME={given}" if given else f"the default NASFORGE_HOME {p}"
        raise ResourceUnavailableError(
            f"{what}: cannot be used as nasforge's folder ({e.strerror or e}); "
            "set NASFORGE_HOME to a folder you can write"
        ) from None
    return p


def with_installed_driver(url: str) -> str:
    """``postgresql://...`` without a driver means psycopg (v3) to SQLAlchemy 2.1 (and so to
    MLflow), but nasforge installs psycopg2: name the installed one, so the plain URL a user
    writes works for the store and the tracking database alike. Other URLs are returned as is."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def default_store_url() -> str:
    return f"sqlite:///{home() / 'nasforge.db'}"


def default_tracking_uri() -> str:
    return f"sqlite:///{home() / 'mlflow.db'}"


#: a supernet job trains into ``jobs/JOB/SUPERNET_DIR`` and writes ``TRAINING_PROGRESS_FILE`` there
#: after each epoch ({"epoch", "epochs", "metrics"}), which `status` and `list` read while it trains
SUPERNET_DIR = "supernet"
TRAINING_PROGRESS_FILE = "progress.json"


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask sets it, racing other threads' file creation)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def ordinary_file_mode(*paths: Path | str) -> None:
    """Give files the mode a plain ``open(path, "w")`` would have (``0o666 & ~umask``).
    safetensors 0.8 writes through a temporary file created ``0600`` whatever the umask
    (safetensors#782), so an exported ``model.safetensors`` could be read only by the user who
    exported it, not by a server or container running as another user."""
    mode = 0o666 & ~_umask()
    for p in paths:
        os.chmod(p, mode)


def replace_folder(new: Path, target: Path) -> None:
    """Put the finished folder ``new`` at ``target`` (same parent folder), replacing what was there,
    by renames: a reader finds the old folder or the new one, never a mix or nothing."""
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def job_dir(job_id: str) -> Path:
    """Per-job working folder (supernet checkpoints, level databases, logs)."""
    p = home() / "jobs" / job_id
    p.mkdir(parents=True, exist_ok=True)
    return p


def confined(base: Path, target: str | Path) -> Path:
    """Resolve ``target`` (relative to ``base`` when relative) and refuse anything outside ``base``."""
    base = Path(base).resolve()
    t = Path(target)
    resolved = (t if t.is_absolute() else base / t).resolve()
    if resolved != base and base not in resolved.parents:
        raise ExportError(
            f"export path {str(target)!r} is outside the output folder {base}; "
            "choose a folder inside it (set NASFORGE_HOME to move the output folder)"
        )
    return resolved
