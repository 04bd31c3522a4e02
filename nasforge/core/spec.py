"""The job file: YAML text -> validated ``JobSpec`` (pydantic, unknown keys rejected).

``load_job_file`` is the only way a job file enters nasforge. Every problem becomes one
``JobSpecError`` whose message starts with the file and the key path (``budget.evaluations``)
and says what is allowed. Registry names (space, strategy, ...) and component options are
checked later by ``nasforge.compose.validate`` before anything is written.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nasforge.core.errors import JobSpecError
from nasforge.core.types import Constraint, Direction, Objective

MAX_JOB_FILE_BYTES = 1_000_000
MAX_YAML_DEPTH = 32
MAX_YAML_NODES = 20_000

#: Metrics a job may name in objectives / constraints. ``latency_ms@CLASS`` names the latency
#: measured on device class CLASS (see workers.device_classes).
KNOWN_METRICS: dict[str, str] = {
    "accuracy": "top-1 accuracy on the evaluation split (0..1)",
    "loss": "cross-entropy on the evaluation split (per token for language models)",
    "perplexity": "exp(loss) of a language model on the evaluation split",
    "latency_ms": "measured latency of one forward pass (ms): median of the repeats (min with "
    "evaluation.latency.statistic: min)",
    "latency_p90_ms": "90th percentile measured latency (ms)",
    "flops": "multiply-accumulates of one forward pass at batch size 1",
    "params": "parameter count",
    "model_bytes": "bytes of the weights as stored (packed for compressed models)",
    "peak_memory_mb": "most memory (MiB) one forward pass at evaluation.latency.batch_size holds at once: "
    "weights, input and live activations (compression jobs: the weights at their packed size)",
    "kl": "KL divergence of outputs to the uncompressed model (compression jobs)",
    "bops": "bit operations: MACs x weight bits x activation bits (compression jobs)",
    "avg_bits": "parameter-weighted average weight bit-width (compression jobs)",
    "sparsity": "fraction of prunable weights set to zero (compression jobs)",
}
#: Figures every timed candidate also records: not searched on, but ``--where`` may filter by them
#: (``--where 'latency_disturbed < 1'`` keeps the candidates whose timing was undisturbed).
TIMING_FLAGS: dict[str, str] = {
    "latency_attempts": "timings made of this candidate (more than 1: a disturbed timing was retried)",
    "latency_disturbed": "1 when the timing stayed disturbed by other load after its retries, else 0",
}
_METRIC_RE = re.compile(r"^(?P<base>[a-z_0-9]+)(@(?P<cls>[A-Za-z0-9_.:-]+))?$")


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'latency_ms'?)`` for the choice closest to a misspelt or shortened name
    (``latency`` -> ``latency_ms``; case aside), or ''."""
    import difflib

    names = {k.lower(): k for k in choices}  # matched without case: FashionMNIST for fashionmnist
    base = name.lower()
    close = difflib.get_close_matches(base, list(names), n=1, cutoff=0.6) or \
        [k for k in names if k.startswith(base)][:1]
    return f" (did you mean {names[close[0]]!r}?)" if close else ""


def check_metric(name: str, *, flags: bool = False) -> str:
    """``name`` when it is a metric a job may name (``flags``: or one of :data:`TIMING_FLAGS`, which
    only filters such as ``--where`` may name); else a ValueError with the closest name."""
    known = {**KNOWN_METRICS, **TIMING_FLAGS} if flags else KNOWN_METRICS
    m = _METRIC_RE.match(name)
    if m and not flags and m.group("base") in TIMING_FLAGS:
        bound = "<= 1" if m.group("base") == "latency_attempts" else "< 1"  # timed once / undisturbed
        raise ValueError(f"{name!r} records how a timing went and is not searched on; filter the results by it with "
                         f"nasforge results JOB --where '{name} {bound}'")
    if not m or m.group("base") not in known:
        hint = did_you_mean(m.group("base") if m else name, known)
        raise ValueError(f"unknown metric {name!r}{hint}; known metrics: {', '.join(known)}")
    if m.group("cls") and m.group("base") not in ("latency_ms", "latency_p90_ms", *TIMING_FLAGS):
        raise ValueError(f"only latency metrics take a device class suffix, got {name!r}")
    return name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NamedComponent(_Strict):
    """A registry name plus free-form options validated by the component itself."""

    name: str = Field(description="registered name of the component")
    options: dict[str, Any] = Field(default_factory=dict, description="component options")


class SpaceSpec(NamedComponent):
    """Search space: ``bignas_cnn``, ``elastic_vit``, ``compression``, ..."""


class SupernetSpec(_Strict):
    """Supernet search: bignas, elastic_vit, lm_transformer or pooling_mixture, and its options (mixture: MoS)."""

    name: str = Field(description="registered supernet family, e.g. bignas")
    options: dict[str, Any] = Field(default_factory=dict, description="supernet options (see the family)")
    checkpoint: str | None = Field(default=None, description=(
        "a trained supernet: a job's folder (NASFORGE_HOME/jobs/JOB), its supernet folder, or a .safetensors "
        "file; skips training"))


#: ``model.source`` prefixes that name no Python module (``job:`` only to refuse it with a hint)
NON_IMPORT_SOURCES = ("timm:", "export:", "job:")


class ModelSpec(_Strict):
    """A trained model to compress: ``timm:NAME``, ``export:NAME`` or ``package.module:factory``."""

    source: str = Field(description="timm:NAME, export:NAME (a `nasforge export` folder) or package.module:factory")
    weights: str | None = Field(default=None, description="weights file (safetensors or .pt)")
    options: dict[str, Any] = Field(default_factory=dict, description="factory keyword arguments")
    search_path: list[str] = Field(
        default_factory=list,
        description="folders a package.module source is imported from besides the current folder; the folder "
        "above the job file that holds the module is added when a job file is loaded",
    )

    @property
    def module(self) -> str | None:
        """``package.module`` of a ``package.module:factory`` source; None for the other kinds."""
        module, colon, _ = self.source.partition(":")
        if not colon or self.source.startswith(NON_IMPORT_SOURCES) or not module:
            return None
        return module if all(p.isidentifier() for p in module.split(".")) else None


class TrainingSpec(_Strict):
    """How the supernet is trained before the search (supernet jobs only)."""

    trainer: str = Field(default="sandwich", description="registered trainer: sandwich (bignas, elastic_vit, "
                                                         "lm_transformer) or pooling_mixture (the pooling_mixture supernet)")
    epochs: float = Field(default=8, gt=0, le=10_000, description="passes over the training split")
    batch_size: int = Field(default=128, ge=1, le=65_536, description="training batch size")
    lr: float = Field(default=0.05, gt=0, le=10, description="peak learning rate (after warm-up)")
    warmup_epochs: float = Field(default=0.5, ge=0, description="linear learning-rate warm-up")
    weight_decay: float = Field(default=1e-5, ge=0, description="weight decay (largest child only, BigNAS)")
    options: dict[str, Any] = Field(default_factory=dict, description="trainer options")



class StrategySpec(NamedComponent):
    """Search strategy: ``random``, ``nsga2``, ``optuna``, ``evopress``, ``guided``, ..."""


class ObjectiveSpec(_Strict):
    """One objective: a metric and whether to maximize or minimize it."""

    metric: str = Field(description="a metric name (see Metrics below)")
    direction: Direction = Field(description="maximize | minimize (max, min and any case are taken)")

    _check = field_validator("metric")(lambda cls, v: check_metric(v))

    @field_validator("direction", mode="before")
    @classmethod
    def _direction_words(cls, v: Any) -> Any:
        """max / min, any case, and the British spellings mean what they say."""
        if isinstance(v, str):
            w = v.strip().lower()
            return {"max": "maximize", "maximise": "maximize", "min": "minimize", "minimise": "minimize"}.get(w, w)
        return v

    def to_objective(self) -> Objective:
        return Objective(self.metric, self.direction)


_CONSTRAINT_RE = re.compile(r"^\s*([A-Za-z_0-9@.:-]+)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*$")


class ConstraintSpec(_Strict):
    """A hard limit, written as a string 'latency_ms <= 5' or as a mapping of these keys."""

    metric: str = Field(description="a metric name")
    op: Literal["<=", "<", ">=", ">"] = Field(description="comparison")
    bound: float = Field(description="the limit")

    # validated with context {"flags": True} (``--where``), the timing flags are names too
    _check = field_validator("metric")(lambda cls, v, info: check_metric(v, flags=bool((info.context or {}).get("flags"))))

    @model_validator(mode="before")
    @classmethod
    def _parse_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            m = _CONSTRAINT_RE.match(data)
            if not m:
                parts = [p for p in re.split(r"\s+and\s+|&&|&|,", data) if p.strip()]
                if len(parts) > 1 and all(_CONSTRAINT_RE.match(p) for p in parts):
                    listed = ", ".join(repr(p.strip()) for p in parts)
                    raise ValueError(f"constraint {data!r} holds {len(parts)} limits ({listed}); write one per constraint")
                raise ValueError(f"constraint {data!r} must look like 'latency_ms <= 5'")
            return {"metric": m.group(1), "op": m.group(2), "bound": float(m.group(3))}
        return data

    def to_constraint(self) -> Constraint:
        return Constraint(self.metric, self.op, self.bound)


class BudgetSpec(_Strict):
    """When the search stops: after `evaluations` real evaluations and/or `wall_time_s`."""

    evaluations: int | None = Field(default=100, ge=1, le=10_000_000, description="candidates to evaluate for real")
    wall_time_s: float | None = Field(default=None, gt=0, description="stop after this many seconds of search")
    batch_size: int = Field(default=20, ge=1, le=100_000, description="candidates asked per round")

    @model_validator(mode="after")
    def _some_limit(self) -> BudgetSpec:
        if self.evaluations is None and self.wall_time_s is None:
            raise ValueError("set budget.evaluations or budget.wall_time_s (or both)")
        return self


#: the datasets that ship inside an installed package and read no ``path`` (``nasforge.data.DATASETS``
#: knows them too; a test keeps the two in step: core may not import data)
SHIPPED_DATASETS = ("mnist5k", "digits", "pystdlib")


class DatasetSpec(_Strict):
    """The dataset: shipped (mnist5k, digits) or yours (class folders, .npz/.parquet, torchvision on disk)."""

    name: str = Field(default="mnist5k", description=(
        "mnist5k | digits | folder | arrays | torchvision:NAME (images: NAME one of MNIST, FashionMNIST, KMNIST, "
        "USPS, CIFAR10, CIFAR100, SVHN, already on disk); pystdlib | text (byte tokens)"))
    path: str | None = Field(default=None, description=(
        "folder of class folders of images; .npz (inputs X / images, labels y / labels); .parquet "
        "(label or y, and an image column of encoded images or one column per pixel); torchvision:NAME: the root "
        "folder torchvision downloaded it to; text: a text file or a folder of them"))
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="seed of the deterministic train/val/test split")
    val_fraction: float = Field(default=0.1, gt=0, lt=1, description="share of the data held out for validation")
    test_fraction: float = Field(default=0.1, gt=0, lt=1, description="share of the data held out for test")
    seq_len: int = Field(default=64, ge=1, le=65_536, description="text datasets: tokens per training sequence")
    normalize: Literal["standardize", "unit", "imagenet", "custom"] = Field(
        default="standardize",
        description="what the model sees, after pixels are scaled to 0..1: standardize (per channel, with the "
        "train split's mean and std), unit (0..1 as they are), imagenet (ImageNet's RGB mean and std, as most "
        "timm models are trained), custom (the mean and std given here). Set it to how a model you compress "
        "was trained",
    )
    pixel_max: float | None = Field(default=None, gt=0, description=(
        "arrays: the raw value of full intensity, which becomes 1.0 (255 for 8-bit images, 65535 for 16-bit, 16 for "
        "scikit-learn's digits, 1 for floats already 0..1); default: 255 when any value is above 1.5, else 1"))
    mean: list[float] | None = Field(default=None, description="normalize: custom: per-channel mean (one value, or one per channel)")
    std: list[float] | None = Field(default=None, description="normalize: custom: per-channel std, each > 0")

    @model_validator(mode="after")
    def _custom_stats(self) -> DatasetSpec:
        if self.path is not None and self.name in SHIPPED_DATASETS:  # it was ignored
            raise ValueError(f"path: dataset {self.name} ships inside an installed package and reads no path; "
                             "remove it, or name your files with name: folder, arrays or text")
        if self.pixel_max is not None and self.name != "arrays":  # the others know their pixel range
            raise ValueError(f"pixel_max: applies to dataset arrays (.npz / .parquet pixels) only; remove it for {self.name}")
        given = self.mean is not None or self.std is not None
        if self.normalize == "custom" and (self.mean is None or self.std is None):
            raise ValueError("normalize: custom needs both mean and std (lists, one value or one per channel)")
        if self.normalize != "custom" and given:
            raise ValueError("mean and std are used only with normalize: custom; add it or remove them")
        if self.mean is not None and self.std is not None:
            if not self.mean or len(self.mean) != len(self.std):
                raise ValueError("mean and std must be non-empty lists of the same length")
            if any(not v > 0 for v in self.std):
                raise ValueError("every std value must be > 0")
        return self


class LatencySpec(_Strict):
    """How latency is measured on each worker: warm-up, then timed repeats."""

    enabled: bool = Field(default=True, description="measure latency at all")
    batch_size: int = Field(default=1, ge=1, le=4096, description="batch size of the timed forward pass")
    warmup: int = Field(default=5, ge=0, le=10_000, description="untimed runs first")
    repeats: int = Field(default=20, ge=1, le=100_000, description="timed runs; median and p90 reported")
    statistic: Literal["median", "min"] = Field(
        default="median",
        description="what latency_ms reports over the repeats: median (typical call) or min (the "
        "uncontended call; reproduces better on a shared, noisy machine)",
    )
    reference: bool = Field(
        default=False,
        description="normalise each timing by the supernet's largest child timed just before it (cancels a "
        "shared machine's slow spells; latency_raw_ms keeps the unscaled figure)",
    )
    threads: int = Field(default=1, ge=1, le=256, description="torch threads on CPU workers")
    retries: int = Field(
        default=2, ge=0, le=20,
        description="times a child is timed again when other load disturbed its timing (statistic median: the "
        "median call took over 2x the fastest); the calmest timing is kept, and one still disturbed is flagged "
        "latency_disturbed=1 and not cached",
    )
    cache: bool = Field(
        default=True,
        description="reuse the latency recorded for the same child on the same device profile by any job in "
        "this store (never timed twice; latency_cached=1 marks it); false: time every child afresh",
    )
    device_classes: list[str] = Field(
        default_factory=list, description="Ray custom resources 'device:CLASS' to measure on"
    )


class EvaluationSpec(_Strict):
    """How each candidate is scored."""

    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    split: Literal["val", "test"] = Field(default="val", description="split candidates are scored on")
    batch_size: int = Field(default=256, ge=1, le=65_536, description="batch size of accuracy evaluation")
    max_images: int | None = Field(default=None, ge=1, description="score on at most this many images")
    bn_recalibration_images: int = Field(default=256, ge=0, le=1_000_000, description="training images used to recalibrate a child's BN statistics")
    latency: LatencySpec = Field(default_factory=LatencySpec)


class WorkersSpec(_Strict):
    """The pool of Ray actors that evaluate candidates."""

    count: int = Field(default=2, ge=1, le=4096, description="Ray actors evaluating candidates (a local instance "
                       "takes up to 4 worker CPUs per core; more needs --address)")
    cpus: float = Field(default=1, gt=0, le=1024, description="CPUs per worker")
    gpus: float = Field(default=0, ge=0, le=64, description="GPUs per worker")
    resources: dict[str, float] = Field(default_factory=dict, description="Ray custom resources per worker")
    max_retries: int = Field(default=2, ge=0, le=100, description="re-runs of a candidate whose worker died (each runs alone on an idle worker)")
    chunk_size: int = Field(default=4, ge=1, le=10_000, description="candidates per Ray call")


class StoreSpec(_Strict):
    """Where jobs and candidates are stored (any SQLAlchemy URL)."""

    url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in NASFORGE_HOME")


class TrackingSpec(_Strict):
    """MLflow tracking: one parent run per job, one child run per candidate."""

    enabled: bool = Field(default=True, description="log to MLflow")
    uri: str | None = Field(default=None, description="MLflow tracking URI; default SQLite in NASFORGE_HOME")
    experiment: str = Field(default="nasforge", description="MLflow experiment name")


class PredictorSpec(_Strict):
    """An accuracy predictor for predictor-guided strategies."""

    name: str = Field(description="registered predictor, e.g. mlp_ensemble, gbt, gp")
    options: dict[str, Any] = Field(default_factory=dict, description="predictor options")


class JobSpec(_Strict):
    """A whole job file."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$", description="job name (letters, digits, _ . -); prefix of the job id")
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="seeds the strategy, training and sampling: same seed, same candidates")
    space: SpaceSpec
    supernet: SupernetSpec | None = None
    model: ModelSpec | None = None
    training: TrainingSpec | None = None
    strategy: StrategySpec
    objectives: list[ObjectiveSpec] = Field(min_length=1, max_length=8)
    constraints: list[ConstraintSpec] = Field(default_factory=list)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    workers: WorkersSpec = Field(default_factory=WorkersSpec)
    predictor: PredictorSpec | None = None
    store: StoreSpec = Field(default_factory=StoreSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    export_dir: str = Field(
        default="exports", description="folder for exports, relative to NASFORGE_HOME; may not escape it"
    )

    @field_validator("export_dir")
    @classmethod
    def _confined(cls, v: str) -> str:
        p = Path(v)
        if p.is_absolute() or ".." in p.parts:
            raise ValueError("must be a relative path inside NASFORGE_HOME (no '..', not absolute)")
        return v

    @model_validator(mode="after")
    def _workload(self) -> JobSpec:
        if (self.supernet is None) == (self.model is None):
            raise ValueError("give exactly one of 'supernet' (supernet search) or 'model' (compression)")
        if self.training is not None and self.supernet is None:
            raise ValueError("'training' applies to supernet jobs only; remove it or add 'supernet'")
        metrics = [o.metric for o in self.objectives]
        if len(set(metrics)) != len(metrics):
            raise ValueError("objectives name the same metric twice")
        return self

    def objective_list(self) -> list[Objective]:
        return [o.to_objective() for o in self.objectives]

    def constraint_list(self) -> list[Constraint]:
        return [c.to_constraint() for c in self.constraints]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ------------------------------------------------------------------------------------------------
# Loading


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors/aliases (no billion-laughs) and deep nesting."""

    def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise JobSpecError(
                f"line {event.start_mark.line + 1}: YAML aliases/anchors are not allowed in job files"
            )
        self._nf_depth = getattr(self, "_nf_depth", 0) + 1
        self._nf_nodes = getattr(self, "_nf_nodes", 0) + 1
        try:
            if self._nf_depth > MAX_YAML_DEPTH:
                raise JobSpecError(f"nesting deeper than {MAX_YAML_DEPTH} levels is not allowed")
            if self._nf_nodes > MAX_YAML_NODES:
                raise JobSpecError(f"more than {MAX_YAML_NODES} YAML nodes is not allowed")
            return super().compose_node(parent, index)
        finally:
            self._nf_depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        """A key written twice in one mapping is an error (YAML would keep the last silently, so a
        second ``budget:`` block pasted below the first would quietly replace it)."""
        if isinstance(node, yaml.MappingNode):
            first_line: dict[str, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                line = key_node.start_mark.line + 1
                if key_node.value in first_line:
                    raise JobSpecError(f"line {line}: key {key_node.value!r} appears twice in one mapping (first on "
                                       f"line {first_line[key_node.value]}); keep one")
                first_line[key_node.value] = line
        return super().construct_mapping(node, deep=deep)


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The section model of a field, possibly optional (``TrainingSpec | None``), else None."""
    kinds = get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    return next((k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)), None)


def _empty_keys_to_defaults(data: Any, model: type[BaseModel]) -> Any:
    """A key written with no value in a job file (``options:``, ``training:``) is the key with
    its defaults: an empty section for a section, the default for anything else, unless null
    itself means something for that key (``budget.evaluations: null``: no limit). A required key
    left empty stays empty and gets "is empty" from ``_format_validation_error``. Applied to the
    file's text only: a stored spec's nulls (``supernet: null`` on a compression job) are kept."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for key, value in data.items():
        field = model.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            continue
        section = _nested_model(field.annotation)
        if value is None:
            if section is not None:
                out[key] = {}
            elif type(None) in get_args(field.annotation):
                continue
            elif not field.is_required():
                del out[key]
        elif section is not None:
            out[key] = _empty_keys_to_defaults(value, section)
    return out


def _format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-"))
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key; remove it or check its spelling (see docs/job-file.md)"
    elif first["type"] == "missing":
        msg = "required key is missing"
    elif first.get("input", ...) is None:
        msg = f"is empty; give it a value ({msg[0].lower()}{msg[1:]}; see docs/job-file.md)"
    msg = msg.removeprefix("Value error, ")
    named = re.match(r"([a-z_][a-z0-9_]*): ", msg)
    if first["type"] == "value_error" and named and loc:  # a section's check that names one of its keys
        loc, msg = f"{loc}.{named.group(1)}", msg[named.end():]
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{loc or '<top>'}: {msg}{more}"


def parse_job_text(text: str, source: str = "<job>") -> JobSpec:
    if not text.strip():
        raise JobSpecError(f"{source}: the job file is empty; see examples/quickstart.yaml")
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - SafeLoader subclass
    except JobSpecError as e:
        raise JobSpecError(f"{source}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise JobSpecError(f"{source}: {where}not valid YAML ({problem})") from None
    if data is None:
        raise JobSpecError(f"{source}: the job file is empty (only comments); see examples/quickstart.yaml")
    if not isinstance(data, dict):
        raise JobSpecError(
            f"{source}: the top level must be a mapping of keys (name, space, strategy, ...), "
            f"got {type(data).__name__}"
        )
    try:
        return JobSpec.model_validate(_empty_keys_to_defaults(data, JobSpec))
    except ValidationError as e:
        raise JobSpecError(f"{source}: {_format_validation_error(e)}") from None


def load_job_file(path: str | Path) -> JobSpec:
    """Read and validate a job file. Raises JobSpecError (never anything else for bad input)."""
    p = Path(path)
    if p.is_dir():
        raise JobSpecError(f"{p}: is a folder; give the job file (e.g. {p / 'job.yaml'})")
    if not p.is_file():
        raise JobSpecError(f"{p}: no such job file")
    size = p.stat().st_size
    if size > MAX_JOB_FILE_BYTES:
        raise JobSpecError(f"{p}: job file is {size} bytes; the limit is {MAX_JOB_FILE_BYTES}")
    raw = p.read_bytes()
    if b"\x00" in raw:
        raise JobSpecError(f"{p}: binary file, not a YAML job file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise JobSpecError(f"{p}: not UTF-8 text; a job file is YAML") from None
    return parse_job_text(text, str(p))
