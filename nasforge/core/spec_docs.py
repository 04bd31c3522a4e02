"""Generate the job-file reference (docs/job-file.md) from the pydantic models in spec.py.

``python -m nasforge.core.spec_docs > docs/job-file.md`` rewrites it; a test fails when the file
and the models disagree, so every key is documented by construction.
"""

from __future__ import annotations

import sys
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from nasforge.core.spec import KNOWN_METRICS, TIMING_FLAGS, JobSpec


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def model_of(tp: Any) -> type[BaseModel] | None:
    """The pydantic model in a field annotation (``Sub``, ``Sub | None``, ``list[Sub]``), or None."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for a in typing.get_args(tp):
        m = model_of(a)
        if m is not None:
            return m
    return None


def _default(field: Any, required: str = "**required**") -> str:
    if field.default is not PydanticUndefined:
        d = field.default
        return "null" if d is None else (f"`{d.value}`" if hasattr(d, "value") else f"`{d}`")
    if field.default_factory is not None:
        v = field.default_factory()
        return "(section defaults)" if isinstance(v, BaseModel) else f"`{v}`"
    return required


def _limits(field: Any) -> str:
    out = []
    for m in field.metadata:
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("min_length", "min length"),
                          ("max_length", "max length"), ("pattern", "pattern")):
            v = getattr(m, attr, None)
            if v is not None:
                out.append(f"{sym} {v}")
    return ", ".join(out)


def _rows(model: type[BaseModel], prefix: str, sections: list[tuple[str, type[BaseModel]]],
          required: str = "**required**") -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        sub_model = model_of(field.annotation)
        sub_doc = (sub_model.__doc__ or "").strip().splitlines() if sub_model is not None else []
        desc = field.description or (sub_doc[0] if sub_doc else "")
        cells = (f"`{path}`", _type_name(field.annotation), _default(field, required), _limits(field), desc)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")  # "a | b" kept in its cell
        if sub_model is not None and (path, sub_model) not in sections:
            sections.append((path, sub_model))
    return rows


def option_rows(model: type[BaseModel], prefix: str, required: str = "**required**") -> list[str]:
    """Table rows for every key of ``model`` under ``prefix``, nested option groups in line;
    ``required``: the default cell of a top-level key without a default (a preset may fill it)."""
    sections: list[tuple[str, type[BaseModel]]] = []
    rows = _rows(model, prefix, sections, required)
    i = 0
    while i < len(sections):
        path, sub = sections[i]
        rows += _rows(sub, f"{path}.", sections)
        i += 1
    return rows


def job_file_reference() -> str:
    lines = [
        "# Job file reference",
        "",
        "Generated from `nasforge/core/spec.py` by `python -m nasforge.core.spec_docs`; a test keeps",
        "it in step with the models. Unknown keys are errors. Component options (`space.options`,",
        "`strategy.options`, `supernet.options`, `training.options`, `predictor.options`) are checked",
        "by the component named beside them (`docs/components.md` lists every component's options).",
        "A key written with no value (`options:`, `training:`) takes its defaults: an empty",
        "section, or the default below; where a key's type admits null, null means what it says",
        "(`budget.evaluations: null`: no limit). A required key left empty is an error.",
        "Relative file paths (`evaluation.dataset.path`, `supernet.checkpoint`, `model.weights`) are",
        "looked up from the current folder, then from the job file's folder, and stored absolute;",
        "a relative `strategy.options.latency_table` (guided) is looked up in NASFORGE_HOME first.",
        "",
        "## Top level",
        "",
        "| key | type | default | limits | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    sections: list[tuple[str, type[BaseModel]]] = []
    lines += _rows(JobSpec, "", sections)
    i = 0
    while i < len(sections):
        path, model = sections[i]
        lines += ["", f"## `{path}`", "", (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else "", "",
                  "| key | type | default | limits | meaning |", "| --- | --- | --- | --- | --- |"]
        lines += _rows(model, f"{path}.", sections)
        i += 1
    lines += ["", "## Metrics", "", "Objectives and constraints name these (constraints as `'metric op bound'`, e.g.",
              "`'latency_ms <= 5'`; `latency_ms@CLASS` names latency on device class CLASS):", "",
              "| metric | meaning |", "| --- | --- |"]
    lines += [f"| `{k}` | {v} |" for k, v in KNOWN_METRICS.items()]
    lines += ["", "Every timed candidate also records how its timing went. These are no objectives or constraints;",
              "`nasforge results JOB --where 'latency_disturbed < 1'` (or `export --best ... --where`) filters by them:",
              "", "| figure | meaning |", "| --- | --- |"]
    lines += [f"| `{k}` | {v} |" for k, v in TIMING_FLAGS.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(job_file_reference())
