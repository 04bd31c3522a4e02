from pathlib import Path

from nasforge.core.spec import JobSpec
from nasforge.core.spec_docs import job_file_reference, model_of

DOC = Path(__file__).parents[2] / "docs" / "job-file.md"


def test_docs_match_the_models() -> None:
    assert DOC.read_text() == job_file_reference(), "regenerate: python -m nasforge.core.spec_docs > docs/job-file.md"


def test_every_key_is_documented() -> None:
    text = DOC.read_text()
    seen: set[type] = set()

    def walk(model: type, prefix: str) -> None:
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            path = prefix + name
            assert f"| `{path}` |" in text, path
            sub = model_of(field.annotation)
            assert field.description or sub is not None, f"{path} has no description"
            if sub is not None and sub not in seen:
                seen.add(sub)
                walk(sub, path + ".")

    walk(JobSpec, "")
