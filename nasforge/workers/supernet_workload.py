"""SupernetWorkload: supernet jobs (BigNAS CNN, ElasticViT, Mixture-of-Supernets, ...).

prepare: train the supernet with the job's trainer (resumable from its checkpoints), unless the
job names a trained checkpoint. Worker: load the trained supernet once; per candidate extract the
child, recalibrate its BN statistics on ``evaluation.bn_recalibration_images`` training images
(cached per arch), then measure accuracy, counted FLOPs/params, model bytes and real latency.
Token models (``input_kind == "tokens"``, e.g. the ``lm_transformer`` language model on the
``pystdlib`` text corpus) report ``loss`` (cross-entropy per token, nats) and ``perplexity``
(``exp(loss)``) instead of ``accuracy``; they have no BN, so nothing is recalibrated.
Export: the same prepared child as safetensors, ONNX (checked against onnxruntime) and
``torch.export`` program, with an ``arch.json`` that lets ``nasforge.load`` rebuild it without
the supernet.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nasforge.core.errors import JobSpecError, NasforgeError, NasforgeWarning, option_message
from nasforge.core.paths import SUPERNET_DIR, TRAINING_PROGRESS_FILE
from nasforge.core.spec import JobSpec
from nasforge.core.spec_docs import model_of
from nasforge.core.types import ARCH_SCHEMA_VERSION, Arch
from nasforge.data.loaders import DATASETS, coarse_split_warning, dataset_name_error
from nasforge.spaces import SPACES
from nasforge.spaces.base import SearchSpace
from nasforge.supernets import SUPERNETS, TRAINERS
from nasforge.workers.base import LogFn, Workload

#: absolute tolerance of the ONNX check (float32 logits)
ONNX_ATOL = 1e-4
CHILD_CACHE_SIZE = 16


def _validate_options(cls: Any, options: dict[str, Any], where: str) -> None:
    from pydantic import ValidationError

    model = getattr(cls, "Options", None)
    if model is None:
        return
    try:
        model.model_validate(options)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        msg = "unknown option" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
        if not first["loc"]:  # a check across options: its message usually starts with the key it is about
            raise JobSpecError(option_message(where, msg)) from None
        holder = model  # the options group holding the key (e.g. training.options.sampler_options)
        for part in first["loc"][:-1]:
            field = holder.model_fields.get(str(part))
            sub = model_of(field.annotation) if field is not None else None
            if sub is None:
                break
            holder = sub
        allowed = ", ".join(holder.model_fields)
        raise JobSpecError(f"{where}.{loc}: {msg} (options: {allowed})") from None


#: checkpoints already loaded by validation in this process (a foreground submit validates the job
#: file, then run_job validates the spec again): (weights file, its size and mtime, space, supernet)
_CHECKED: set[tuple[Any, ...]] = set()


def _check_checkpoint(spec: JobSpec, space: SearchSpace) -> None:
    """Load ``supernet.checkpoint`` into the job's supernet once per process (a CheckpointError
    names what does not fit)."""
    from nasforge.supernets.trainer import CheckpointError, latest_weights, load_trained_supernet

    assert spec.supernet is not None and spec.supernet.checkpoint is not None
    weights = latest_weights(spec.supernet.checkpoint).resolve()
    st = weights.stat()
    key = (str(weights), st.st_size, st.st_mtime_ns, space.id,
           json.dumps(dict(spec.space.options), sort_keys=True, default=str), spec.supernet.name,
           json.dumps(dict(spec.supernet.options), sort_keys=True, default=str))
    if key not in _CHECKED:
        try:
            load_trained_supernet(space, spec.supernet.name, spec.supernet.options, spec.supernet.checkpoint)
        except CheckpointError as e:
            raise CheckpointError(f"{e}{_trained_with(spec, weights)}") from None
        _CHECKED.add(key)
        _warn_other_data(spec, weights)


#: warnings already given by this process (a foreground submit validates its job twice)
_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, NasforgeWarning, stacklevel=2)


def _training_job(weights: Path) -> tuple[str, dict[str, Any]] | None:
    """The id and job file of the nasforge job that trained ``weights`` (its ``job.json`` is in a
    folder above them), or None: a checkpoint from elsewhere, or an unreadable job file."""
    job_file = next((p / "job.json" for p in list(weights.parents)[:4] if (p / "job.json").is_file()), None)
    if job_file is None:
        return None
    try:
        job = json.loads(job_file.read_text())
    except (OSError, ValueError):
        return None
    return (job_file.parent.name, job) if isinstance(job, dict) else None


def _trained_with(spec: JobSpec, weights: Path) -> str:
    """For a checkpoint that does not fit: the space and supernet its training job used, where they
    differ from this job's (the fix is to copy them), else ''."""
    assert spec.supernet is not None
    trained = _training_job(weights)
    if trained is None:
        return ""
    job_id, job = trained
    now = {"space": spec.space.model_dump(), "supernet": spec.supernet.model_dump()}
    then = {k: {"name": (job.get(k) or {}).get("name"), "options": (job.get(k) or {}).get("options") or {}}
            for k in now}
    differ = [f"{k}: {{name: {then[k]['name']}, options: {json.dumps(then[k]['options'], separators=(',', ':'))}}}"
              for k in now if (then[k]["name"], then[k]["options"]) != (now[k]["name"], now[k]["options"])]
    if not differ:
        return ""
    return f"; it was trained by job {job_id} with " + " and ".join(differ)


#: the dataset settings that decide which images a supernet trained on and which it is scored on
_SPLIT_KEYS = ("name", "path", "seed", "val_fraction", "test_fraction", "seq_len", "normalize", "mean", "std")


def _warn_other_data(spec: JobSpec, weights: Path) -> None:
    """A checkpoint a nasforge job trained (its ``job.json`` is in a folder above the weights) was
    trained on that job's dataset and split: scored on other data, or on another split of the same
    data (whose validation images the supernet may have trained on), its children's accuracy is not
    what it seems. Said once, as a warning: it may be meant (transfer), the shapes fit."""
    training_job = _training_job(weights)
    if training_job is None:
        return
    job_id, job = training_job
    try:
        trained = dict((job.get("evaluation") or {}).get("dataset") or {})
    except (AttributeError, TypeError, ValueError):
        return
    now = spec.evaluation.dataset.model_dump()
    defaults = type(spec.evaluation.dataset)().model_dump()
    differ = [k for k in _SPLIT_KEYS if trained.get(k, defaults.get(k)) != now.get(k)]
    if not differ:
        return
    what = ", ".join(f"{k} {trained.get(k, defaults.get(k))!r} -> {now.get(k)!r}" for k in differ)
    warnings.warn(f"supernet.checkpoint was trained by job {job_id} on other data or another split "
                  f"({what}): its children are scored on images it may have trained on, or on data it never saw; "
                  "use that job's evaluation.dataset settings unless this is meant", NasforgeWarning, stacklevel=1)


#: the name of the trained weights among :meth:`SupernetWorkload.worker_files`
WEIGHTS_FILE = "supernet.safetensors"


class SupernetWorkload(Workload):
    kind = "supernet"

    # ---- coordinator ----------------------------------------------------------------------
    @classmethod
    def build_space(cls, spec: JobSpec) -> SearchSpace:
        space_cls = SPACES.get(spec.space.name, "space.name")
        _validate_options(space_cls, spec.space.options, "space.options")
        return space_cls(spec.space.options)

    @classmethod
    def validate_spec(cls, spec: JobSpec) -> None:
        assert spec.supernet is not None
        space = cls.build_space(spec)
        net_cls = SUPERNETS.get(spec.supernet.name, "supernet.name")
        if getattr(net_cls, "spaces", ()) and space.id not in net_cls.spaces:
            raise JobSpecError(
                f"supernet.name: supernet {spec.supernet.name!r} serves spaces {list(net_cls.spaces)}, "
                f"not {space.id!r}"
            )
        _validate_options(net_cls, spec.supernet.options, "supernet.options")
        net_cls.check_space(space, net_cls.Options.model_validate(dict(spec.supernet.options)))
        training = spec.training
        if spec.supernet.checkpoint is None:
            if training is None:
                raise JobSpecError("training: required when supernet.checkpoint is not given")
            if "warmup_epochs" in training.model_fields_set and training.warmup_epochs >= training.epochs:
                # a shortened smoke run may mean it (the default warm-up is not named): a warning
                _warn_once(f"training.warmup_epochs ({training.warmup_epochs:g}) is not shorter than "
                           f"training.epochs ({training.epochs:g}): the learning rate rises all through training "
                           "and never reaches training.lr; lower warmup_epochs")
            trainer_cls = TRAINERS.get(training.trainer, "training.trainer")
            fits = getattr(net_cls, "trainers", ())
            if fits and training.trainer not in fits:
                default = "" if "trainer" in training.model_fields_set else " (the default)"
                raise JobSpecError(
                    f"training.trainer: supernet {spec.supernet.name!r} is trained by trainer "
                    f"{' or '.join(map(repr, fits))}, not {training.trainer!r}{default}; set training.trainer: {fits[0]}")
            _validate_options(trainer_cls, training.options, "training.options")
            check_space = getattr(trainer_cls, "check_space", None)
            if callable(check_space):
                check_space(space, training.options)
        elif not Path(spec.supernet.checkpoint).exists():
            raise JobSpecError(f"supernet.checkpoint: {spec.supernet.checkpoint} does not exist")
        else:  # load it now: a file that is not a checkpoint, or one trained with other options, is
            # refused before the job exists (each worker found it, with a traceback and a failed job)
            _check_checkpoint(spec, space)
        ds = spec.evaluation.dataset
        if (bad := dataset_name_error(ds.name)) is not None:
            raise JobSpecError(bad)
        tokens = getattr(net_cls, "input_kind", "image") == "tokens"
        if tokens != (DATASETS.get(ds.name).kind == "text"):
            texts = [n for n in DATASETS.names() if DATASETS.get(n).kind == "text"]
            want = "a text dataset (" + ", ".join(texts) + ")" if tokens else "an image dataset"
            raise JobSpecError(
                f"evaluation.dataset.name: supernet {spec.supernet.name!r} takes "
                f"{'token sequences' if tokens else 'images'}; {ds.name!r} does not fit, use {want}"
            )
        context = getattr(space.options, "context", None)
        if tokens and context is not None and ds.seq_len > context:
            raise JobSpecError(
                f"evaluation.dataset.seq_len: {ds.seq_len} is longer than space.options.context ({context}); "
                f"set seq_len <= {context}"
            )
        # read it now, before a job exists (no path or a missing one, a file without X / y, a folder without class folders, 2
        # classes for a 10-class space); load_dataset caches it, so a foreground job reads it once
        from nasforge.data import load_dataset
        from nasforge.supernets.trainer import check_data_fits

        data = load_dataset(ds)
        check_data_fits(space, data)
        if (coarse := coarse_split_warning(data, spec.evaluation.split, spec.evaluation.max_images)) is not None:
            _warn_once(coarse)

    @classmethod
    def metrics(cls, spec: JobSpec) -> tuple[frozenset[str], str] | None:
        assert spec.supernet is not None
        tokens = getattr(SUPERNETS.get(spec.supernet.name, "supernet.name"), "input_kind", "image") == "tokens"
        names = {"loss", "perplexity"} if tokens else {"accuracy", "loss"}
        names |= {"flops", "params", "model_bytes", "peak_memory_mb"}
        timed = spec.evaluation.latency.enabled
        if timed:
            names |= set(cls.LATENCY_METRICS)
        what = "a language-model supernet job" if tokens else "a supernet job"
        return frozenset(names), what + ("" if timed else " with evaluation.latency.enabled: false")

    @staticmethod
    def checkpoint_dir(spec: JobSpec, job_dir: Path) -> Path:
        assert spec.supernet is not None
        if spec.supernet.checkpoint is not None:
            return Path(spec.supernet.checkpoint)
        return Path(job_dir) / SUPERNET_DIR

    @classmethod
    def _build_supernet(cls, spec: JobSpec) -> Any:
        assert spec.supernet is not None
        space = cls.build_space(spec)
        return SUPERNETS.get(spec.supernet.name)(space, spec.supernet.options)

    @classmethod
    def prepare(cls, spec: JobSpec, job_dir: Path, log: LogFn = print) -> dict[str, float]:
        """Train the supernet (resumes from the last epoch checkpoint if one exists)."""
        assert spec.supernet is not None
        if spec.supernet.checkpoint is not None:
            return {}
        import torch

        from nasforge.data import load_dataset

        assert spec.training is not None
        ckpt_dir = cls.checkpoint_dir(spec, job_dir)
        done_marker = ckpt_dir / "trained.json"
        if done_marker.exists():
            return json.loads(done_marker.read_text())
        torch.manual_seed(spec.seed)
        data = load_dataset(spec.evaluation.dataset)
        # where the workers evaluate, the supernet trains: a job that asks for GPU workers trains on
        # the driver's GPU when it has one (checkpoints are written from CPU copies, so a job trained
        # on a GPU resumes, evaluates and exports anywhere)
        net = cls._build_supernet(spec).to(cls.compute_device(spec))
        trainer_cls = TRAINERS.get(spec.training.trainer)
        trainer = trainer_cls(net, data, spec.training, seed=spec.seed, checkpoint_dir=ckpt_dir,
                              options=spec.training.options)
        for note in getattr(trainer, "resume_notes", []):
            log(note)

        per_epoch = getattr(trainer, "steps_per_epoch", None)
        total = getattr(trainer, "total_steps", None)
        epochs = math.ceil(total / per_epoch) if per_epoch and total else None

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            log(f"supernet epoch {epoch}: {shown}")
            # what `nasforge status` / `list` show while the job trains (written whole, then renamed)
            tmp = ckpt_dir / f"{TRAINING_PROGRESS_FILE}.tmp"
            tmp.write_text(json.dumps({"epoch": epoch, "epochs": epochs, "metrics": metrics}))
            tmp.replace(ckpt_dir / TRAINING_PROGRESS_FILE)

        metrics = {k: float(v) for k, v in trainer.fit(on_epoch=on_epoch).items()}
        done_marker.write_text(json.dumps(metrics))
        if next(net.parameters()).is_cuda:  # hand the GPU memory to the workers that start next
            del trainer, net
            torch.cuda.empty_cache()
        return metrics

    @staticmethod
    def compute_device(spec: JobSpec) -> Any:
        """Where this process trains or evaluates the supernet: CUDA when the job asks for GPU workers and a
        GPU is here, else the CPU."""
        import torch

        return torch.device("cuda" if spec.workers.gpus > 0 and torch.cuda.is_available() else "cpu")

    @classmethod
    def worker_files(cls, spec: JobSpec, job_dir: Path) -> dict[str, Path]:
        """The trained weights (workers on other nodes cannot read the driver's job folder)."""
        from nasforge.supernets.trainer import latest_weights

        return {WEIGHTS_FILE: latest_weights(cls.checkpoint_dir(spec, job_dir))}

    # ---- worker ---------------------------------------------------------------------------
    def setup(self) -> None:
        from nasforge.data import load_dataset
        from nasforge.supernets.trainer import load_trained_supernet

        spec = self.spec
        assert spec.supernet is not None
        self.space = self.build_space(spec)
        self.data = load_dataset(spec.evaluation.dataset)
        self.device = self.compute_device(spec)
        self.supernet = load_trained_supernet(
            self.space, spec.supernet.name, spec.supernet.options, self.checkpoint_dir(spec, self.job_dir),
            weights=self.shipped.get(WEIGHTS_FILE),
        ).to(self.device).eval()
        n_cal = spec.evaluation.bn_recalibration_images
        self.calib = self.data.train[0][:n_cal].to(self.device)
        X, y = self.data.val if spec.evaluation.split == "val" else self.data.test
        if spec.evaluation.max_images is not None:
            X, y = X[: spec.evaluation.max_images], y[: spec.evaluation.max_images]
        self.eval_X, self.eval_y = X.to(self.device), y.to(self.device)
        self._children: OrderedDict[str, Any] = OrderedDict()
        self._reference: Any = None  # ReferenceTimer, built on first use with evaluation.latency.reference

    def child(self, arch: Arch) -> Any:
        """The recalibrated standalone child (cached per arch key, LRU)."""
        from nasforge.supernets.evaluate import prepare_child

        key = arch.key()
        if key in self._children:
            self._children.move_to_end(key)
            return self._children[key]
        model = prepare_child(self.supernet, arch, self.calib)
        self._children[key] = model
        if len(self._children) > CHILD_CACHE_SIZE:
            self._children.popitem(last=False)
        return model

    @property
    def tokens(self) -> bool:
        return getattr(self.supernet, "input_kind", "image") == "tokens"

    def example_input(self, arch: Arch, batch_size: int) -> Any:
        """A batch of the dataset's native shape: what the deployed child receives (it resizes).

        Token models: ``batch_size`` sequences of the dataset's length from the evaluation split.
        """
        import torch

        if self.tokens:
            reps = -(-batch_size // self.eval_X.shape[0])
            return self.eval_X.repeat(reps, 1)[:batch_size]
        g = torch.Generator().manual_seed(0)
        return torch.randn(batch_size, *self.data.input_shape, generator=g).to(self.device)

    TAKES_KNOWN_LATENCY = True

    def evaluate(self, arch: Arch, latency: Mapping[str, float] | None = None) -> dict[str, float]:
        """Accuracy (or loss), counted FLOPs / params / bytes, the peak memory of one forward pass
        at the latency batch size, and timed latency; ``latency``: the figures recorded for this
        child on this device, used instead of timing it again."""
        from nasforge.supernets.evaluate import count_flops_params, evaluate_classifier
        from nasforge.workers.memory import measure_peak_memory

        model = self.child(arch)
        metrics: dict[str, float] = {}
        scores = evaluate_classifier(model, self.eval_X, self.eval_y, self.spec.evaluation.batch_size)
        if self.tokens:
            metrics["loss"] = scores["loss"]
            metrics["perplexity"] = math.exp(min(scores["loss"], 700.0))
        else:
            metrics.update(scores)
        counted = count_flops_params(model, self.data.input_shape, input_dtype=self.eval_X.dtype)
        metrics["flops"] = float(counted["flops"])
        metrics["params"] = float(counted["params"])
        metrics["model_bytes"] = float(
            sum(t.numel() * t.element_size() for t in model.state_dict().values())
        )
        lat = self.spec.evaluation.latency
        metrics.update(measure_peak_memory(model, self.example_input(arch, lat.batch_size)))
        if lat.enabled and latency:
            metrics.update({k: float(v) for k, v in latency.items()})
            metrics["latency_cached"] = 1.0
        elif lat.enabled:
            metrics.update(self._time(model, arch))
            if lat.cache:
                metrics["latency_cached"] = 0.0
        return metrics

    def measure_latency(self, arch: Arch, latency: Mapping[str, float] | None = None) -> dict[str, float]:
        """Latency only (a device-class worker): the child's timed forward passes, no accuracy."""
        lat = self.spec.evaluation.latency
        if not lat.enabled:
            return {}
        if latency:
            return {**{k: float(latency[k]) for k in self.LATENCY_METRICS if k in latency}, "latency_cached": 1.0}
        timing = self._time(self.child(arch), arch)
        return {k: float(timing[k]) for k in self.LATENCY_METRICS + self.LATENCY_FLAGS if k in timing}

    def _time(self, model: Any, arch: Arch) -> dict[str, float]:
        """``evaluation.latency`` applied to one child; with ``reference``, normalised by the
        largest child timed just before it (one ``ReferenceTimer`` per worker, calibrated once)."""
        from nasforge.workers.latency import ReferenceTimer, measure_latency

        lat = self.spec.evaluation.latency
        kw = {"warmup": lat.warmup, "repeats": lat.repeats, "threads": lat.threads, "statistic": lat.statistic,
              "retries": lat.retries}
        x = self.example_input(arch, lat.batch_size)
        if not lat.reference:
            return measure_latency(model, x, **kw)
        if self._reference is None:
            from nasforge.supernets.evaluate import prepare_child

            largest = self.space.largest()
            self._reference = ReferenceTimer(prepare_child(self.supernet, largest, self.calib),
                                             self.example_input(largest, lat.batch_size), **kw)
            self._reference.calibrate()
        return self._reference.measure(model, x)

    def device_profile(self) -> dict[str, Any]:
        import torch

        from nasforge.workers.latency import device_profile

        lat = self.spec.evaluation.latency
        return device_profile(self.device, threads=lat.threads, batch_size=lat.batch_size, dtype=torch.float32,
                              statistic=lat.statistic, reference=lat.reference)

    # ---- export ---------------------------------------------------------------------------
    def export(self, arch: Arch, out_dir: Path, metadata: dict[str, Any]) -> list[Path]:
        import numpy as np
        import onnxruntime as ort
        import torch
        from safetensors.torch import save_model

        from nasforge.data import preprocessing

        assert self.spec.supernet is not None
        out_dir = Path(out_dir)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        model = self.child(arch).cpu().eval()
        files: list[Path] = []

        weights = out_dir / "model.safetensors"
        save_model(model, str(weights))
        files.append(weights)

        x = self.eval_X[:8].cpu()  # native shape: the child resizes to its resolution itself
        with torch.inference_mode():
            ref = model(x).numpy()

        onnx_path = out_dir / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on shape checks the ONNX check below covers
            torch.onnx.export(model, (x,), str(onnx_path), input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"input": x.numpy()})[0]
        onnx_diff = float(np.max(np.abs(got - ref)))
        if onnx_diff > ONNX_ATOL:
            raise NasforgeError(f"ONNX export differs from torch by {onnx_diff:.3g} (> {ONNX_ATOL}); not exported")
        files.append(onnx_path)

        pt2 = out_dir / "model.pt2"
        batch = torch.export.Dim("batch", min=1, max=65536)
        program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(pt2))
        files.append(pt2)

        meta = {
            "schema_version": ARCH_SCHEMA_VERSION,
            "kind": self.kind,
            "space": self.space.describe(),
            "supernet": {"name": self.spec.supernet.name, "options": self.spec.supernet.options},
            "arch": arch.to_dict(),
            "key": arch.key(),
            "input_shape": list(self.data.input_shape),
            "input_kind": getattr(self.supernet, "input_kind", "image"),
            "preprocessing": preprocessing(self.data),
            "onnx_check": {"max_abs_diff": onnx_diff, "atol": ONNX_ATOL, "runtime": f"onnxruntime {ort.__version__}"},
            "files": [p.name for p in files],
            **metadata,
        }
        arch_json = out_dir / "arch.json"
        arch_json.write_text(json.dumps(meta, indent=2, default=str) + "\n")
        files.append(arch_json)
        return files

    @classmethod
    def load_export(cls, path: Path, meta: dict[str, Any]) -> Any:
        from safetensors.torch import load_model

        space = SPACES.get(meta["space"]["id"])(meta["space"]["options"])
        arch = space.validate(Arch.from_dict(meta["arch"]))
        net_cls = SUPERNETS.get(meta["supernet"]["name"])
        model = net_cls.build_child(space, arch)
        load_model(model, str(Path(path) / "model.safetensors"))
        return model.eval()
