"""``python -m benchmarks NAME [--quick]``: run benchmarks/NAME.py and write its results.

Each benchmark module defines ``run(quick: bool) -> dict`` returning its headline keys plus any
detail (``rows``: a list of dicts, ``notes``: text, ``seeds``: list). This harness adds machine,
commit, date and wall time, and writes ``benchmarks/results/NAME.json`` and ``NAME.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def to_markdown(name: str, result: dict) -> str:
    lines = [f"# Benchmark `{name}`", "", f"- date: {result['date']}", f"- commit: {result['commit']}",
             f"- machine: {json.dumps(result['machine'])}", f"- wall time: {result['wall_s']:.1f} s", ""]
    headline = {k: v for k, v in result.items() if not isinstance(v, (list, dict)) and k not in
                ("date", "commit", "wall_s", "notes", "name")}
    lines += ["## Headline", "", "| key | value |", "| --- | --- |"]
    lines += [f"| `{k}` | {v:.4g} |" if isinstance(v, float) else f"| `{k}` | {v} |" for k, v in headline.items()]
    for key, value in result.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            cols = list(dict.fromkeys(c for row in value for c in row))
            lines += ["", f"## {key}", "", "| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
            for row in value:
                cells = [f"{row.get(c):.4g}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in cols]
                lines.append("| " + " | ".join(cells) + " |")
    if result.get("notes"):
        lines += ["", "## Notes", "", str(result["notes"])]
    return "\n".join(lines) + "\n"


def available() -> list[str]:
    """The benchmarks: modules of this package with a ``run`` (helpers start with ``_``)."""
    here = Path(__file__).parent
    return sorted(p.stem for p in here.glob("*.py") if not p.stem.startswith("_")
                  and "\ndef run(" in p.read_text())


def main(argv: list[str] | None = None) -> int:
    names = available()
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description="benchmarks: " + ", ".join(names))
    ap.add_argument("name", help="one of: " + ", ".join(names))
    ap.add_argument("--quick", action="store_true", help="small configuration for a smoke run; results not written")
    args = ap.parse_args(argv)
    if args.name not in names:
        ap.error(f"no benchmark {args.name!r}; choose one of: {', '.join(names)}")
    module = importlib.import_module(f"benchmarks.{args.name}")
    t0 = time.perf_counter()
    result = module.run(quick=args.quick)
    out = {"name": args.name, **result, "machine": machine(), "commit": commit(),
           "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "wall_s": time.perf_counter() - t0}
    text = json.dumps(out, indent=2, default=str)
    if args.quick:
        print(text)
        return 0
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(text + "\n")
    (RESULTS / f"{args.name}.md").write_text(to_markdown(args.name, out))
    print(to_markdown(args.name, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
