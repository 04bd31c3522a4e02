"""Command-line arguments and empty states: bad numbers get one usage line and exit 2; nothing is started."""

from __future__ import annotations

import pytest

from nasforge.cli import main
from nasforge.tracking import ui


@pytest.mark.parametrize("argv, says", [
    (["ui", "--port", "99999"], "argument --port: 99999 is out of range; give a port in 1..65535"),
    (["profile-device", "--space", "bignas_cnn", "--rounds", "0"], "argument --rounds: 0 is out of range"),
    (["profile-device", "--space", "bignas_cnn", "--warmup", "-1"], "argument --warmup: -1 is out of range"),
    (["profile-device", "--space", "bignas_cnn", "--repeats", "ten"], "argument --repeats: 'ten' is not an integer"),
    (["profile-device", "--space", "bignas_cnn", "--options", "{preset: mnist}"],
     "argument --options: '{preset: mnist}' is not valid JSON"),
    (["profile-device", "--space", "bignas_cnn", "--options", '["mnist"]'],
     """argument --options: '["mnist"]' is a JSON list; give an object such as '{"preset": "mnist"}'"""),
])
def test_out_of_range_numbers_exit_2_with_one_line(argv: list[str], says: str, tmp_path, monkeypatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path))
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert says in err
    assert not (tmp_path / "latency").exists() and not (tmp_path / "mlflow.db").exists()


def test_ui_module_refuses_a_bad_port(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        ui.main(["--port", "0"])
    assert e.value.code == 2
    assert "give a port in 1..65535" in capsys.readouterr().err


def test_list_on_an_empty_store_says_how_to_start(tmp_path, monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path))
    assert main(["list"]) == 0
    assert "no jobs in the store sqlite:///" in capsys.readouterr().out
    assert main(["list", "--json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"


def test_ui_on_a_port_in_use_exits_2_before_starting_mlflow(tmp_path, monkeypatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["ui", "--port", str(port)]) == 2
        assert f"127.0.0.1:{port} is not free" in capsys.readouterr().err
        assert ui.main(["--port", str(port)]) == 2
    assert not (tmp_path / "mlflow.db").exists()


def test_openmp_threads_sleep_unless_the_user_chose(tmp_path, monkeypatch) -> None:
    """Spinning OpenMP threads slow two jobs on shared cores (benchmarks/results/concurrent_jobs.md)."""
    import os

    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path))
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert main(["list", "--json"]) == 0
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert main(["list", "--json"]) == 0
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


@pytest.mark.parametrize("argv", [["list"], ["status", "some-job"], ["submit", "examples/quickstart.yaml"]])
def test_a_nasforge_home_that_is_a_file_is_one_line_exit_2(argv: list[str], tmp_path, monkeypatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).parents[2])
    not_a_folder = tmp_path / "home"
    not_a_folder.write_text("a file")
    monkeypatch.setenv("NASFORGE_HOME", str(not_a_folder))
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and f"NASFORGE_HOME={not_a_folder}: cannot be used as nasforge's folder" in err[0], err
    assert not_a_folder.read_text() == "a file"


def test_the_default_home_is_the_current_folder_except_in_a_ray_jobs_driver(tmp_path, monkeypatch) -> None:
    """A driver the Ray Jobs API starts runs in the job's unpacked working_dir, removed with it."""
    from nasforge.core.paths import RAY_JOBS_DRIVER_ENV, home

    monkeypatch.delenv("NASFORGE_HOME", raising=False)
    monkeypatch.delenv(RAY_JOBS_DRIVER_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.chdir(tmp_path)
    assert home() == tmp_path / ".nasforge"
    monkeypatch.setenv(RAY_JOBS_DRIVER_ENV, "{}")
    assert home() == tmp_path / "user" / ".nasforge"
    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path / "chosen"))  # what the head's environment sets wins
    assert home() == tmp_path / "chosen"


@pytest.mark.parametrize("form", ["ray://127.0.0.1:{port}", "127.0.0.1:{port}"])
def test_an_address_nothing_answers_at_is_refused_before_a_job_exists(form: str, tmp_path, monkeypatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A supernet job trains before it connects to Ray: an unreachable address must be refused
    first, in one line (it used to create the job, train, then end in a ConnectionError traceback)."""
    import socket
    from pathlib import Path

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = form.format(port=port)
    monkeypatch.chdir(Path(__file__).parents[2])
    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path))
    assert main(["submit", "examples/quickstart.yaml", "--address", address]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith(f"nasforge: error: --address {address}: nothing answers at"), err
    assert not (tmp_path / "jobs").exists()
    assert main(["list"]) == 0 and "no jobs in the store" in capsys.readouterr().out
    assert main(["submit", "examples/quickstart.yaml", "--address", "ray://a/b"]) == 2
    assert "not a Ray address" in capsys.readouterr().err


def test_progress_lines_once_per_ten_and_the_last_count_of_the_budget(monkeypatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A 48-evaluation job printed 40/48 last, so a log never said the search had finished."""
    from pathlib import Path

    import yaml

    from nasforge import compose
    from nasforge.console import run_in_terminal
    from nasforge.core.spec import JobSpec
    from nasforge.search.driver import Progress

    spec = JobSpec.model_validate({**yaml.safe_load((Path(__file__).parents[2] / "examples" / "quickstart.yaml")
                                                    .read_text()), "budget": {"evaluations": 48}})

    class Stop(Exception):
        pass

    def fake_run_job(spec, store, *, job, address, on_progress, say, on_job=None):  # noqa: ANN001, ANN202
        for n in (3, 9, 10, 10, 14, 27, 40, 44, 48, 48):
            on_progress(Progress(evaluated=n, budget=48, failed=0, round=0, best={"accuracy": 0.9}, elapsed_s=1.0))
        raise Stop

    monkeypatch.setattr(compose, "run_job", fake_run_job)
    with pytest.raises(Stop):
        run_in_terminal(spec, None)
    shown = [line.split(" (")[0] for line in capsys.readouterr().out.splitlines()]
    assert shown == ["evaluated 10/48", "evaluated 27/48", "evaluated 40/48", "evaluated 48/48"]

    def wall_time_run_job(spec, store, *, job, address, on_progress, say, on_job=None):  # noqa: ANN001, ANN202
        for n in (3, 9, 14, 27, 38, 41, 43):  # a wall-time budget ends wherever it ends
            on_progress(Progress(evaluated=n, budget=None, failed=0, round=0, best={"accuracy": 0.9}, elapsed_s=1.0))
        raise Stop

    monkeypatch.setattr(compose, "run_job", wall_time_run_job)
    with pytest.raises(Stop):
        run_in_terminal(spec, None)
    shown = [line.split(" (")[0] for line in capsys.readouterr().out.splitlines()]
    assert shown == ["evaluated 14", "evaluated 27", "evaluated 38", "evaluated 41", "evaluated 43"]


def test_nasforge_warnings_print_as_one_line(monkeypatch) -> None:
    """A warning nasforge raises reads `nasforge: warning: ...`, not a file:line report with a
    source line; other libraries' warnings keep Python's form, also where they point at nasforge
    code (torch's tracer warns about a line of ours while exporting)."""
    import warnings

    import nasforge.compress.discovery as discovery
    from nasforge.cli import _one_line_warnings
    from nasforge.core.errors import NasforgeWarning

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    _one_line_warnings()
    ours = warnings.formatwarning("compression: left as they are: emb (Embedding)", NasforgeWarning,
                                  discovery.__file__, 85)
    assert ours == "nasforge: warning: compression: left as they are: emb (Embedding)\n"
    theirs = warnings.formatwarning("deprecated", DeprecationWarning, pytest.__file__, 1)
    assert theirs.startswith(pytest.__file__) and "DeprecationWarning: deprecated" in theirs
    import torch

    traced = warnings.formatwarning("Converting a tensor to a Python boolean", torch.jit.TracerWarning,
                                    discovery.__file__, 85)
    assert traced.startswith(discovery.__file__) and "TracerWarning: Converting a tensor" in traced


def test_worker_lines_carry_no_colour_codes_into_a_log_file(tmp_path, monkeypatch, capsys) -> None:
    """Ray prefixes the worker lines it forwards with ANSI colours; a detached job's driver.log (or
    any pipe) got escape codes. Off when stdout is not a terminal; a user's own setting wins."""
    import os

    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path))
    monkeypatch.delenv("RAY_COLOR_PREFIX", raising=False)
    assert main(["list"]) == 0  # stdout is captured here, as in a log file
    assert os.environ["RAY_COLOR_PREFIX"] == "0"
    monkeypatch.setenv("RAY_COLOR_PREFIX", "1")
    assert main(["list"]) == 0
    assert os.environ["RAY_COLOR_PREFIX"] == "1"


def test_an_error_is_one_line_without_terminal_codes(monkeypatch, capsys) -> None:
    import nasforge.cli as cli
    from nasforge.core.errors import NasforgeError

    def boom(args):  # e.g. a library's message passed on: bold escape codes and several lines
        raise NasforgeError("model.weights: \x1b[1mdo this\x1b[0m only\nif you trust it")

    monkeypatch.setattr(cli, "cmd_list", boom)
    assert cli.main(["list"]) == 2
    assert capsys.readouterr().err == "nasforge: error: model.weights: do this only if you trust it\n"


def test_a_reader_that_closes_the_pipe_early_gets_no_traceback(tmp_path) -> None:
    """`nasforge ... | head` closes stdout before nasforge is done writing: exit 141 quietly (it
    printed a BrokenPipeError traceback)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NASFORGE_HOME": str(tmp_path)}
    code = ("import sys; from nasforge import cli\n"
            "def chatty(args):\n"
            "    for _ in range(100000):\n"
            "        sys.stdout.write('x' * 100 + '\\n')\n"
            "cli.cmd_list = chatty\n"
            "sys.exit(cli.main(['list']))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    proc.stdout.read(10)
    proc.stdout.close()
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert proc.wait(timeout=60) == 141 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_every_command_and_argument_says_what_it_is_for() -> None:
    """`nasforge CMD --help` explains every argument: none is a bare flag the user has to guess."""
    import argparse

    from nasforge.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    bare = []
    for name, cmd in sub.choices.items():
        helps = {c.dest: c.help for c in sub._choices_actions}
        if not helps.get(name):
            bare.append(name)
        for action in cmd._actions:
            if not isinstance(action, argparse._HelpAction) and not action.help:
                bare.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not bare, f"arguments without help: {bare}"
