"""Ray Tune glue: tune the sandwich recipe, and train candidates from scratch as Tune trials.

- :func:`supernet_trainable` is a Ray Tune function trainable that trains a supernet with the
  sandwich trainer; every epoch it reports ``largest_val_acc``, ``smallest_val_acc`` and their
  mean ``mean_val_acc`` with a checkpoint, and resumes from Tune's checkpoint when a trial is
  restored. Tunable keys of its config: ``lr``, ``num_random``, ``distill_temperature`` (plus
  any ``training.options`` key given under ``options``). :func:`tune_supernet_recipe` runs it
  under a ``Tuner`` with an optional ASHA scheduler.
- :func:`train_standalone` trains one child alone with the same recipe and epochs (the
  train-from-scratch baseline: the sandwich trainer with that arch as the only, label-trained
  child, so dropout, label smoothing, weight decay, schedule and batch order are the same), then
  scores it after BN recalibration. :func:`run_standalone_trials` runs several candidates as Ray
  Tune trials, with ASHA early stopping on ``val_accuracy`` when asked.

Ray must be initialized by the caller (``ray.init(num_cpus=..., include_dashboard=False)``);
these functions never start or stop it.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from nasforge.core.spec import DatasetSpec, TrainingSpec
from nasforge.core.types import Arch
from nasforge.spaces import SPACES
from nasforge.spaces.base import SearchSpace
from nasforge.supernets import SUPERNETS
from nasforge.supernets.evaluate import evaluate_classifier, prepare_child
from nasforge.supernets.trainer import CHECKPOINT_PREFIX, FixedSampler, SandwichTrainer

#: keys of a supernet trial's config that map to trainer settings
TUNABLE_KEYS = ("lr", "num_random", "distill_temperature")


# ------------------------------------------------------------------------------------------------
# Train from scratch


def train_standalone(
    space: SearchSpace,
    arch: Arch,
    data: Any,
    spec: TrainingSpec,
    seed: int,
    *,
    supernet_name: str = "bignas",
    supernet_options: Mapping[str, Any] | None = None,
    checkpoint_dir: Path | str | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    calib_images: int = 1000,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Train child ``arch`` alone with the recipe ``spec`` (same epochs, LR schedule, regularizers).

    Returns ``accuracy`` and ``loss`` on ``data.test``, ``val_accuracy`` on ``data.val`` (after
    BN recalibration on ``calib_images`` training images, like inherited children),
    ``train_seconds``, ``flops`` and ``params``. ``checkpoint_dir`` (default: a temporary folder
    removed afterwards) makes the run resumable. ``on_epoch`` is forwarded to the trainer.
    """
    arch = space.validate(arch)
    torch.manual_seed(seed)
    net = SUPERNETS.get(supernet_name, "supernet.name")(space, dict(supernet_options or {})).to(device)
    options = dict(spec.options)
    options.update({"sampling": "sandwich", "num_random": 0, "eval_smallest": False})
    own_dir = checkpoint_dir is None
    ckpt = Path(tempfile.mkdtemp(prefix="nasforge-standalone-")) if own_dir else Path(checkpoint_dir)
    try:
        trainer = SandwichTrainer(net, data, spec, seed=seed, checkpoint_dir=ckpt, options=options,
                                  arch_sampler=FixedSampler([]), largest=arch, device=device)
        t0 = time.perf_counter()
        final = trainer.fit(on_epoch=on_epoch)
        seconds = final.get("train_seconds", time.perf_counter() - t0)
        return {**score_child(net, arch, data, calib_images), "train_seconds": float(seconds)}
    finally:
        if own_dir:
            shutil.rmtree(ckpt, ignore_errors=True)


def score_child(supernet: Any, arch: Arch, data: Any, calib_images: int = 1000) -> dict[str, float]:
    """Test / val accuracy of child ``arch`` of a trained supernet after BN recalibration."""
    device = next(supernet.parameters()).device
    child = prepare_child(supernet, arch, data.train[0][:calib_images].to(device))
    test = evaluate_classifier(child, *data.test)
    val = evaluate_classifier(child, *data.val)
    cost = supernet.space.cost(arch)
    return {"accuracy": test["accuracy"], "loss": test["loss"], "val_accuracy": val["accuracy"],
            "flops": float(cost["flops"]), "params": float(cost["params"])}


def standalone_trainable(config: dict[str, Any]) -> None:
    """Ray Tune trainable: one candidate trained from scratch; reports ``val_accuracy`` per epoch.

    Config: ``space`` / ``space_options``, ``arch`` (``Arch.to_dict()``), ``dataset`` and
    ``training`` (dicts of DatasetSpec / TrainingSpec), ``seed``, ``supernet``, ``threads``.
    The last epoch's report also holds the test ``accuracy``, ``loss``, ``flops``, ``params``.
    """
    from ray import tune

    from nasforge.data import load_dataset

    torch.set_num_threads(int(config.get("threads", 1)))
    space = SPACES.get(config["space"])(config.get("space_options", {}))
    arch = space.validate(Arch.from_dict(config["arch"]))
    data = load_dataset(DatasetSpec(**config["dataset"]))
    spec = TrainingSpec(**config["training"])
    seed = int(config.get("seed", 0))
    torch.manual_seed(seed)
    net = SUPERNETS.get(config.get("supernet", "bignas"))(space, config.get("supernet_options", {}))
    options = {**spec.options, "sampling": "sandwich", "num_random": 0, "eval_smallest": False}
    ckpt = Path(tempfile.mkdtemp(prefix="nasforge-trial-"))
    try:
        trainer = SandwichTrainer(net, data, spec, seed=seed, checkpoint_dir=ckpt, options=options,
                                  arch_sampler=FixedSampler([]), largest=arch)

        def report(epoch: int, metrics: dict[str, float]) -> None:
            out = {"epoch": epoch, "val_accuracy": metrics["largest_val_acc"], "arch_key": arch.key(),
                   "epoch_seconds": metrics["epoch_seconds"]}
            if epoch >= trainer.num_epochs:
                out.update({k: v for k, v in score_child(net, arch, data).items() if k != "val_accuracy"})
            tune.report(out)

        trainer.fit(on_epoch=report)
    finally:
        shutil.rmtree(ckpt, ignore_errors=True)


def run_standalone_trials(
    space: SearchSpace,
    archs: Sequence[Arch],
    dataset: DatasetSpec,
    training: TrainingSpec,
    *,
    seed: int = 0,
    supernet_name: str = "bignas",
    asha: bool = False,
    grace_period: int = 1,
    reduction_factor: float = 2,
    max_concurrent: int | None = None,
    cpus_per_trial: float = 1,
    storage_path: Path | str | None = None,
) -> list[dict[str, Any]]:
    """Train each arch from scratch as one Ray Tune trial; one result dict per arch, in order.

    With ``asha`` an ``ASHAScheduler`` (time attribute: epochs reported) stops trials whose
    ``val_accuracy`` falls behind; a stopped trial's dict has ``stopped_early: True`` and its
    last ``val_accuracy`` but no test ``accuracy``. A failed trial's dict has ``error``.
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    archs = [space.validate(a) for a in archs]
    max_t = max(1, math.ceil(training.epochs))
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=min(grace_period, max_t),
                               reduction_factor=reduction_factor) if asha else None)
    param_space = {
        "space": space.id, "space_options": space.options.model_dump(mode="json"),
        "arch": tune.grid_search([a.to_dict() for a in archs]),
        "dataset": dataset.model_dump(mode="json"), "training": training.model_dump(mode="json"),
        "seed": seed, "supernet": supernet_name, "threads": max(1, int(cpus_per_trial)),
    }
    own_storage = storage_path is None
    storage = Path(tempfile.mkdtemp(prefix="nasforge-tune-")) if own_storage else Path(storage_path)
    try:
        tuner = tune.Tuner(
            tune.with_resources(standalone_trainable, {"cpu": cpus_per_trial}),
            param_space=param_space,
            tune_config=tune.TuneConfig(metric="val_accuracy", mode="max", scheduler=scheduler,
                                        max_concurrent_trials=max_concurrent),
            run_config=tune.RunConfig(storage_path=str(storage.resolve()), name="standalone", verbose=0),
        )
        grid = tuner.fit()
        by_key: dict[str, dict[str, Any]] = {}
        for result in grid:
            key = Arch.from_dict(result.config["arch"]).key()
            metrics = dict(result.metrics or {})
            row: dict[str, Any] = {k: metrics[k] for k in ("val_accuracy", "accuracy", "loss", "flops", "params",
                                                            "epoch") if k in metrics}
            if result.error is not None:
                row["error"] = str(result.error).splitlines()[0][:500]
            elif "accuracy" not in row:
                row["stopped_early"] = True
            by_key[key] = row
        return [{"arch_key": a.key(), **by_key.get(a.key(), {"error": "trial did not run"})} for a in archs]
    finally:
        if own_storage:
            shutil.rmtree(storage, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# Tuning the supernet recipe


def supernet_trainable(config: dict[str, Any]) -> None:
    """Ray Tune trainable: the sandwich trainer with tunable ``lr`` / ``num_random`` / ``distill_temperature``.

    Config: ``space`` / ``space_options``, ``supernet`` / ``supernet_options``, ``dataset`` and
    ``training`` (dicts), ``seed``, ``threads``, the tunable keys, and ``options`` (extra
    ``training.options``). Reports ``largest_val_acc``, ``smallest_val_acc``, ``mean_val_acc``
    and ``epoch`` after every epoch with a Tune checkpoint; a restored trial resumes from it.
    """
    from ray import tune

    from nasforge.data import load_dataset

    torch.set_num_threads(int(config.get("threads", 1)))
    space = SPACES.get(config["space"])(config.get("space_options", {}))
    data = load_dataset(DatasetSpec(**config["dataset"]))
    base = dict(config["training"])
    if "lr" in config:
        base["lr"] = float(config["lr"])
    options = {**base.get("options", {}), **config.get("options", {})}
    for key in ("num_random", "distill_temperature"):
        if key in config:
            options[key] = config[key]
    base["options"] = options
    spec = TrainingSpec(**base)
    seed = int(config.get("seed", 0))
    torch.manual_seed(seed)
    net = SUPERNETS.get(config.get("supernet", "bignas"))(space, config.get("supernet_options", {}))
    ckpt = Path(tempfile.mkdtemp(prefix="nasforge-supernet-trial-"))
    try:
        restored = tune.get_checkpoint()
        if restored is not None:
            with restored.as_directory() as d:
                epoch = int(json.loads((Path(d) / "state.json").read_text())["epoch"])
                shutil.copytree(d, ckpt / f"{CHECKPOINT_PREFIX}{epoch:04d}", dirs_exist_ok=True)
        trainer = SandwichTrainer(net, data, spec, seed=seed, checkpoint_dir=ckpt, options=options)

        def report(epoch: int, metrics: dict[str, float]) -> None:
            out = {"epoch": epoch, "largest_val_acc": metrics["largest_val_acc"],
                   "smallest_val_acc": metrics["smallest_val_acc"],
                   "mean_val_acc": (metrics["largest_val_acc"] + metrics["smallest_val_acc"]) / 2,
                   "loss_largest": metrics["loss_largest"]}
            epoch_dir = ckpt / f"{CHECKPOINT_PREFIX}{epoch:04d}"
            tune.report(out, checkpoint=tune.Checkpoint.from_directory(str(epoch_dir)))

        trainer.fit(on_epoch=report)
    finally:
        shutil.rmtree(ckpt, ignore_errors=True)


def tune_supernet_recipe(
    *,
    space: SearchSpace,
    supernet_name: str,
    dataset: DatasetSpec,
    training: TrainingSpec,
    param_space: Mapping[str, Any],
    num_samples: int = 1,
    seed: int = 0,
    metric: str = "mean_val_acc",
    asha: bool = True,
    grace_period: int = 1,
    cpus_per_trial: float = 1,
    max_concurrent: int | None = None,
    storage_path: Path | str | None = None,
    supernet_options: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Tune the sandwich recipe with Ray Tune; returns one dict per trial, best ``metric`` first.

    ``param_space`` holds Tune search spaces for any of ``lr``, ``num_random``,
    ``distill_temperature`` and ``options`` (e.g. ``{"lr": tune.loguniform(0.02, 0.3)}``).
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    unknown = set(param_space) - set(TUNABLE_KEYS) - {"options"}
    if unknown:
        raise ValueError(f"param_space keys {sorted(unknown)} are not tunable; use {TUNABLE_KEYS} or 'options'")
    max_t = max(1, math.ceil(training.epochs))
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=min(grace_period, max_t))
                 if asha else None)
    config = {
        "space": space.id, "space_options": space.options.model_dump(mode="json"),
        "supernet": supernet_name, "supernet_options": dict(supernet_options or {}),
        "dataset": dataset.model_dump(mode="json"), "training": training.model_dump(mode="json"),
        "seed": seed, "threads": max(1, int(cpus_per_trial)), **param_space,
    }
    own_storage = storage_path is None
    storage = Path(tempfile.mkdtemp(prefix="nasforge-tune-")) if own_storage else Path(storage_path)
    try:
        tuner = tune.Tuner(
            tune.with_resources(supernet_trainable, {"cpu": cpus_per_trial}),
            param_space=config,
            tune_config=tune.TuneConfig(metric=metric, mode="max", scheduler=scheduler, num_samples=num_samples,
                                        max_concurrent_trials=max_concurrent),
            run_config=tune.RunConfig(storage_path=str(storage.resolve()), name="supernet-recipe", verbose=0),
        )
        rows = []
        for result in tuner.fit():
            row = {k: result.config[k] for k in (*TUNABLE_KEYS, "options") if k in result.config}
            row.update({k: v for k, v in (result.metrics or {}).items()
                        if k in ("largest_val_acc", "smallest_val_acc", "mean_val_acc", "epoch")})
            if result.error is not None:
                row["error"] = str(result.error).splitlines()[0][:500]
            rows.append(row)
        return sorted(rows, key=lambda r: -float(r.get(metric, -math.inf)))
    finally:
        if own_storage:
            shutil.rmtree(storage, ignore_errors=True)
