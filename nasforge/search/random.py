"""RandomSearch: uniform samples of the space, never the same key twice in a job."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field

from nasforge.core.types import Arch, EvalResult
from nasforge.search.base import Strategy, StrategyOptions


class RandomSearchOptions(StrategyOptions):
    max_tries: int = Field(default=1000, ge=1, description="samples drawn per arch before giving up on a new key")


class RandomSearch(Strategy):
    """Uniform random search. ``ask`` returns fewer archs only when the space looks exhausted."""

    Options = RandomSearchOptions
    options: RandomSearchOptions

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.seen: set[str] = set()

    def ask(self, n: int) -> list[Arch]:
        out: list[Arch] = []
        tries = 0
        while len(out) < n and tries < self.options.max_tries * max(n, 1):
            tries += 1
            arch = self.space.sample(self.rng)
            key = arch.key()
            if key in self.seen:
                continue
            self.seen.add(key)
            out.append(arch)
        return out

    def tell(self, archs: Sequence[Arch], results: Sequence[EvalResult]) -> None:
        pass

    def finished_why(self) -> str:
        tries = self.options.max_tries
        return f"the space looks exhausted: {len(self.seen)} architectures asked, none new in {tries} samples each"

    def extra_state(self) -> dict[str, Any]:
        return {"seen": sorted(self.seen)}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.seen = set(state.get("seen", []))
