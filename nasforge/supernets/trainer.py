"""SandwichTrainer: BigNAS training of a weight-sharing supernet, resumable from checkpoints.

One step (``sampling: sandwich``): the largest child learns from the labels (label smoothing,
dropout before the classifier); then the children the :class:`ArchSampler` returns (default: the
smallest child and ``num_random`` uniform random children) learn from the largest's soft
predictions at temperature ``distill_temperature`` (in-place distillation; with
``inplace_distill: false`` they learn from the labels). Gradients of all children are summed,
weight decay is added once (it is the largest child's regularizer; BN and bias parameters get
none) and one SGD (Nesterov) update follows (``optimizer: adam``: one Adam update). ``sampling: uniform`` trains one uniformly sampled
child per step from the labels (single-path baseline).

Which children are drawn (``sampler``): ``uniform`` (default) draws them uniformly from the space
(BigNAS); ``complexity`` and ``performance`` use ElasticViT's samplers
(:mod:`nasforge.supernets.sampling`, settings in ``sampler_options``): children in FLOPs buckets
that cover the space, each child within ``max_flops_ratio`` in FLOPs of the one drawn at the
previous step, and for ``performance`` the best of several candidates by a running loss
estimate. The sandwich rule still adds the largest and the smallest child.

Language models (supernets with ``input_kind == "tokens"``, logits (N, L, V) against next-token
targets (N, L)): every position is one prediction; the label loss is the mean per-token
cross-entropy and in-place distillation is the per-token KL to the largest child's next-token
distributions. Scores are next-token accuracy (``*_acc``) on the evaluation split.

Learning rate: linear warm-up to ``spec.lr`` over ``spec.warmup_epochs``, then exponential decay
that reaches ``final_lr_fraction * lr`` at ``decay_end_fraction`` of training, constant after.

Determinism and resume: the batch order of epoch ``e`` is a permutation drawn from
``(seed, e)``; the archs and the dropout masks of step ``t`` come from generators seeded by
``(seed, t)``. A checkpoint is written after every epoch (and at the end) into
``checkpoint_dir/epoch-NNNN/``: ``model.safetensors`` (weights and BN buffers),
``optimizer.safetensors`` (optimizer tensors) and ``state.json`` (step, epoch, optimizer
hyper-parameters, sampler state, metrics). The folder is written under a temporary name and
renamed, so a kill never leaves a half checkpoint; ``fit()`` resumes from the newest one and
continues exactly as an uninterrupted run would.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import load_file, save_file

from nasforge.core.errors import JobSpecError, NasforgeError, option_message
from nasforge.core.paths import ordinary_file_mode, replace_folder
from nasforge.core.spec import TrainingSpec
from nasforge.core.types import Arch
from nasforge.spaces.base import SearchSpace
from nasforge.supernets.base import Supernet
from nasforge.supernets.evaluate import evaluate_classifier, prepare_child
from nasforge.supernets.sampling import ComplexityAwareSampler, SamplerOptions

CHECKPOINT_PREFIX = "epoch-"
KEEP_CHECKPOINTS = 2


class CheckpointError(NasforgeError):
    """A trained supernet checkpoint is missing or unreadable."""


# ------------------------------------------------------------------------------------------------
# Arch sampling


@runtime_checkable
class ArchSampler(Protocol):
    """Chooses the children trained at one step, besides the largest.

    ``sample_step(step, rng)`` returns the archs (canonical, of the trainer's space) to train at
    ``step`` after the largest child; ``rng`` is a generator seeded by (seed, step), so a
    sampler that only uses it is deterministic and resumable. A sampler may also define
    ``observe(step, archs, losses)`` (called after the step with each child's loss, largest
    first when trained) and ``state_dict()`` / ``load_state_dict(state)`` (JSON-serialisable,
    saved in checkpoints).
    """

    def sample_step(self, step: int, rng: np.random.Generator) -> list[Arch]: ...


class SandwichSampler:
    """The smallest child plus ``num_random`` uniform random children (BigNAS's sandwich rule)."""

    def __init__(self, space: SearchSpace, num_random: int):
        self.space, self.num_random = space, num_random
        self.smallest = space.smallest()

    def sample_step(self, step: int, rng: np.random.Generator) -> list[Arch]:
        return [self.smallest] + [self.space.sample(rng) for _ in range(self.num_random)]


class UniformSampler:
    """``count`` uniform random children per step (single-path when ``count`` is 1)."""

    def __init__(self, space: SearchSpace, count: int = 1):
        self.space, self.count = space, count

    def sample_step(self, step: int, rng: np.random.Generator) -> list[Arch]:
        return [self.space.sample(rng) for _ in range(self.count)]


class FixedSampler:
    """The same archs every step (``[]``: train only the largest / the given teacher arch)."""

    def __init__(self, archs: list[Arch]):
        self.archs = list(archs)

    def sample_step(self, step: int, rng: np.random.Generator) -> list[Arch]:
        return list(self.archs)


# ------------------------------------------------------------------------------------------------
# Options and schedule


class SandwichOptions(BaseModel):
    """``training.options`` of the sandwich trainer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sampling: Literal["sandwich", "uniform"] = Field(
        default="sandwich", description="sandwich: largest + smallest + N random; uniform: one random child per step")
    num_random: int = Field(default=2, ge=0, le=64, description="random children per step (sandwich)")
    sampler: Literal["uniform", "complexity", "performance"] = Field(
        default="uniform", description="how the random children are drawn: uniform (BigNAS) | complexity "
        "(FLOPs buckets, bounded FLOPs change between steps) | performance (complexity + best of candidates)")
    sampler_options: SamplerOptions = Field(default_factory=SamplerOptions,
                                            description="settings of the complexity / performance samplers")
    inplace_distill: bool = Field(default=True, description="children learn from the largest's soft predictions")
    distill_temperature: float = Field(default=1.0, gt=0, le=100, description="softmax temperature of distillation")
    dropout: float = Field(default=0.1, ge=0, lt=1, description="dropout before the classifier, largest child only")
    label_smoothing: float = Field(default=0.1, ge=0, lt=1, description="label smoothing of label-trained children")
    final_lr_fraction: float = Field(default=0.05, gt=0, le=1, description="constant LR at the end, as a fraction of lr")
    decay_end_fraction: float = Field(default=0.85, gt=0, le=1, description="share of training after which LR is constant")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD (Nesterov) momentum")
    optimizer: Literal["sgd", "adam"] = Field(
        default="sgd", description="sgd: SGD with Nesterov momentum (BigNAS); adam: Adam, betas (0.9, 0.999) "
        "(transformers); weight decay is added to the gradients either way")
    eval_images: int = Field(default=500, ge=1, description="validation images scored after each epoch")
    calib_images: int = Field(default=256, ge=1, description="training images for BN recalibration before scoring")
    threads: int | None = Field(default=None, ge=1, le=256, description="torch CPU threads while training")
    eval_smallest: bool = Field(default=True, description="score the smallest child after each epoch too")


def options_error(e: ValidationError, where: str = "training.options") -> JobSpecError:
    """One line for a refused ``training.options``: the key and pydantic's message; a check across
    options (no key) names the key its message starts with."""
    first = e.errors()[0]
    msg = str(first["msg"]).removeprefix("Value error, ")
    if first["loc"]:
        return JobSpecError(f"{where}.{'.'.join(map(str, first['loc']))}: {msg}")
    return JobSpecError(option_message(where, msg))


def lr_at(step: int, total_steps: int, peak: float, warmup_steps: int, final_fraction: float,
          decay_end_fraction: float) -> float:
    """Learning rate of ``step`` (0-based): linear warm-up, exponential decay, then constant."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    decay_end = max(warmup_steps + 1, int(round(decay_end_fraction * total_steps)))
    if step >= decay_end:
        return peak * final_fraction
    t = (step - warmup_steps) / (decay_end - warmup_steps)
    return peak * final_fraction ** t


def _seed_of(*parts: int) -> int:
    return int(np.random.SeedSequence([abs(int(p)) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


# ------------------------------------------------------------------------------------------------
# Trainer


def check_data_fits(space: SearchSpace, data: Any) -> None:
    """The space's classes, vocabulary, context, channels and image size agree with the dataset
    (checked while validating a job, before it exists, and again by the trainer)."""
    opts = space.options
    o = getattr(opts, "num_classes", None)
    if o is not None and o != data.num_classes:
        raise JobSpecError(
            f"space.options.num_classes: the space has {o} classes but dataset {data.name} has "
            f"{data.num_classes}; set space.options.num_classes: {data.num_classes}"
        )
    vocab = getattr(opts, "vocab_size", None)
    if vocab is not None and len(data.input_shape) == 1 and vocab < data.num_classes:
        raise JobSpecError(
            f"space.options.vocab_size: the space embeds {vocab} tokens but dataset {data.name} has "
            f"{data.num_classes} (one per byte); set space.options.vocab_size: {data.num_classes}"
        )
    ctx = getattr(opts, "context", None)
    if ctx is not None and len(data.input_shape) == 1 and ctx < data.input_shape[0]:
        raise JobSpecError(
            f"space.options.context: the space holds {ctx} positions but dataset {data.name} has sequences "
            f"of {data.input_shape[0]}; set evaluation.dataset.seq_len <= {ctx} or raise the context"
        )
    c = getattr(opts, "in_channels", None)
    if c is not None and len(data.input_shape) == 3 and c != data.input_shape[0]:
        raise JobSpecError(
            f"space.options.in_channels: the space takes {c} channels but dataset {data.name} has "
            f"{data.input_shape[0]}; set space.options.in_channels: {data.input_shape[0]}"
        )
    size = getattr(opts, "input_size", None)
    if size is not None and len(data.input_shape) == 3 and data.input_shape[1] == data.input_shape[2] != size:
        # latency, FLOPs and the exported graph take input_size: a child timed on other images than
        # it is scored on (non-square images are left to the spaces, which pool globally)
        side = data.input_shape[1]
        raise JobSpecError(
            f"space.options.input_size: the space takes {size}x{size} images but dataset {data.name} has "
            f"{side}x{side}; set space.options.input_size: {side}"
        )


class SandwichTrainer:
    """Trains ``supernet`` on ``data.train`` with the BigNAS recipe (see the module docstring).

    ``arch_sampler`` replaces the sampler that ``options.sampling`` selects; ``largest`` replaces
    the label-trained teacher arch (default: the space's largest child); ``device`` defaults to
    the supernet's device. ``fit`` returns the final metrics and resumes from ``checkpoint_dir``.
    """

    Options = SandwichOptions

    @classmethod
    def check_space(cls, space: SearchSpace, options: Mapping[str, Any]) -> None:
        """What ``nasforge validate`` can check before training: the complexity-aware sampler's
        FLOPs buckets against ``max_flops_ratio`` on this space (JobSpecError naming the key)."""
        o = cls.Options.model_validate(dict(options))
        if getattr(o, "sampler", "uniform") != "uniform":
            ComplexityAwareSampler(space, max(1, o.num_random), options=o.sampler_options,
                                   performance=o.sampler == "performance")

    def __init__(
        self,
        supernet: Supernet,
        data: Any,
        spec: TrainingSpec,
        *,
        seed: int,
        checkpoint_dir: Path | str,
        options: SandwichOptions | Mapping[str, Any] | None = None,
        arch_sampler: ArchSampler | None = None,
        largest: Arch | None = None,
        device: torch.device | str | None = None,
    ):
        if options is None or isinstance(options, Mapping):
            try:
                options = SandwichOptions.model_validate(dict(options or {}))
            except ValidationError as e:
                raise options_error(e) from None
        self.supernet, self.data, self.spec, self.seed = supernet, data, spec, int(seed)
        self.checkpoint_dir = Path(checkpoint_dir)
        self.resume_notes: list[str] = getattr(self, "resume_notes", [])  # a subclass may have noted its own
        assert isinstance(options, SandwichOptions)
        given: SandwichOptions = options
        resumed, note = checkpointed_options(self.checkpoint_dir, given, "options")
        self.resume_notes += [note] if note else []
        self.options: SandwichOptions = resumed
        options = resumed
        self.space = supernet.space
        self.largest = largest if largest is not None else self.space.largest()
        self.device = torch.device(device) if device is not None else next(supernet.parameters()).device
        check_data_fits(self.space, self.data)
        if arch_sampler is None:
            sandwich = options.sampling == "sandwich"
            if options.sampler != "uniform":
                arch_sampler = ComplexityAwareSampler(
                    self.space, options.num_random if sandwich else 1, include_smallest=sandwich,
                    options=options.sampler_options, performance=options.sampler == "performance")
            else:
                arch_sampler = SandwichSampler(self.space, options.num_random) if sandwich else UniformSampler(self.space, 1)
        self.sampler = arch_sampler
        self.train_largest = options.sampling == "sandwich"
        n = int(data.train[0].shape[0])
        self.batch_size = min(spec.batch_size, n)
        self.steps_per_epoch = max(1, n // self.batch_size)
        self.total_steps = max(1, int(round(spec.epochs * self.steps_per_epoch)))
        self.num_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.warmup_steps = int(round(spec.warmup_epochs * self.steps_per_epoch))
        decay, no_decay = [], []
        for p in supernet.parameters():
            (no_decay if p.dim() <= 1 else decay).append(p)
        self._decay_params = decay
        self.optimizer: torch.optim.Optimizer
        if options.optimizer == "adam":
            self.optimizer = torch.optim.Adam(supernet.parameters(), lr=spec.lr, betas=(0.9, 0.999))
        else:
            self.optimizer = torch.optim.SGD(supernet.parameters(), lr=spec.lr, momentum=options.momentum,
                                             nesterov=True)
        self.step = 0
        self.epoch = 0
        self.history: list[dict[str, float]] = []

    # ---- training -------------------------------------------------------------------------
    def lr(self, step: int) -> float:
        o = self.options
        return lr_at(step, self.total_steps, self.spec.lr, self.warmup_steps, o.final_lr_fraction,
                     o.decay_end_fraction)

    def _train_step(self, xb: torch.Tensor, yb: torch.Tensor) -> float:
        o = self.options
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(self.step)
        torch.manual_seed(_seed_of(self.seed, self.step, 1))
        rng = np.random.default_rng([self.seed, self.step, 2])
        archs = ([self.largest] if self.train_largest else []) + list(self.sampler.sample_step(self.step, rng))
        teacher: torch.Tensor | None = None
        losses: list[float] = []
        T = o.distill_temperature
        for i, arch in enumerate(archs):
            is_largest = arch == self.largest
            logits = self.supernet(xb, arch, dropout=o.dropout if is_largest else 0.0)
            if logits.dim() > 2:  # one prediction per position (language models)
                logits = logits.reshape(-1, logits.shape[-1])
            if teacher is not None and o.inplace_distill and i > 0:
                loss = F.kl_div(F.log_softmax(logits / T, dim=1), F.softmax(teacher / T, dim=1),
                                reduction="batchmean") * (T * T)
            else:
                loss = F.cross_entropy(logits, yb.reshape(-1), label_smoothing=o.label_smoothing)
            if i == 0 and self.train_largest:
                teacher = logits.detach()
            loss.backward()
            losses.append(float(loss.detach()))
        self._optimizer_step()
        observe = getattr(self.sampler, "observe", None)
        if observe is not None:
            observe(self.step, archs, losses)
        self.step += 1
        return losses[0] if losses else float("nan")

    def evaluate(self, arch: Arch, split: str = "val") -> float:
        """Accuracy of child ``arch`` after BN recalibration (training mode is restored)."""
        was_training = self.supernet.training
        self.supernet.eval()
        try:
            calib = self.data.train[0][: self.options.calib_images].to(self.device)
            X, y = getattr(self.data, split)
            child = prepare_child(self.supernet, arch, calib)
            return evaluate_classifier(child, X[: self.options.eval_images], y[: self.options.eval_images])["accuracy"]
        finally:
            self.supernet.train(was_training)

    def _optimizer_step(self) -> None:
        """Weight decay on the regularised parameters (BigNAS: the largest child's), then one
        optimizer step; gradients are cleared."""
        if self.spec.weight_decay > 0:
            with torch.no_grad():
                for p in self._decay_params:
                    if p.grad is not None:
                        p.grad.add_(p, alpha=self.spec.weight_decay)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def fit(self, on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, float]:
        """Train to ``spec.epochs`` (resuming from the newest checkpoint); return final metrics.

        Final metrics: ``largest_val_acc``, ``smallest_val_acc``, ``largest_test_acc``,
        ``smallest_test_acc`` (after BN recalibration), ``train_seconds`` (summed over resumed
        runs), ``steps``, ``epochs``. ``on_epoch(epoch, metrics)`` is called after each epoch's
        checkpoint is written (epochs are numbered from 1).
        """
        rng_state = torch.get_rng_state()
        threads = torch.get_num_threads()
        if self.options.threads:
            torch.set_num_threads(self.options.threads)
        try:
            final = self.resume()
            if final is not None:
                return final
            X, y = self.data.train[0].to(self.device), self.data.train[1].to(self.device)
            self.supernet.train()
            while self.step < self.total_steps:
                t0 = time.perf_counter()
                order = torch.from_numpy(np.random.default_rng([self.seed, self.epoch, 3]).permutation(len(y)))
                first = self.step - self.epoch * self.steps_per_epoch
                last = min(self.steps_per_epoch, self.total_steps - self.epoch * self.steps_per_epoch)
                losses = []
                for b in range(first, last):
                    idx = order[b * self.batch_size:(b + 1) * self.batch_size].to(self.device)
                    losses.append(self._train_step(X[idx], y[idx]))
                self.epoch += 1
                metrics = {
                    "epoch": float(self.epoch),
                    "loss_largest": float(np.mean(losses)) if losses else float("nan"),
                    "lr": self.lr(self.step - 1),
                    "largest_val_acc": self.evaluate(self.largest),
                    "smallest_val_acc": (self.evaluate(self.space.smallest()) if self.options.eval_smallest
                                         else float("nan")),
                    "epoch_seconds": time.perf_counter() - t0,
                }
                self.history.append(metrics)
                done = self.step >= self.total_steps
                final_metrics = self._final_metrics() if done else None
                self.save_checkpoint(final_metrics)
                if on_epoch is not None:
                    on_epoch(self.epoch, metrics)
            self.supernet.eval()
            return self._final_metrics()
        finally:
            torch.set_rng_state(rng_state)
            torch.set_num_threads(threads)

    def _final_metrics(self) -> dict[str, float]:
        last = self.history[-1] if self.history else {}
        largest_val = last.get("largest_val_acc")
        smallest_val = last.get("smallest_val_acc")
        return {
            "largest_val_acc": float(largest_val if largest_val is not None else self.evaluate(self.largest)),
            "smallest_val_acc": float(smallest_val if smallest_val is not None
                                      else self.evaluate(self.space.smallest())),
            "largest_test_acc": self.evaluate(self.largest, "test"),
            "smallest_test_acc": (self.evaluate(self.space.smallest(), "test") if self.options.eval_smallest
                                  else float("nan")),
            "train_seconds": float(sum(h.get("epoch_seconds", 0.0) for h in self.history)),
            "steps": float(self.step),
            "epochs": float(self.total_steps / self.steps_per_epoch),
        }

    # ---- checkpoints ----------------------------------------------------------------------
    def save_checkpoint(self, final_metrics: dict[str, float] | None = None) -> Path:
        """Write ``checkpoint_dir/epoch-NNNN`` atomically; keep the newest two."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        target = self.checkpoint_dir / f"{CHECKPOINT_PREFIX}{self.epoch:04d}"
        tmp = self.checkpoint_dir / f".tmp-{target.name}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        save_file({k: v.detach().cpu().contiguous() for k, v in self.supernet.state_dict().items()},
                  str(tmp / "model.safetensors"))
        opt_tensors, opt_meta = _flatten_optimizer(self.optimizer.state_dict())
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        ordinary_file_mode(tmp / "model.safetensors", tmp / "optimizer.safetensors")
        sampler_state = self.sampler.state_dict() if hasattr(self.sampler, "state_dict") else {}
        state = {
            "step": self.step, "epoch": self.epoch, "total_steps": self.total_steps, "seed": self.seed,
            "optimizer": opt_meta, "sampler": sampler_state, "history": self.history,
            "final": final_metrics, **self.checkpoint_options(),
            "training": self.spec.model_dump(mode="json"),
        }
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
        replace_folder(tmp, target)
        for old in _checkpoint_dirs(self.checkpoint_dir)[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    def checkpoint_options(self) -> dict[str, Any]:
        """The resolved options a checkpoint records (``state.json``), so that a resumed run goes on
        with them even where a later nasforge changed a default (see :func:`checkpointed_options`)."""
        return {"options": self.options.model_dump(mode="json")}

    def resume(self) -> dict[str, float] | None:
        """Load the newest checkpoint if there is one; return its final metrics when training was done."""
        dirs = _checkpoint_dirs(self.checkpoint_dir)
        if not dirs:
            return None
        latest = dirs[-1]
        state = json.loads((latest / "state.json").read_text())
        _load_weights(self.supernet, latest / "model.safetensors")
        opt_state = _unflatten_optimizer(load_file(str(latest / "optimizer.safetensors")), state["optimizer"])
        self.optimizer.load_state_dict(opt_state)
        if state.get("sampler") and hasattr(self.sampler, "load_state_dict"):
            self.sampler.load_state_dict(state["sampler"])
        self.step, self.epoch, self.history = int(state["step"]), int(state["epoch"]), list(state["history"])
        if self.step >= self.total_steps and state.get("final"):
            self.supernet.eval()
            return {k: float(v) for k, v in state["final"].items()}
        return None


OptionsT = TypeVar("OptionsT", bound=BaseModel)


def checkpointed_options(checkpoint_dir: Path | str, current: OptionsT, key: str) -> tuple[OptionsT, str | None]:
    """The options to go on with where ``checkpoint_dir`` holds a checkpoint: the ones it recorded
    under ``key`` where they differ from ``current``, and a one-line note naming each difference.

    A job's file cannot change between its start and a resume, so a difference means a later
    nasforge changed a default; the resumed run keeps training as it began. Options the checkpoint
    predates keep ``current``'s value; ones this nasforge no longer knows are dropped. Returns
    ``(current, None)`` when there is no checkpoint, it recorded nothing under ``key``, or nothing
    differs.
    """
    newest = newest_checkpoint(checkpoint_dir)
    if newest is None:
        return current, None
    folder, state = newest
    stored = state.get(key)
    now = current.model_dump(mode="json")
    if not isinstance(stored, dict) or stored == now:
        return current, None
    merged = {**now, **{k: v for k, v in stored.items() if k in now}}
    try:
        resumed = type(current).model_validate(merged)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise JobSpecError(
            f"training.options.{where}: the checkpoint {folder} was trained with {where}="
            f"{merged.get(str(first['loc'][0]))!r}, which this nasforge refuses ({first['msg']}); "
            "delete the job and submit it anew") from None
    again = resumed.model_dump(mode="json")
    changed = [k for k in now if again[k] != now[k]]
    if not changed:
        return current, None
    listed = ", ".join(f"{k}={again[k]!r} (default now {now[k]!r})" for k in changed)
    return resumed, (f"training.options: resuming {Path(folder).name} with the options it was trained with: {listed}; "
                     "delete the job and submit it anew to train with the current defaults")


def newest_checkpoint(checkpoint_dir: Path | str) -> tuple[str, dict[str, Any]] | None:
    """(folder, parsed ``state.json``) of the newest checkpoint in ``checkpoint_dir``, or None."""
    dirs = _checkpoint_dirs(Path(checkpoint_dir))
    return (str(dirs[-1]), json.loads((dirs[-1] / "state.json").read_text())) if dirs else None


def _checkpoint_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and (p / "state.json").exists())


def _flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for idx, sc in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(sc)
    return {"state": state, "param_groups": meta["param_groups"]}


def _load_weights(model: torch.nn.Module, path: Path, data: bytes | None = None) -> None:
    """Load the safetensors file ``path`` into ``model``; ``data``: that file's bytes, read elsewhere
    (a worker on another node gets them from the driver), ``path`` then only names it in errors."""
    device = next(model.parameters()).device
    try:
        if data is None:
            sd = load_file(str(path), device=str(device))
        else:
            sd = {k: v.to(device) for k, v in load_safetensors_bytes(data).items()}
    except Exception as e:  # noqa: BLE001 - a file that is not safetensors, truncated, unreadable
        raise CheckpointError(f"supernet.checkpoint: {path} cannot be read as safetensors ({e})") from None
    own = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} (this supernet: {tuple(own[k].shape)})" for k, v in sd.items()
             if k in own and own[k].shape != v.shape]
    if wrong:  # load_state_dict would raise a RuntimeError listing every tensor
        raise CheckpointError(
            f"supernet.checkpoint: {path} was trained with other space/supernet options: {len(wrong)} tensors differ "
            f"in shape, e.g. {wrong[0]}; use the options it was trained with"
        )
    for k, trained in sd.items():  # Mixture-of-Supernets routers: the temperature is not a weight to take over
        if k.endswith("router_temperature") and k in own and abs(float(trained) - float(own[k])) > 1e-6:
            raise CheckpointError(
                f"supernet.checkpoint: {path} was trained with supernet.options.mixture.router_temperature "
                f"{float(trained):g}, this job has {float(own[k]):g}; set router_temperature: {float(trained):g}")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    # a checkpoint written before the router temperature was kept in the state: it loads as configured
    missing = [k for k in missing if not k.endswith("router_temperature")]
    if missing or unexpected:
        raise CheckpointError(
            f"supernet.checkpoint: {path} does not match this supernet (missing {list(missing)[:3]}, "
            f"unexpected {list(unexpected)[:3]}); use the space/supernet options it was trained with"
        )


def latest_weights(checkpoint_dir: Path | str) -> Path:
    """The newest ``model.safetensors`` under ``checkpoint_dir``: a folder the trainer wrote, one
    epoch folder of it, a job's folder (``jobs/JOB``, whose ``supernet`` folder it reads), or the
    file itself."""
    from nasforge.core.paths import SUPERNET_DIR

    p = Path(checkpoint_dir)
    if p.is_file() and p.suffix == ".safetensors":
        return p
    if (p / "model.safetensors").is_file():  # one epoch's folder
        return p / "model.safetensors"
    if not _checkpoint_dirs(p) and _checkpoint_dirs(p / SUPERNET_DIR):  # a job's folder
        p = p / SUPERNET_DIR
    dirs = _checkpoint_dirs(p)
    if not dirs:
        raise CheckpointError(
            f"supernet.checkpoint: no trained supernet in {p}; train one first (give 'training') or point "
            "supernet.checkpoint at a folder written by the sandwich trainer (a job's jobs/JOB folder, its "
            "supernet folder or one epoch-NNNN in it) or at a .safetensors file"
        )
    return dirs[-1] / "model.safetensors"


def load_trained_supernet(space: SearchSpace, supernet_name: str, options: Mapping[str, Any] | None,
                          checkpoint_dir: Path | str, *, weights: tuple[str, bytes] | None = None) -> Supernet:
    """Build supernet ``supernet_name`` for ``space`` and load the newest trained weights (eval mode).
    ``weights``: (where it was read, the bytes of) the weights file :func:`latest_weights` found on
    another machine; ``checkpoint_dir`` is then not read."""
    from nasforge.supernets import SUPERNETS

    net = SUPERNETS.get(supernet_name, "supernet.name")(space, dict(options or {}))
    if weights is None:
        _load_weights(net, latest_weights(checkpoint_dir))
    else:
        _load_weights(net, Path(weights[0]), weights[1])
    return net.eval()
