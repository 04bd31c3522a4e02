"""OptunaStrategy: Optuna's samplers (TPE, NSGA-II, random) driven through ``study.ask`` / ``study.tell``.

Checked against Optuna 5.0's source:

- Each choice of the space is a ``CategoricalDistribution`` over its value *indices* (0..k-1), so
  any value type works; ``space.from_indices`` turns a proposal into a canonical Arch.
- The study's directions come from ``objectives``; told values are the raw metrics.
- Constraints: Optuna 5.0 deprecates ``constraints_func`` in favour of ``Trial.set_constraint``,
  which both TPESampler and NSGAIISampler read (``FrozenTrial.constraints``; <= 0 feasible). Each
  told trial gets one constraint value per job constraint (its violation, 0 when satisfied), and
  the list is also kept as the user attribute ``nasforge_violations``.
- A failed evaluation is told as ``TrialState.FAIL``.
- A proposal whose canonical arch was already asked in this job is told ``FAIL`` (user attribute
  ``nasforge_duplicate``) at once and the sampler is asked again; after ``max_tries`` such proposals
  in a row, that arch is drawn by a fallback sampler (same derived seed): TPE with a single
  candidate (a draw from its good-trial density, not the argmax), Optuna's RandomSampler for the
  other samplers; so an ask returns ``n`` new archs. The driver never evaluates a key twice.
  (TPE on categorical choices proposes the mode of its good trials once it has few of them; a
  failed duplicate teaches it nothing, so without the fallback it repeats one arch until the
  tries run out.)

Determinism and resume (exact): before every ``study.ask`` the sampler is rebuilt with a seed
derived from the job seed and the number of trials so far, so each proposal is a function of the
told history alone. ``state_dict`` stores that history (params, values, state, user and system
attributes of every trial) and the study's system attributes (NSGA-II caches each generation's
parents there, by trial id); ``load_state_dict`` replays both into a fresh in-memory study, where
trial ids and numbers come out the same. A resumed job therefore asks exactly what the
uninterrupted one would have. While asked archs are still untold, ``state_dict`` returns the
state as it was before those asks (the driver checkpoints after ``tell``; a job resumed from such a
state asks the same archs again).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from nasforge.core.errors import JobSpecError
from nasforge.core.types import Arch, EvalResult
from nasforge.search.base import Strategy, StrategyOptions

#: a violation too large for JSON / Optuna (inf) is stored as this
_BIG = 1e30


#: index grids up to this many points are enumerated for the last unasked archs of a small space
ENUMERATE_LIMIT = 100_000


class OptunaOptions(StrategyOptions):
    sampler: Literal["tpe", "nsgaii", "random"] = Field(default="tpe", description="Optuna sampler")
    sampler_options: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword options of the sampler, e.g. {population_size: 20} for nsgaii or "
                    "{n_startup_trials: 10} for tpe (seed is set by the job)")
    max_tries: int = Field(default=5, ge=1, description="duplicate proposals in a row before an arch is drawn "
                                                        "by the fallback sampler (see the module docstring)")

    @field_validator("sampler_options")
    @classmethod
    def _no_seed(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in ("seed", "constraints_func"):
            if key in v:
                raise ValueError(f"{key!r} is set by nasforge (job seed / job constraints); remove it")
        return v


class OptunaStrategy(Strategy):
    """Optuna samplers through ask/tell; see the module docstring for constraints and resume."""

    Options = OptunaOptions
    options: OptunaOptions

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        import optuna

        optuna.logging.set_verbosity(logging.WARNING)
        self._optuna = optuna
        self.distributions: dict[str, Any] = {
            name: optuna.distributions.CategoricalDistribution(list(range(len(values))))
            for name, values in self.space.choices().items()
        }
        self.history: list[dict[str, Any]] = []
        self.asked: set[str] = set()  # every key asked in this job
        self.pending: dict[str, Any] = {}  # key -> optuna trial asked, not yet told
        try:
            self._sampler(self.seed)
        except TypeError as e:
            raise JobSpecError(f"strategy.options.sampler_options: {e}; see the Optuna docs of "
                               f"the {self._opts.sampler!r} sampler for its keyword options") from e
        self.study = self._new_study()

    @property
    def _opts(self) -> OptunaOptions:
        assert isinstance(self.options, OptunaOptions)
        return self.options

    def _sampler(self, seed: int) -> Any:
        samplers = self._optuna.samplers
        kw = dict(self._opts.sampler_options)
        if self._opts.sampler == "random":
            return samplers.RandomSampler(seed=seed, **kw)
        if self._opts.sampler == "nsgaii":
            return samplers.NSGAIISampler(seed=seed, **kw)
        return samplers.TPESampler(seed=seed, **kw)

    def _new_study(self) -> Any:
        directions: list[Any] = [o.direction.value for o in self.objectives]
        return self._optuna.create_study(directions=directions, sampler=self._sampler(self.seed))

    def _reseed(self, fallback: bool = False) -> None:
        seed = (self.seed * 1_000_003 + len(self.study.trials)) % (2**32)
        self.study.sampler = self._fallback_sampler(seed) if fallback else self._sampler(seed)

    def _fallback_sampler(self, seed: int) -> Any:
        """After repeated duplicates: TPE draws one candidate from its good-trial density instead of
        taking the argmax of many (still guided, but not the same mode again); other samplers draw
        uniformly."""
        if self._opts.sampler == "tpe":
            kw = {**self._opts.sampler_options, "n_ei_candidates": 1}
            return self._optuna.samplers.TPESampler(seed=seed, **kw)
        return self._optuna.samplers.RandomSampler(seed=seed)

    # ---- ask / tell -----------------------------------------------------------------------
    def ask(self, n: int) -> list[Arch]:
        """Up to ``n`` archs not asked before in this job (fewer when the sampler keeps repeating)."""
        if not self.pending:  # the state to save until these asks are told
            self._before_asks = self._state_now()
        out: list[Arch] = []
        tries = duplicates = 0
        while len(out) < n and tries < 2 * self._opts.max_tries * n:
            tries += 1
            self._reseed(fallback=duplicates >= self._opts.max_tries)
            trial = self.study.ask(self.distributions)
            arch = self.space.from_indices([trial.params[name] for name in self.distributions])
            key = arch.key()
            if key in self.asked:
                trial.set_user_attr("nasforge_duplicate", key)
                self._tell_trial(trial, None, None)
                duplicates += 1
                continue
            duplicates = 0
            self.asked.add(key)
            self.pending[key] = trial
            out.append(arch)
        if len(out) < n:  # a small space nearly asked out: the sampler finds its last archs by luck only
            out += self._ask_unseen(n - len(out))
        return out

    def _ask_unseen(self, k: int) -> list[Arch]:
        """Up to ``k`` archs never asked, drawn uniformly (seeded like ``_reseed``) from the whole
        index grid when it has at most ``ENUMERATE_LIMIT`` points, each asked as an enqueued
        (fixed-parameter) trial so that it is told and replayed like any other."""
        card = [len(d.choices) for d in self.distributions.values()]
        if float(np.prod(card, dtype=float)) > ENUMERATE_LIMIT:
            return []
        unseen: dict[str, tuple[int, ...]] = {}
        for idx in itertools.product(*(range(c) for c in card)):
            key = self.space.from_indices(list(idx)).key()
            if key not in self.asked:
                unseen.setdefault(key, idx)
        if not unseen:
            return []
        rng = np.random.default_rng((self.seed * 1_000_003 + len(self.study.trials)) % (2**32))
        picks = [list(unseen.values())[i] for i in rng.permutation(len(unseen))[:k]]
        out: list[Arch] = []
        for idx in picks:
            self.study.enqueue_trial(dict(zip(self.distributions, idx, strict=True)))
            trial = self.study.ask(self.distributions)
            arch = self.space.from_indices([trial.params[name] for name in self.distributions])
            self.asked.add(arch.key())
            self.pending[arch.key()] = trial
            out.append(arch)
        return out

    def tell(self, archs: Sequence[Arch], results: Sequence[EvalResult]) -> None:
        """Tell the study each result (in ask order); results for archs not pending are ignored."""
        if len(archs) != len(results):
            raise ValueError(f"tell got {len(archs)} archs and {len(results)} results")
        F = self.objective_matrix(results)
        for arch, res, row in zip(archs, results, F, strict=True):
            trial = self.pending.pop(arch.key(), None)
            if trial is None:
                continue
            if not res.ok or not np.all(np.isfinite(row)):
                self._tell_trial(trial, None, None)
                continue
            values = [float(res.metrics[o.metric]) for o in self.objectives]
            violations = [min(c.violation(res.metrics), _BIG) for c in self.constraints]
            self._tell_trial(trial, values, violations)

    def _tell_trial(self, trial: Any, values: list[float] | None, violations: list[float] | None) -> None:
        TrialState = self._optuna.trial.TrialState
        if values is not None and self.constraints:
            assert violations is not None
            trial.set_user_attr("nasforge_violations", violations)
            for c, v in zip(self.constraints, violations, strict=True):
                trial.set_constraint(str(c), v)
        state = TrialState.FAIL if values is None else TrialState.COMPLETE
        self.study.tell(trial, values=values, state=state)
        frozen = self.study.trials[trial.number]
        self.history.append({
            "params": dict(frozen.params), "values": values, "state": state.name,
            "user_attrs": dict(frozen.user_attrs), "system_attrs": dict(frozen.system_attrs),
        })

    # ---- state ----------------------------------------------------------------------------
    def _study_system_attrs(self) -> dict[str, Any]:
        # no public accessor in Optuna 5.0; the storage is this strategy's own in-memory one
        storage = self.study._storage
        return dict(storage.get_study_system_attrs(self.study._study_id))

    def _state_now(self) -> dict[str, Any]:
        return {"history": list(self.history), "asked": sorted(self.asked),
                "study_system_attrs": self._study_system_attrs()}

    def extra_state(self) -> dict[str, Any]:
        return self._before_asks if self.pending else self._state_now()

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        TrialState = self._optuna.trial.TrialState
        self.study = self._new_study()
        self.history = [dict(h) for h in state.get("history", [])]
        self.study.add_trials([
            self._optuna.trial.create_trial(
                params=h["params"], distributions=self.distributions,
                values=h["values"], state=TrialState[h["state"]],
                user_attrs=h["user_attrs"], system_attrs=h["system_attrs"],
            ) for h in self.history
        ])
        storage = self.study._storage
        for k, v in state.get("study_system_attrs", {}).items():
            storage.set_study_system_attr(self.study._study_id, k, v)
        self.asked = set(state.get("asked", []))
        self.pending = {}
