"""CompressionWorkload: bit / sparsity allocation on any trained model (job files with ``model:``).

- ``build_space``: build the model (``timm:NAME`` + weights, ``package.module:factory`` [+
  weights], or ``export:PATH`` of a nasforge export), discover its Conv/Linear layers and return
  a torch-free ``CompressionSpace`` whose options carry the layer table. Cached per process.
- ``prepare`` (coordinator, once, resumable): into ``JOB_DIR/compress/`` the dense weights,
  the reference logits of the uncompressed model on the calibration images (a prefix of the
  train split) and on the held-out split, and the per-layer level database (every layer at every
  level, computed once).
- ``setup`` / ``evaluate`` (workers): swap the stored levels into one model and measure ``kl``
  (mean KL(p_dense || p_compressed) on the calibration images), ``accuracy`` and ``loss`` on the
  held-out split, and the exact costs ``model_bytes`` (packed), ``avg_bits``, ``sparsity``,
  ``bops``, ``params``, ``flops``. Latency is not claimed: fake-quant and unstructured sparsity
  do not run faster on CPU.
- ``export``: ``model.safetensors`` (packed integer codes + fp16 scales + 1-bit masks),
  ``allocation.json``, ``model.onnx`` (the dequantized float32 model) and ``model.qdq.onnx``
  (quantized weights as uint4/uint8 codes + DequantizeLinear: about the packed size), both
  checked by onnxruntime against torch, and
  ``arch.json`` (``"kind": "compression"``); ``load_export`` rebuilds the compressed model
  (``nasforge.compress.export.load_compressed``).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nasforge.core.errors import ExportError, JobSpecError, option_message
from nasforge.core.paths import ordinary_file_mode
from nasforge.core.spec import JobSpec
from nasforge.core.types import ARCH_SCHEMA_VERSION, Arch
from nasforge.spaces.base import SearchSpace
from nasforge.spaces.compression import CompressionSpace, CompressionSpaceOptions
from nasforge.workers.base import LogFn, Workload

#: the export's ONNX graph with quantized weights as integer codes (``nasforge.compress.onnx_codes``)
QDQ_ONNX_FILE = "model.qdq.onnx"
#: largest |onnxruntime - torch| logit difference accepted, relative to the largest |logit| (>= 1)
ONNX_ATOL = 1e-4

FILLED_KEYS = ("layers", "other_bytes", "other_params")
_SPACE_CACHE: dict[str, CompressionSpace] = {}
_MODEL_CACHE: dict[str, Any] = {}


def _space_options(spec: JobSpec) -> CompressionSpaceOptions:
    from pydantic import ValidationError

    if spec.space.name != "compression":
        raise JobSpecError(f"space.name: a job with 'model:' compresses a model; use space 'compression', "
                           f"not {spec.space.name!r}")
    given = dict(spec.space.options)
    for k in FILLED_KEYS:
        if k in given:
            raise JobSpecError(f"space.options.{k}: filled in by layer discovery; remove it")
    try:
        opts = CompressionSpaceOptions.model_validate(given)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        msg = "unknown option" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
        if not loc:  # a check across options: its message usually starts with the key it is about
            raise JobSpecError(option_message("space.options", msg)) from None
        allowed = ", ".join(k for k in CompressionSpaceOptions.model_fields if k not in FILLED_KEYS)
        raise JobSpecError(f"space.options.{loc}: {msg} (options: {allowed})") from None
    unused = sorted(_UNUSED_BY_MODE[opts.mode] & given.keys())
    if unused:  # e.g. sparsities given in mode 'bits': the job would prune nothing, silently
        raise JobSpecError(f"space.options.{unused[0]}: mode {opts.mode!r} does not use it ({_MODE_DOES[opts.mode]}); "
                           + ("remove it (only mode 'sparsity' uses it)" if opts.mode == "joint" else
                              f"set mode: joint to search bit-widths and sparsities together, or remove {unused[0]}"))
    return opts


#: options a mode leaves unused, and what the mode does instead
_UNUSED_BY_MODE = {"bits": {"sparsities", "fixed_bits", "pruning", "nm"}, "sparsity": {"bits"},
                   "joint": {"fixed_bits"}}
_MODE_DOES = {"bits": "it searches bit-widths and prunes nothing",
              "sparsity": "it searches sparsities, every layer at fixed_bits",
              "joint": "it searches bit-widths with the sparsities"}


#: the dense model as ``prepare`` built it, pickled whole (``torch.save``): workers load it instead of
#: building it from its source; absent when the model does not pickle (workers then build it)
MODEL_PICKLE = "model.pt"


def _save_module(model: Any, path: Path, log: LogFn) -> None:
    import torch

    try:
        torch.save(model, str(path))
    except Exception as e:  # noqa: BLE001 - lambdas, hooks, local classes: workers build it themselves
        path.unlink(missing_ok=True)
        log(f"compression: the model does not pickle ({type(e).__name__}: {e}); every worker builds it from its source")


def _load_module(path: Path, spec: JobSpec, roots: tuple[str, ...]) -> Any:
    """The pickled dense model; the module of a ``package.module:factory`` source is imported first
    (from the search roots, as building it would), so its classes unpickle. Nothing is called."""
    import torch

    from nasforge.compress.sources import import_factory

    assert spec.model is not None
    if spec.model.module is not None:
        import_factory(spec.model.source, (*roots, *spec.model.search_path))
    return torch.load(str(path), weights_only=False).eval()


def _unpack(files: Mapping[str, tuple[str, bytes]], root: Path, job_name: str) -> Path:
    """Write the driver's prepared files into ``root`` (the driver's path, on this node), or into a
    temporary folder where that cannot be written; ``ready.json`` last, each file by rename, so
    workers unpacking at once on one node never read a half-written file."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        import tempfile

        root = Path(tempfile.gettempdir()) / f"nasforge-{job_name}-{root.parent.name}" / "compress"
        root.mkdir(parents=True, exist_ok=True)
    for name in sorted(files, key=lambda n: n == "ready.json"):
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        tmp.write_bytes(files[name][1])
        os.replace(tmp, target)
    return root


def _model_key(spec: JobSpec) -> str:
    assert spec.model is not None
    return json.dumps([spec.model.source, spec.model.weights, spec.model.options], sort_keys=True, default=str)


def build_dense_model(spec: JobSpec, search_roots: tuple[str, ...] = ()) -> Any:
    """The uncompressed model of ``spec.model`` (eval mode, CPU)."""
    from nasforge.compress.sources import build_model

    if spec.model is None:
        raise JobSpecError("model: a compression job needs a 'model:' block (source, weights, options)")
    src = spec.model.source
    search_roots = (*search_roots, *spec.model.search_path)
    if src.startswith("export:"):
        from nasforge.workers.exports import load_export

        return load_export(export_source_folder(src, search_roots)).eval().cpu()
    if src.startswith("job:"):
        raise JobSpecError("model.source: 'job:' sources are not supported; export the candidate "
                           "(nasforge export JOB CAND -o NAME) and use 'export:NAME'")
    return build_model(src, spec.model.weights, spec.model.options, search_roots)


def export_source_folder(source: str, search_roots: tuple[str, ...] | list[str] = ()) -> Path:
    """The folder of ``export:PATH``: absolute, or relative to the folder the job was submitted
    from, the current folder, or the exports folder (where ``nasforge export -o NAME`` wrote it)."""
    from nasforge.workers.exports import find_export

    given = source.split(":", 1)[1]
    try:
        return find_export(given, search_roots)
    except ExportError as e:
        raise JobSpecError(f"model.source: {e}; give the folder `nasforge export -o NAME` wrote, "
                           "e.g. export:NAME") from None


def _check_export_inputs(spec: JobSpec, data: Any, search_roots: tuple[str, ...]) -> None:
    """An ``export:`` model scored on inputs normalized otherwise than it was trained on gives
    meaningless accuracy and KL: refuse it, naming the statistics that match the export."""
    import numpy as np

    if spec.model is None or not spec.model.source.startswith("export:") or len(data.input_shape) != 3:
        return
    folder = export_source_folder(spec.model.source, (*search_roots, *spec.model.search_path))
    pre = json.loads((folder / "arch.json").read_text()).get("preprocessing") or {}
    if not pre.get("mean") or not pre.get("std"):
        return  # an export from before arch.json said how its inputs were normalized
    want = np.array([pre["mean"], pre["std"]], dtype=np.float64)
    have = np.array([data.mean, data.std], dtype=np.float64)
    # another split of the same data (another seed) moves the statistics by a fraction of a percent
    # of the std, which no model notices: within 2% of the export's std in mean and in std, it fits
    if want.shape == have.shape and np.all(np.abs(want - have) <= 0.02 * want[1]):
        return

    def fmt(v: Any) -> str:
        return "[" + ", ".join(f"{float(x):.4g}" for x in v) + "]"

    on = f"{pre['dataset']} " if pre.get("dataset") else ""
    raise JobSpecError(
        f"evaluation.dataset.normalize: {spec.model.source} was trained on {on}inputs normalized with mean "
        f"{fmt(pre['mean'])} std {fmt(pre['std'])}, this job's dataset gives mean {fmt(data.mean)} std "
        f"{fmt(data.std)}; use the export's dataset settings or set normalize: custom, mean: "
        f"{fmt(pre['mean'])}, std: {fmt(pre['std'])}"
    )


class CompressionWorkload(Workload):
    kind = "compression"

    # ---- coordinator ----------------------------------------------------------------------
    @classmethod
    def _model(cls, spec: JobSpec, search_roots: tuple[str, ...] = ()) -> Any:
        key = _model_key(spec)
        if key not in _MODEL_CACHE:
            _MODEL_CACHE.clear()  # one model per process
            _MODEL_CACHE[key] = build_dense_model(spec, search_roots)
        return _MODEL_CACHE[key]

    @classmethod
    def metrics(cls, spec: JobSpec) -> tuple[frozenset[str], str] | None:
        names = {"kl", "accuracy", "loss", "model_bytes", "avg_bits", "sparsity", "bops", "params", "flops",
                 "peak_memory_mb", "activation_peak_mb", "weight_mb"}
        return frozenset(names), "a compression job (fake-quant weights: latency is not timed)"

    @classmethod
    def build_space(cls, spec: JobSpec, search_roots: tuple[str, ...] = ()) -> SearchSpace:
        import torch

        from nasforge.compress.discovery import discover_layers, state_dict_split
        from nasforge.compress.metrics import as_logits

        opts = _space_options(spec)
        key = _model_key(spec) + opts.model_dump_json()
        if opts.input_shape is None:  # the probe input comes from the dataset: another dataset, another check
            key += spec.evaluation.dataset.model_dump_json()
        if key in _SPACE_CACHE:
            return _SPACE_CACHE[key]
        model = cls._model(spec, search_roots)
        if opts.input_shape is not None:
            x = torch.randn(1, *opts.input_shape, generator=torch.Generator().manual_seed(0))
        else:  # one real example: the right shape and dtype (images or token ids)
            from nasforge.data import load_dataset

            data = load_dataset(spec.evaluation.dataset)
            x = data.train[0][:1]
            _check_export_inputs(spec, data, search_roots)
        outputs: list[Any] = []  # what the model returns, from discovery's own forward pass
        hook = model.register_forward_hook(lambda _m, _i, o: outputs.append(o))
        try:
            layers, _unknown = discover_layers(model, x, group_by=opts.group_by, skip_first=opts.skip_first,
                                               skip_last=opts.skip_last, skip=opts.skip)
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise JobSpecError(
                f"model.source: {spec.model.source if spec.model else '?'} fails on an input of shape "
                f"{tuple(x.shape)} ({x.dtype}) from evaluation.dataset.name {spec.evaluation.dataset.name!r}: "
                f"{first}; use the dataset the model was built for (or set space.options.input_shape)"
            ) from None
        finally:
            hook.remove()
        try:
            as_logits(outputs[0])
        except TypeError as e:
            raise JobSpecError(f"model.source: {spec.model.source if spec.model else '?'}: {e}") from None
        if not layers:
            raise JobSpecError(f"model.source: {spec.model.source if spec.model else '?'} has no Conv/Linear "
                               "layer left to compress (check space.options.skip*)")
        other_bytes, other_params = state_dict_split(model, layers)
        space = CompressionSpace(opts.model_copy(update={"layers": layers, "other_bytes": other_bytes,
                                                         "other_params": other_params}))
        _SPACE_CACHE[key] = space
        return space

    @classmethod
    def validate_spec(cls, spec: JobSpec) -> None:
        from nasforge.data import dataset_name_error

        if spec.model is None:
            raise JobSpecError("model: a compression job needs a 'model:' block")
        ds = spec.evaluation.dataset
        if (bad := dataset_name_error(ds.name)) is not None:
            raise JobSpecError(bad)
        if spec.model.weights is not None and not Path(spec.model.weights).expanduser().exists():
            raise JobSpecError(f"model.weights: {spec.model.weights} does not exist")
        cls.build_space(spec)

    @staticmethod
    def root(job_dir: Path) -> Path:
        return Path(job_dir) / "compress"

    @classmethod
    def worker_files(cls, spec: JobSpec, job_dir: Path) -> dict[str, Path]:
        """Everything ``prepare`` wrote (the model itself, dense weights, reference logits, the level
        database): a worker on another node needs neither the driver's folder nor the model's
        weights file, nor runs its factory (which may train it) again."""
        root = cls.root(job_dir)
        return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}

    @classmethod
    def prepare(cls, spec: JobSpec, job_dir: Path, log: LogFn = print) -> dict[str, float]:
        """Dense weights, reference logits and the level database into ``JOB_DIR/compress``."""
        import torch
        from safetensors.torch import save_file, save_model

        from nasforge.compress.levels import LevelDatabase
        from nasforge.compress.metrics import accuracy, logits_of
        from nasforge.data import describe_inputs, load_dataset
        from nasforge.data.loaders import coarse_split_warning

        root = cls.root(job_dir)
        ready = root / "ready.json"
        if ready.exists():
            return json.loads(ready.read_text())["metrics"]
        root.mkdir(parents=True, exist_ok=True)
        roots = (str(Path.cwd()),)
        (root / "model.json").write_text(json.dumps({"search_roots": list(roots)}))
        t0 = time.perf_counter()
        space = cls.build_space(spec, roots)
        assert isinstance(space, CompressionSpace)
        model = cls._model(spec, roots)
        save_model(model, str(root / "dense.safetensors"))
        _save_module(model, root / MODEL_PICKLE, log)
        data = load_dataset(spec.evaluation.dataset)
        calib = data.train[0][: space.opts.calibration_images]
        X, y = cls._heldout(spec, data)
        if (coarse := coarse_split_warning(data, spec.evaluation.split, spec.evaluation.max_images)) is not None:
            log(f"warning: {coarse}")
        torch.manual_seed(spec.seed)
        ref_calib = logits_of(model, calib, spec.evaluation.batch_size)
        ref_eval = logits_of(model, X, spec.evaluation.batch_size)
        save_file({"calib": ref_calib.contiguous(), "eval": ref_eval.contiguous()}, str(root / "reference.safetensors"))
        ordinary_file_mode(root / "dense.safetensors", root / "reference.safetensors")
        log(f"compression: {len(space.opts.layers)} layers in {len(space.groups())} groups, "
            f"dense accuracy {accuracy(ref_eval, y):.4f} on {spec.evaluation.split} ({describe_inputs(data)}); "
            "building the level database")
        db = LevelDatabase(root / "levels", space)
        db.build(model, calib)
        metrics = {"dense_accuracy": accuracy(ref_eval, y), "layers": float(len(space.opts.layers)),
                   "groups": float(len(space.groups())), "levels": float(len(db.levels())),
                   "prepare_seconds": time.perf_counter() - t0}
        ready.write_text(json.dumps({"metrics": metrics}))
        return metrics

    @staticmethod
    def _heldout(spec: JobSpec, data: Any) -> tuple[Any, Any]:
        X, y = data.val if spec.evaluation.split == "val" else data.test
        if spec.evaluation.max_images is not None:
            X, y = X[: spec.evaluation.max_images], y[: spec.evaluation.max_images]
        return X, y

    # ---- worker ---------------------------------------------------------------------------
    def setup(self) -> None:
        import torch
        from safetensors.torch import load_file, load_model

        from nasforge.compress.levels import LevelDatabase
        from nasforge.data import load_dataset, preprocessing

        spec = self.spec
        self.threads = spec.evaluation.latency.threads
        torch.set_num_threads(self.threads)
        root = self.root(self.job_dir)
        if not (root / "ready.json").exists() and self.shipped:  # a node without the driver's job folder
            root = _unpack(self.shipped, root, spec.name)  # (only such a worker fetches the shipped files)
        if not (root / "ready.json").exists():
            self.prepare(spec, self.job_dir, log=lambda s: None)
        roots = tuple(json.loads((root / "model.json").read_text()).get("search_roots", []))
        if (root / MODEL_PICKLE).exists():  # the driver's model: its source is not run again here
            _MODEL_CACHE.clear()
            _MODEL_CACHE[_model_key(spec)] = _load_module(root / MODEL_PICKLE, spec, roots)
        space = self.build_space(spec, roots)
        assert isinstance(space, CompressionSpace)
        self.space = space
        self.model = copy.deepcopy(self._model(spec, roots))
        load_model(self.model, str(root / "dense.safetensors"))
        self.model.eval()
        self.dense_state = {k: v.clone() for k, v in self.model.state_dict().items()}
        ref = load_file(str(root / "reference.safetensors"))
        self.ref_calib, self.ref_eval = ref["calib"], ref["eval"]
        data = load_dataset(spec.evaluation.dataset)
        #: the input the model was scored on (the export's arch.json says so to whoever deploys it)
        self.preprocessing = preprocessing(data)
        self.calib = data.train[0][: space.opts.calibration_images]
        self.eval_X, self.eval_y = self._heldout(spec, data)
        self.db = LevelDatabase(root / "levels", space)
        # one forward pass at the latency batch size: its input and activations are the same for every
        # allocation (weights are fake-quantized, activations stay float), so they are measured once
        from nasforge.workers.memory import measure_peak_memory

        mem = measure_peak_memory(self.model, self.eval_X[: spec.evaluation.latency.batch_size].clone())  # not a view of all
        self.activation_peak_mb = mem["activation_peak_mb"]
        self.input_and_activations_mb = mem["peak_memory_mb"] - mem["weight_mb"]
        # the submit folder, then the job file's folder that holds the model module (model.search_path)
        self.search_roots = tuple(dict.fromkeys([*roots, *spec.model.search_path]))

    def compressed_model(self, arch: Arch) -> Any:
        """The worker's model with ``arch``'s levels swapped in (shared; valid until the next call)."""
        self.db.apply(self.model, self.space.layer_levels(self.space.validate(arch)))
        return self.model

    def evaluate(self, arch: Arch) -> dict[str, float]:
        from nasforge.compress.metrics import accuracy, cross_entropy, kl_divergence, logits_of
        from nasforge.workers.memory import MIB

        model = self.compressed_model(arch)
        bs = self.spec.evaluation.batch_size
        metrics = {"kl": kl_divergence(self.ref_calib, logits_of(model, self.calib, bs))}
        logits = logits_of(model, self.eval_X, bs)
        metrics["accuracy"] = accuracy(logits, self.eval_y)
        metrics["loss"] = cross_entropy(logits, self.eval_y)
        metrics.update({k: float(v) for k, v in self.space.cost(arch).items()})
        # memory as deployed: the weights at their packed size (what the export stores), plus the input
        # and activations of one pass (measured in setup)
        metrics["weight_mb"] = metrics["model_bytes"] / MIB
        metrics["activation_peak_mb"] = self.activation_peak_mb
        metrics["peak_memory_mb"] = metrics["weight_mb"] + self.input_and_activations_mb
        return metrics

    def device_profile(self) -> dict[str, Any]:
        import platform

        import torch

        return {"device": "cpu", "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                "threads": self.threads, "dtype": "float32 (fake-quant)",
                "latency": "not measured: fake-quant and unstructured sparsity do not run faster on CPU"}

    # ---- export ---------------------------------------------------------------------------
    def export(self, arch: Arch, out_dir: Path, metadata: dict[str, Any]) -> list[Path]:
        from nasforge.compress.export import WEIGHTS_FILE, load_compressed, pack_state_dict, write_weights
        from nasforge.compress.metrics import logits_of

        assert self.spec.model is not None
        arch = self.space.validate(arch)
        out_dir = Path(out_dir)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        self.model.load_state_dict(self.dense_state)
        tensors, layer_meta = pack_state_dict(self.model, self.space, arch, self.calib)
        weights = out_dir / WEIGHTS_FILE
        written = write_weights(tensors, layer_meta, weights)
        levels = self.space.layer_levels(arch)
        allocation = {
            "layers": [{"name": la.name, "group": la.group, "shape": la.shape, "bits": levels[la.name][0],
                        "sparsity": levels[la.name][1]} for la in self.space.opts.layers],
            "quantizer": {"granularity": self.space.opts.granularity, "group_size": self.space.opts.group_size,
                          "symmetric": self.space.opts.symmetric},
            "pruning": self.space.opts.pruning,
            "costs": self.space.cost(arch),
        }
        alloc_path = out_dir / "allocation.json"
        alloc_path.write_text(json.dumps(allocation, indent=2) + "\n")
        meta = {
            "schema_version": ARCH_SCHEMA_VERSION,
            "kind": self.kind,
            "space": {"id": self.space.id, "version": self.space.version},
            "arch": arch.to_dict(),
            "key": arch.key(),
            "model": {"source": self._source(), "options": dict(self.spec.model.options),
                      "weights": self.spec.model.weights, "search_roots": list(self.search_roots)},
            "packed_bytes": written,
            "preprocessing": self.preprocessing,
            "files": [WEIGHTS_FILE, "allocation.json"],  # + model.onnx once checked, below
            **metadata,
        }
        arch_json = out_dir / "arch.json"
        arch_json.write_text(json.dumps(meta, indent=2, default=str) + "\n")
        # the reloaded export must compute what was evaluated
        fake = logits_of(self.compressed_model(arch), self.calib[:64])
        reloaded = load_compressed(out_dir, build=self._builder())
        again = logits_of(reloaded, self.calib[:64])
        diff = float((fake - again).abs().max())
        meta["reload_check"] = {"max_abs_logit_diff": diff, "images": int(len(fake))}
        if diff > 1e-3 * max(1.0, float(fake.abs().max())):
            arch_json.write_text(json.dumps(meta, indent=2, default=str) + "\n")
            raise RuntimeError(f"compressed export reloads with logits off by {diff:.3g}")
        files = [weights, alloc_path]
        meta["onnx_check"], meta["onnx_qdq_check"] = self._export_onnx(reloaded, out_dir / "model.onnx",
                                                                        tensors, layer_meta)
        if "max_abs_diff" in meta["onnx_check"]:
            files.append(out_dir / "model.onnx")
        if "max_abs_diff" in meta["onnx_qdq_check"]:
            files.append(out_dir / QDQ_ONNX_FILE)
        meta["files"] = [p.name for p in files]
        arch_json.write_text(json.dumps(meta, indent=2, default=str) + "\n")
        return [*files, arch_json]

    def _export_onnx(self, model: Any, path: Path, tensors: Mapping[str, Any],
                     layers: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``model.onnx`` and ``model.qdq.onnx`` of the reloaded compressed model, each checked by
        onnxruntime against torch; returns the two records for ``arch.json``. ``tensors`` /
        ``layers``: the packed export ``model`` was reloaded from.

        ``model.onnx`` holds the dequantized float32 weights (the quantization grid's values,
        pruned weights 0): any runtime runs it at full speed, at the dense model's file size.
        ``model.qdq.onnx`` holds each quantized weight as its integer codes (uint4 for 2..4 bits,
        uint8 up to 8) with scales, zero points and a ``DequantizeLinear`` node (``onnx_codes``):
        about the packed size. onnxruntime then dequantizes on every call unless the session sets
        ``session.disable_quant_qdq`` to "1" (it decodes once at load and runs as fast as the float
        graph: ``python -m benchmarks onnx_export``), which the record says. A model torch cannot trace is exported without ONNX
        (the reason is recorded); a float graph that differs from torch is refused; a coded graph
        that differs is left out with the reason."""
        import numpy as np
        import onnxruntime as ort
        import torch

        from nasforge.compress.metrics import as_logits
        from nasforge.compress.onnx_codes import UINT4_OPSET, store_codes
        from nasforge.core.errors import NasforgeError

        x = self.calib[:8].cpu()
        model = model.cpu().eval()
        with torch.inference_mode():
            ref = as_logits(model(x)).numpy()
        atol = ONNX_ATOL * max(1.0, float(np.max(np.abs(ref))))
        runtime = f"onnxruntime {ort.__version__}"

        def diff_of(p: Path) -> float:
            sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
            return float(np.max(np.abs(sess.run(None, {"input": x.numpy()})[0] - ref)))

        skipped = self._trace_onnx(model, x, path, opset=None, fold=True)
        if skipped is not None:
            return {"skipped": skipped}, {"skipped": skipped}
        diff = diff_of(path)
        if diff > atol:
            path.unlink()
            raise NasforgeError(f"ONNX export differs from torch by {diff:.3g} (> {atol:.3g}); not exported")
        plain = {"max_abs_diff": diff, "atol": atol, "runtime": runtime, "bytes": path.stat().st_size,
                 "weights": "float32, dequantized from the packed codes (any ONNX runtime runs it at full speed)"}

        if not any(int(info["bits"]) <= 8 for info in layers.values()):
            return plain, {"skipped": "no weight is quantized (16/32 bits): model.onnx holds them as they are"}
        qdq = path.with_name(QDQ_ONNX_FILE)
        # unfolded, so that every weight is an initializer by its own name (BatchNorm stays a node)
        skipped = self._trace_onnx(model, x, qdq, opset=UINT4_OPSET, fold=False)
        if skipped is not None:
            return plain, {"skipped": skipped}
        try:
            coded = store_codes(qdq, tensors, layers, model.state_dict())  # model: the unpacked weights
        except Exception as e:  # noqa: BLE001 - model.onnx still serves
            qdq.unlink(missing_ok=True)
            return plain, {"skipped": f"storing the codes failed: {type(e).__name__}: {str(e)[:200]}"}
        if not coded["weights_as_codes"]:
            qdq.unlink(missing_ok=True)
            return plain, {"skipped": "no quantized weight found verbatim in the traced graph", **coded}
        diff = diff_of(qdq)
        if diff > atol:
            qdq.unlink()
            return plain, {"skipped": f"the coded graph differs from torch by {diff:.3g} (> {atol:.3g})", **coded}
        how = f"{coded['weights_as_codes']} quantized weights as {'/'.join(coded.pop('code_types'))} codes + DequantizeLinear"
        if coded["weights_as_float"]:
            how += f", {coded['weights_as_float']} as float32"
        return plain, {"max_abs_diff": diff, "atol": atol, "runtime": runtime, "bytes": qdq.stat().st_size,
                       "weights": how, **coded,
                       "session_config": {"session.disable_quant_qdq": "1"},
                       "note": "with this onnxruntime session setting the weights are decoded once at load and "
                               "it runs as fast as model.onnx; without it they are decoded on every call"}

    @staticmethod
    def _trace_onnx(model: Any, x: Any, path: Path, *, opset: int | None, fold: bool) -> str | None:
        """Writes ``path``; None, or why torch could not trace the model."""
        import warnings

        import torch

        from nasforge.compress.metrics import logits_only

        kw = {"opset_version": opset} if opset else {}
        try:
            with warnings.catch_warnings(), logits_only(model):
                warnings.simplefilter("ignore")  # tracer notes on shape checks the check covers
                torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["logits"],
                                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
                                  do_constant_folding=fold, **kw)
        except Exception as e:  # noqa: BLE001 - a user's model may hold ops ONNX cannot express
            path.unlink(missing_ok=True)
            reason = (str(e).strip().splitlines() or [""])[0][:300]
            return f"torch.onnx.export failed: {type(e).__name__}: {reason}"
        return None

    def _source(self) -> str:
        """``model.source`` as the export records it: an ``export:`` folder made absolute, so the
        compressed export loads from any folder (the source export must stay where it is)."""
        assert self.spec.model is not None
        src = self.spec.model.source
        if src.startswith("export:"):
            return f"export:{export_source_folder(src, self.search_roots)}"
        return src

    def _builder(self) -> Any:
        spec = self.spec

        def build(block: Mapping[str, Any]) -> Any:
            return build_dense_model(spec, tuple(block.get("search_roots", [])))

        return build

    @classmethod
    def load_export(cls, path: Path, meta: dict[str, Any]) -> Any:
        from nasforge.compress.export import load_compressed
        from nasforge.compress.sources import build_model

        def build(block: Mapping[str, Any]) -> Any:
            src = block["source"]
            if src.startswith("export:"):
                from nasforge.workers.exports import load_export

                return load_export(export_source_folder(src, block.get("search_roots", [])))
            return build_model(src, None, block.get("options", {}), block.get("search_roots", []),
                               require_weights=False)

        return load_compressed(path, build=build)


__all__ = ["CompressionWorkload", "build_dense_model"]
