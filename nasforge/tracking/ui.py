"""``nasforge ui``: the MLflow UI on this project's tracking store, bound to 127.0.0.1.

Also runnable as ``python -m nasforge.tracking.ui [--port P] [--uri URI]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence

from nasforge.core.errors import ResourceUnavailableError
from nasforge.core.paths import default_tracking_uri


def ui_command(uri: str, host: str = "127.0.0.1", port: int = 5000, *, workers: int = 1) -> list[str]:
    """The ``mlflow server`` command line serving ``uri`` (a database URI) on ``host:port``."""
    from nasforge.tracking.mlflow_tracker import default_artifact_root

    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host,
           "--port", str(port), "--workers", str(workers)]
    root = default_artifact_root(uri)
    if root is not None:
        cmd += ["--default-artifact-root", root]
    return cmd


def _check_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is free
        try:
            sock.bind((host, port))
        except OSError as e:
            raise ResourceUnavailableError(f"--port {port}: {host}:{port} is not free ({e.strerror}); "
                                           "pick another port with --port") from None


def run_ui(uri: str | None = None, host: str = "127.0.0.1", port: int = 5000) -> int:
    """Serve the MLflow UI for ``uri`` (default: ``NASFORGE_HOME/mlflow.db``) until Ctrl-C.

    Creates the tracking database first when it does not exist. Returns the server's exit code
    (0 after Ctrl-C / SIGTERM).
    """
    from nasforge.tracking.mlflow_tracker import apply_http_env_defaults, ensure_tracking_store

    apply_http_env_defaults()
    _check_free(host, port)  # mlflow server logs a bind error and exits 0; say it here instead
    uri = ensure_tracking_store(uri or default_tracking_uri())
    cmd = ui_command(uri, host, port)
    print(f"MLflow UI for {uri} at http://{host}:{port} (Ctrl-C stops it)", flush=True)
    # The UI needs no GenAI job runner (it would start a pool of huey consumers on this machine).
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")}
    proc = subprocess.Popen(cmd, start_new_session=True, env=env)

    def _stop(*_: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its gunicorn/uvicorn workers
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def port_number(text: str) -> int:
    """argparse type of ``--port`` (here and in ``nasforge ui``): an integer in 1..65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is out of range; give a port in 1..65535")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nasforge.tracking.ui", description=__doc__)
    parser.add_argument("--port", type=port_number, default=5000)
    parser.add_argument("--uri", default=None, help="tracking URI (default: NASFORGE_HOME/mlflow.db)")
    args = parser.parse_args(argv)
    try:
        return run_ui(args.uri, port=args.port)
    except ResourceUnavailableError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
