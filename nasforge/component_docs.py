"""Generate the component options reference (docs/components.md) from the registered components.

``python -m nasforge.component_docs > docs/components.md`` rewrites it; a test fails when the file
and the components disagree. Every space, supernet, trainer, strategy and predictor a job file can
name is listed with the options it accepts under ``space.options``, ``supernet.options``,
``training.options``, ``strategy.options`` and ``predictor.options``.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from pydantic import BaseModel

from nasforge.core.registry import Registry
from nasforge.core.spec_docs import option_rows


def _registries() -> list[tuple[str, str, Registry[Any]]]:
    from nasforge.predictors import PREDICTORS
    from nasforge.search import STRATEGIES
    from nasforge.spaces import SPACES
    from nasforge.supernets import SUPERNETS, TRAINERS

    return [("Spaces", "space", SPACES), ("Supernets", "supernet", SUPERNETS), ("Trainers", "training", TRAINERS),
            ("Strategies", "strategy", STRATEGIES), ("Predictors", "predictor", PREDICTORS)]


def _summary(cls: type) -> str:
    """The first sentence of a class docstring, as Markdown, without pointers into the source."""
    doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
    doc = re.sub(r"\s*\(see (the )?module doc(string)?\)", "", doc)
    doc = re.sub(r"; see the module docstring for [^.]*", "", doc)
    doc = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", doc).replace("``", "`")
    return doc


def components_reference() -> str:
    lines = [
        "# Component options reference",
        "",
        "Generated from the registered components by `python -m nasforge.component_docs`; a test keeps",
        "it in step with the code. A job file names a component (`space.name`, `supernet.name`,",
        "`training.trainer`, `strategy.name`, `predictor.name`) and sets its options under the",
        "`options` key beside it; unknown options are errors. `docs/job-file.md` documents the rest of",
        "the job file.",
    ]
    for title, key, registry in _registries():
        name_key = "training.trainer" if key == "training" else f"{key}.name"
        lines += ["", f"## {title} (`{name_key}`)"]
        for name in registry.names():
            cls = registry.get(name)
            lines += ["", f"### `{name}`", ""]
            summary = _summary(cls)
            if summary:
                lines += [summary, ""]
            extra = []
            if key == "supernet":
                extra.append(f"Serves the space{'s' if len(cls.spaces) > 1 else ''} "
                             + ", ".join(f"`{s}`" for s in cls.spaces)
                             + "; trained by `training.trainer: " + "` or `".join(cls.trainers) + "`.")
            lines += extra + ([""] if extra else [])
            model = getattr(cls, "Options", None)
            if not isinstance(model, type) or not issubclass(model, BaseModel) or not model.model_fields:
                lines.append("No options.")
                continue
            lines += ["| key | type | default | limits | meaning |", "| --- | --- | --- | --- | --- |"]
            presets = sorted(getattr(model, "PRESETS", {}) or {})
            lines += option_rows(model, f"{key}.options.", "from `preset`" if presets else "**required**")
            if presets:
                lines += ["", "A key left out takes its value from the `preset` (" + ", ".join(f"`{p}`" for p in presets)
                          + "); the keys you give override it."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(components_reference())
