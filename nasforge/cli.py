"""``nasforge`` command line. Each command parses its arguments, then calls one function.

User errors (NasforgeError) print one line ``nasforge: error: ...`` and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nasforge.core.errors import NasforgeError

# ------------------------------------------------------------------------------------------------
# commands: each parses what argparse could not, then calls one function of compose, reports,
# console or export (the presentation is console's)


def cmd_validate(args: argparse.Namespace) -> int:
    from nasforge.compose import load_and_validate
    from nasforge.console import yaml_dump

    spec, space = load_and_validate(args.job, address=args.address)
    resolved = spec.to_dict()
    print(json.dumps(resolved, indent=2) if args.json else yaml_dump(resolved))
    if not args.json:
        print(f"# ok: space {space.id}@{space.version} with {len(space.choices())} choices; "
              f"strategy {spec.strategy.name}; budget {spec.budget.evaluations} evaluations", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace, spec: Any, store: Any, job: Any = None) -> int:
    from nasforge.console import run_in_terminal

    return run_in_terminal(spec, store, job, address=args.address, json_out=args.json, quiet=args.quiet)


def cmd_submit(args: argparse.Namespace) -> int:
    from nasforge.compose import load_and_validate, open_store_for, start_detached

    spec, _ = load_and_validate(args.job, address=args.address)
    if args.address and args.address.startswith(("http://", "https://")):
        from nasforge.workers.cluster import submit_to_cluster

        return submit_to_cluster(args.job, spec, address=args.address, wait=not args.detach, json_out=args.json)
    store = open_store_for(spec)
    if args.detach:
        job = start_detached(spec, store, address=args.address)
        print(json.dumps({"job_id": job.id, "state": "created"}) if args.json else job.id)
        return 0
    return _run(args, spec, store)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def cmd_resume(args: argparse.Namespace) -> int:
    from nasforge.compose import open_store_for, resume_plan

    store = open_store_for(url=args.store, job_id=getattr(args, "job_id", None))
    job, spec, nothing = resume_plan(args.job_id, store, evaluations=args.evaluations, address=args.address)
    if spec is None:
        print(nothing)
        return 0
    return _run(args, spec, store, job=job)


def _note_other_stores(current: str, section: str, key: str, went: str, command: str) -> None:
    """Say where the jobs are that this NASFORGE_HOME submitted into other stores by their job file's
    ``section.key`` (store.url, tracking.uri), which `list` / `ui` on the default store do not show."""
    from nasforge.compose import other_stores_of_local_jobs
    from nasforge.store import redact_url

    for url, n in other_stores_of_local_jobs(current, section, key).items():
        print(f"note: {n} job{'s' if n > 1 else ''} submitted from here {went} {redact_url(url)} "
              f"(its job file's {section}.{key}): {command} '{redact_url(url)}'", file=sys.stderr)


def _note_other_job_stores(args: argparse.Namespace, store: Any) -> None:
    if not (args.store or os.environ.get("NASFORGE_STORE_URL")):
        _note_other_stores(store.url, "store", "url", "went to the store", "nasforge list --store")


def cmd_list(args: argparse.Namespace) -> int:
    from nasforge.compose import open_store_for
    from nasforge.console import show_jobs
    from nasforge.reports import job_row

    store = open_store_for(url=args.store, job_id=getattr(args, "job_id", None))
    rows = [job_row(j, store) for j in store.list_jobs()]
    if args.json:
        print(json.dumps(rows))
        return 0
    if rows:
        show_jobs(rows)
    else:
        print(f"no jobs in the store {store.display_url}; `nasforge submit JOB.yaml` runs one")
    _note_other_job_stores(args, store)
    return 0


def _cluster_address(args: argparse.Namespace) -> str | None:
    """The Ray Jobs API address when the command targets a cluster (``--address http://...``)."""
    address = getattr(args, "address", None)
    if address and not address.startswith(("http://", "https://")):
        raise NasforgeError(f"--address {address!r}: status, logs and cancel take the Ray Jobs API address "
                            "http(s)://HEAD:8265")
    return address


def cmd_status(args: argparse.Namespace) -> int:
    from nasforge.compose import open_store_for

    address = _cluster_address(args)
    if address:
        from nasforge.workers.cluster import cluster_status

        return cluster_status(args.job_id, address=address, json_out=args.json)
    from nasforge.console import show_status
    from nasforge.reports import job_status

    store = open_store_for(url=args.store, job_id=getattr(args, "job_id", None))
    row = job_status(store, args.job_id)
    if args.json:
        print(json.dumps(row))
    else:
        show_status(row)
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from nasforge.compose import open_store_for
    from nasforge.console import candidate_table, console
    from nasforge.reports import parse_limits, select_candidates
    from nasforge.store import export_formats

    fmt = args.format
    suffixes = {".json": "json", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
    named = suffixes.get(Path(args.output).suffix.lower()) if args.output else None
    if fmt == "table" and args.output:
        raise NasforgeError("results --format table prints to the terminal; with -o FILE use --format json|csv|parquet")
    if fmt is not None and named is not None and fmt != named:  # it wrote CSV text into out.parquet
        raise NasforgeError(f"results --format {fmt} -o {args.output}: the file's name says {named}; "
                            "drop --format or name the file for the format")
    if fmt is None:  # from the output file's suffix, else the terminal table
        fmt = named if args.output else "table"
        if fmt is None:
            raise NasforgeError(f"results -o {args.output}: name a .json, .csv or .parquet file, or give "
                                "--format json|csv|parquet")
    if fmt == "parquet" and not args.output:
        raise NasforgeError("results --format parquet needs -o FILE (Parquet is binary)")
    store = open_store_for(url=args.store, job_id=getattr(args, "job_id", None))
    cands, note = select_candidates(store, args.job_id, pareto=args.pareto, where=parse_limits(args.where), sort=args.sort)
    if note:  # an empty table (or [] for a script), and why on stderr
        print(f"note: {note}", file=sys.stderr)
    if fmt == "table":
        console().print(candidate_table(cands, f"candidates of {args.job_id}"))
        return 0
    if args.output:
        writer = {"json": export_formats.write_json, "csv": export_formats.write_csv,
                  "parquet": export_formats.write_parquet}[fmt]
        try:
            writer(cands, Path(args.output))
        except OSError as e:  # a folder not writable, /proc, a path that is a folder: one line
            raise NasforgeError(f"results -o {args.output}: cannot write it ({e.strerror or e}); "
                                "name a file in a folder you can write") from None
        print(f"wrote {len(cands)} candidate{'' if len(cands) == 1 else 's'} to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(export_formats.to_json(cands) if fmt == "json" else export_formats.to_csv(cands))
        sys.stdout.write("\n")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from nasforge.compose import open_store_for
    from nasforge.console import show_export
    from nasforge.core.spec import JobSpec
    from nasforge.export import broken_constraints, export_candidate
    from nasforge.reports import parse_limits

    if (args.candidate is None) == (args.best is None):
        which = "neither was given" if args.candidate is None else "not both"
        raise NasforgeError(f"export: give a CANDIDATE (id or key) or --best METRIC ({which})")
    where = parse_limits(args.where)
    store = open_store_for(url=args.store, job_id=getattr(args, "job_id", None))
    done = export_candidate(store, args.job_id, args.output, ref=args.candidate, best=args.best, where=where)
    broken = broken_constraints(JobSpec.model_validate(dict(store.get_job(args.job_id).spec)), done.candidate)
    show_export(done, args.job_id, broken, best=args.best, json_out=args.json)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from nasforge.workers.cluster import cluster_logs

    address = _cluster_address(args)
    if address:
        return cluster_logs(args.job_id, address=address, follow=args.follow)
    from nasforge.core.paths import home

    log = home() / "jobs" / args.job_id / "driver.log"
    if not log.exists():
        raise NasforgeError(f"job {args.job_id}: no driver.log here (the job has not run on this machine; "
                            "for a cluster job give --address http://HEAD:8265)")
    if not args.follow:
        sys.stdout.write(log.read_text(errors="replace"))
        return 0
    from nasforge.compose import open_store_for
    from nasforge.console import follow_log

    return follow_log(open_store_for(url=args.store, job_id=args.job_id), args.job_id, log)


def cmd_cancel(args: argparse.Namespace) -> int:
    from nasforge.compose import cancel_job, open_store_for

    address = _cluster_address(args)
    if address:
        from nasforge.workers.cluster import cluster_cancel

        changed = cluster_cancel(args.job_id, address=address)
        print(f"ray job {args.job_id} stopped" if changed else f"ray job {args.job_id} had already ended")
        return 0

    store = open_store_for(url=args.store, job_id=getattr(args, "job_id", None))
    changed = cancel_job(args.job_id, store)
    print(f"job {args.job_id} cancelled" if changed else f"job {args.job_id} was not running")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from nasforge.compose import check_deletable, delete_job, open_store_for

    ids = list(dict.fromkeys(args.job_ids))
    store = open_store_for(url=args.store, job_id=ids[0])
    jobs = [check_deletable(j, store, along=ids) for j in ids]  # all checked before any is removed
    if not args.yes:
        listing = ", ".join(f"{j.id} ({j.state.value}, {sum(j.counts.values())} candidates)" for j in jobs)
        if not sys.stdin.isatty():
            raise NasforgeError(f"delete {listing}: add --yes to confirm (nothing was deleted)")
        answer = input(f"delete {listing} with its files and MLflow runs? exports are kept [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    # a job that searches on another's supernet goes before it
    for job in sorted(jobs, key=lambda j: j.created_at, reverse=True):
        gone = delete_job(job.id, store)
        for w in gone.warnings:
            print(f"warning: job {job.id}: {w}", file=sys.stderr)
        print(f"deleted job {job.id}: {gone.candidates} candidates, {gone.folder_bytes / 1e6:.1f} MB of job files, "
              f"{gone.mlflow_runs} MLflow runs")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from nasforge.core.paths import default_tracking_uri
    from nasforge.tracking.ui import run_ui

    if args.uri is None:  # like `list`: say where the runs are of jobs whose file chose another MLflow store
        _note_other_stores(default_tracking_uri(), "tracking", "uri", "logged to the MLflow store", "nasforge ui --uri")
    return run_ui(args.uri, host="127.0.0.1", port=args.port)


def cmd_profile_device(args: argparse.Namespace) -> int:
    from nasforge.core.paths import home
    from nasforge.spaces import SPACES
    from nasforge.workers.profile import profile_device

    space = SPACES.get(args.space, "--space")(args.options or {})
    out_path = Path(args.out) if args.out else home() / "latency" / f"{args.space}.json"
    try:  # checked before minutes of timing, not after
        out_path.parent.mkdir(parents=True, exist_ok=True)
        if out_path.is_dir():
            raise IsADirectoryError(21, "a folder")
        import tempfile

        with tempfile.NamedTemporaryFile(dir=out_path.parent, prefix=f".{out_path.name}."):
            pass  # the table is written as a temporary file beside it, then renamed
    except OSError as e:
        raise NasforgeError(f"--out {out_path}: cannot write it ({e.strerror or e}); name a .json file in a folder "
                            "you can write") from None
    out = profile_device(space, out=out_path, warmup=args.warmup, repeats=args.repeats,
                         threads=args.threads, batch_size=args.batch_size, rounds=args.rounds,
                         statistic=args.statistic, reference=args.reference, log=print)
    print(f"latency table written to {out}")
    return 0


# ------------------------------------------------------------------------------------------------
# parser


_JOB_HELP = "job file (YAML); see examples/ and docs/job-file.md"
_QUIET_HELP = "no progress lines and no tables; the job's messages go to stderr"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nasforge", description="Neural architecture search and compression service.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True)

    def with_store(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--store", default=None, help="SQLAlchemy URL of the store (default: NASFORGE_STORE_URL or SQLite in NASFORGE_HOME)")

    sp = sub.add_parser("validate", help="check a job file and print the resolved job")
    sp.add_argument("job", help=_JOB_HELP)
    sp.add_argument("--address", default=None, help="check it for this Ray cluster (the address submit would take): "
                    "that something answers there, and no local CPU / GPU limits")
    sp.add_argument("--json", action="store_true", help="print the resolved job as JSON instead of YAML")
    sp.set_defaults(func=cmd_validate)

    sp = sub.add_parser("submit", help="run a job (foreground by default)")
    sp.add_argument("job", help=_JOB_HELP)
    sp.add_argument("--address", default=None, help="Ray cluster: ray://HOST:10001 or the Jobs API http://HEAD:8265")
    sp.add_argument("--detach", action="store_true", help="return the job id at once; the job runs in the background")
    sp.add_argument("--json", action="store_true", help="print one JSON object when the job ends")
    sp.add_argument("--quiet", action="store_true", help=_QUIET_HELP)
    sp.set_defaults(func=cmd_submit)

    sp = sub.add_parser("resume", help="continue an interrupted job, or a done one with a larger budget")
    sp.add_argument("job_id", help="job id, as submit and list print it")
    sp.add_argument("--evaluations", type=_positive_int, default=None, metavar="N",
                    help="raise the job's evaluation budget to N in all and go on: a done job continues its search "
                         "where it stopped (same strategy state, no candidate evaluated twice)")
    sp.add_argument("--address", default=None, help="Ray cluster to run it on: ray://HOST:10001 or HEAD:6379")
    sp.add_argument("--json", action="store_true", help="print one JSON object when the job ends")
    sp.add_argument("--quiet", action="store_true", help=_QUIET_HELP)
    with_store(sp)
    sp.set_defaults(func=cmd_resume)

    sp = sub.add_parser("list", help="jobs with state, progress, start and duration")
    sp.add_argument("--json", action="store_true", help="one JSON array of the jobs")
    with_store(sp)
    sp.set_defaults(func=cmd_list)

    sp = sub.add_parser("status", help="one job: round, evaluated/pending/failed, best so far")
    sp.add_argument("job_id", help="job id, or the Ray submission id with --address")
    sp.add_argument("--json", action="store_true", help="one JSON object")
    sp.add_argument("--address", default=None, help="Ray Jobs API http://HEAD:8265 (job_id is the submission id)")
    with_store(sp)
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("results", help="candidates of a job")
    sp.add_argument("job_id", help="job id, as submit and list print it")
    sp.add_argument("--pareto", action="store_true", help="only the Pareto front")
    sp.add_argument("--format", choices=("table", "json", "csv", "parquet"), default=None,
                    help="default: from the -o file's suffix, else a table on the terminal")
    sp.add_argument("-o", "--output", default=None, help="write to this file instead of the terminal")
    sp.add_argument("--where", action="append", metavar="LIMIT", help="only done candidates within this limit, "
                    "e.g. --where 'latency_ms <= 0.8' (repeatable; the job file's constraint grammar); "
                    "--where 'latency_disturbed < 1' drops the children whose timing other load disturbed")
    sp.add_argument("--sort", metavar="METRIC", default=None, help="best first by METRIC (its objective's "
                    "direction; else costs and losses ascending, accuracy descending); default: by id")
    with_store(sp)
    sp.set_defaults(func=cmd_results)

    sp = sub.add_parser("export", help="export a candidate for deployment")
    sp.add_argument("job_id", help="job id, as submit and list print it")
    sp.add_argument("candidate", nargs="?", default=None, help="candidate id, key, or the start of a key as tables print it")
    sp.add_argument("--best", default=None, metavar="METRIC", help="export the best done candidate by METRIC (feasible ones first; "
                    "ties go to a Pareto-front member, then to the better other objectives)")
    sp.add_argument("--where", action="append", metavar="LIMIT", help="with --best: only among done candidates within "
                    "this limit, e.g. --best accuracy --where 'latency_ms <= 0.8' (repeatable)")
    sp.add_argument("-o", "--output", required=True, help="folder inside NASFORGE_HOME/exports")
    sp.add_argument("--json", action="store_true", help="print what was written as one JSON object")
    with_store(sp)
    sp.set_defaults(func=cmd_export)

    sp = sub.add_parser("cancel", help="cancel a running job")
    sp.add_argument("job_id", help="job id, or the Ray submission id with --address")
    sp.add_argument("--address", default=None, help="Ray Jobs API http://HEAD:8265 (job_id is the submission id)")
    with_store(sp)
    sp.set_defaults(func=cmd_cancel)

    sp = sub.add_parser("delete", help="remove finished jobs: store rows, job folder, MLflow runs (exports stay)")
    sp.add_argument("job_ids", nargs="+", metavar="job_id", help="job id, as submit and list print it (several at once)")
    sp.add_argument("-y", "--yes", action="store_true", help="do not ask; needed when not at a terminal")
    with_store(sp)
    sp.set_defaults(func=cmd_delete)

    sp = sub.add_parser("logs", help="the driver log of a job (a cluster job's with --address)")
    sp.add_argument("job_id", help="job id (--detach jobs), or the Ray submission id with --address")
    sp.add_argument("--address", default=None, help="Ray Jobs API http://HEAD:8265")
    sp.add_argument("--follow", action="store_true", help="keep printing as the log grows until the job ends")
    with_store(sp)
    sp.set_defaults(func=cmd_logs)

    sp = sub.add_parser("ui", help="the MLflow UI on this project's tracking store (127.0.0.1)")
    from nasforge.tracking.ui import port_number  # stdlib + core only at import

    sp.add_argument("--port", type=port_number, default=5000, help="port on 127.0.0.1 (default 5000)")
    sp.add_argument("--uri", default=None, help="tracking URI (default: SQLite in NASFORGE_HOME)")
    sp.set_defaults(func=cmd_ui)

    sp = sub.add_parser("profile-device", help="build a per-operation latency table on this device")
    from nasforge.spaces import SPACES  # no torch at import

    sp.add_argument("--space", required=True, help="search space: " + ", ".join(n for n in SPACES.names() if n != "compression"))
    sp.add_argument("--options", type=json_object, default=None,
                    help='space options as a JSON object, e.g. \'{"preset": "mnist"}\'')
    sp.add_argument("--out", default=None, help="JSON file (default NASFORGE_HOME/latency/SPACE.json)")
    sp.add_argument("--warmup", type=int_in(0), default=3, help="untimed calls before each op's repeats (default 3)")
    sp.add_argument("--repeats", type=int_in(1), default=10, help="timed calls per op and round (default 10)")
    sp.add_argument("--threads", type=int_in(1), default=1, help="torch threads, as the job's evaluation.latency.threads (default 1)")
    sp.add_argument("--batch-size", type=int_in(1), default=1, help="batch of the timed inputs, as the job's "
                    "evaluation.latency.batch_size (default 1)")
    sp.add_argument("--rounds", type=int_in(1), default=5, help="interleaved passes over all ops (median of rounds)")
    sp.add_argument("--statistic", choices=["median", "min"], default="median",
                    help="per round, median or min of the repeats (min: steadier on a shared machine)")
    sp.add_argument("--reference", action="store_true",
                    help="normalise each timing by a reference op timed just before it (cancels slow spells)")
    sp.set_defaults(func=cmd_profile_device)
    return p


def int_in(low: int) -> Any:
    """argparse type: an integer >= ``low`` (argparse turns the error into one usage line, exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is out of range; give an integer >= {low}")
        return value

    return parse


def json_object(text: str) -> dict[str, Any]:
    """argparse type: a JSON object (a bad one is one usage line naming the problem, exit 2)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid JSON ({e.msg} at column {e.colno}); "
                                         'give an object such as \'{"preset": "mnist"}\'') from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is a JSON {type(value).__name__}; give an object "
                                         'such as \'{"preset": "mnist"}\'')
    return value


def _version() -> str:
    from nasforge import __version__

    return f"nasforge {__version__}"


def _interrupt_on_sigterm() -> None:
    """SIGTERM (``ray job stop``, ``kill``, a pod shutting down) ends a run like Ctrl-C: the job is
    recorded as interrupted, workers are released, and ``nasforge resume`` continues it."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (main() called from a thread): leave it alone
        pass


def quiet_omp_threads() -> None:
    """OpenMP threads that wait by sleeping, not spinning, unless the user chose otherwise.

    torch's OpenMP threads spin between parallel regions by default; with a second job, a test run or
    Ray workers on the same cores the spinning threads take each other's time (with two jobs at once a
    supernet training epoch took 4.2x as long as with sleeping threads; alone, sleeping costs ~1.2x:
    ``python -m benchmarks concurrent_jobs``). Read
    once, when torch is first imported, so this runs before any command imports it; Ray workers started
    by this process inherit it.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _one_line_warnings() -> None:
    """nasforge's own warnings (:class:`NasforgeWarning`) print as one line (``nasforge: warning:
    ...``), not as Python's file:line report with a source line; other libraries' warnings keep
    their form, also where they point at nasforge code (torch's tracer warnings during export)."""
    import warnings

    from nasforge.core.errors import NasforgeWarning

    default = warnings.formatwarning

    def fmt(message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None) -> str:
        if issubclass(category, NasforgeWarning):
            return f"nasforge: warning: {message}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = fmt  # type: ignore[assignment]


def main(argv: Sequence[str] | None = None) -> int:
    quiet_omp_threads()
    _one_line_warnings()
    if not sys.stdout.isatty():  # a log file or a pipe (detached jobs, CI): Ray's worker lines without ANSI colours
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    parser = build_parser()
    args = parser.parse_args(argv)
    _interrupt_on_sigterm()
    try:
        return int(args.func(args) or 0)
    except NasforgeError as e:
        msg = " ".join(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(e)).split())  # one line, no terminal codes
        print(f"nasforge: error: {msg}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("nasforge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `nasforge results JOB --format csv | head` closed the pipe: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit flush must not raise again
        return 141  # 128 + SIGPIPE, as a shell reports a command the pipe stopped


if __name__ == "__main__":
    sys.exit(main())
