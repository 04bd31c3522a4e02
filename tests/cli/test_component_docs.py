"""docs/components.md: generated from the registered components and kept in step with them."""

from pathlib import Path

from pydantic import BaseModel

from nasforge.component_docs import _registries, components_reference
from nasforge.core.spec_docs import model_of

DOC = Path(__file__).parents[2] / "docs" / "components.md"


def test_docs_match_the_components() -> None:
    assert DOC.read_text() == components_reference(), \
        "regenerate: python -m nasforge.component_docs > docs/components.md"


def test_every_component_and_option_is_documented_with_a_meaning() -> None:
    text = DOC.read_text()
    for _, key, registry in _registries():
        for name in registry.names():
            assert f"### `{name}`" in text, name
            model = getattr(registry.get(name), "Options", None)
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                continue
            todo = [(model, f"{key}.options.")]
            while todo:
                m, prefix = todo.pop()
                for field_name, field in m.model_fields.items():
                    path = prefix + field_name
                    assert f"| `{path}` |" in text, path
                    sub = model_of(field.annotation)
                    assert field.description or sub is not None, f"{name}: {path} has no description"
                    if sub is not None:
                        todo.append((sub, path + "."))
