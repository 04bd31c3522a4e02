"""Predictors and predictor-guided search on the quickstart BigNAS supernet (MNIST-5k, CPU).

Steps (all real: the supernet is trained here with the SandwichTrainer, children are extracted,
BN-recalibrated and evaluated on the val and test splits, latencies are timed on this CPU):
1. accuracy predictors fitted on 300 children, Kendall tau / Spearman rho / RMSE on 200 others,
   beside the measurement's own repeatability (val vs test accuracy of the same children) and the
   tau ceiling it implies; MLP with and without FBNetV3 proxy pretraining (FLOPs/params of 2000
   sampled archs) at 50 samples (3 seeds, different 50-subsets), and how well those proxies rank
   accuracy at all;
2. latency: per-op LUT (``profile_device``) + learned correction fitted on the 300 training
   children's measured latency; share of the 200 held-out children within +-10% of measured; the
   same on the elastic_vit, pooling_layout and lm_transformer spaces (``other_space_latency``);
3. guided search (with and without the latency table) vs plain evolution with real evaluations
   only (same budget, same reference point, 5 seeds); a child's measured metrics are cached by
   arch key (the latency cache), so every method sees the same measurement of the same child;
4. predictor-only search speed: our vectorized evolution vs Optuna's NSGAIISampler on the same
   batched-predictor objective and the same number of scored candidates; hypervolume each reaches.
Noise: every latency is the median over interleaved rounds (all children in a shuffled order per
round) of each round's fastest of 10 calls, normalised by the largest child timed just before it
(``ReferenceTimer``); the spread seen, the re-measurement agreement and the same figures for
un-normalised timings of the same calls are reported.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

CACHE = Path(__file__).resolve().parent.parent / ".nasforge" / "bench-predictors"


def quickstart_spec() -> Any:
    import yaml

    from nasforge.core.spec import JobSpec

    path = Path(__file__).resolve().parent.parent / "examples" / "quickstart.yaml"
    return JobSpec.model_validate(yaml.safe_load(path.read_text()))


def trained_supernet(spec: Any, log: Any = print) -> tuple[Any, Any, Any]:
    """(space, supernet, data): trains into CACHE once (resumable), reuses it afterwards."""
    import torch

    from nasforge.data import load_dataset
    from nasforge.spaces import SPACES
    from nasforge.supernets import SUPERNETS, TRAINERS
    from nasforge.supernets.trainer import load_trained_supernet

    space = SPACES.get(spec.space.name)(spec.space.options)
    data = load_dataset(spec.evaluation.dataset)
    ckpt = CACHE / "supernet"
    done = ckpt / "trained.json"
    if not done.exists():
        torch.manual_seed(spec.seed)
        net = SUPERNETS.get(spec.supernet.name)(space, spec.supernet.options)
        trainer = TRAINERS.get(spec.training.trainer)(net, data, spec.training, seed=spec.seed, checkpoint_dir=ckpt,
                                                      options=spec.training.options)
        metrics = trainer.fit(on_epoch=lambda e, m: log(f"supernet epoch {e}: {m}"))
        import json

        done.write_text(json.dumps({k: float(v) for k, v in metrics.items()}))
    net = load_trained_supernet(space, spec.supernet.name, spec.supernet.options, ckpt)
    return space, net, data


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    trained_supernet(quickstart_spec())


# ---- measurement ---------------------------------------------------------------------------------
class Oracle:
    """Real evaluation of children, cached by arch key.

    Accuracy: after BN recalibration, on the val and the test split separately (500 images each;
    neither is seen by supernet training); ``accuracy`` is their mean (1000 images), and the two
    halves give the measurement's own noise ceiling. Latency: timed on this CPU (batch 1, 1 thread)
    in ``rounds`` interleaved passes over all new children (shuffled per pass); per pass the min of
    ``repeats`` calls, the value is the median over passes; even and odd passes give two
    independent re-measurements of the same child."""

    def __init__(self, space: Any, net: Any, data: Any, spec: Any, *, rounds: int = 4, repeats: int = 10):
        import torch

        self.space, self.net, self.spec = space, net, spec
        n_cal = spec.evaluation.bn_recalibration_images
        self.calib = data.train[0][:n_cal]
        self.halves = (data.val, data.test)
        self.n_images = sum(int(h[0].shape[0]) for h in self.halves)
        self.rounds, self.repeats = rounds, repeats
        self.x1 = torch.randn(1, *tuple(data.train[0].shape[1:]), generator=torch.Generator().manual_seed(0))
        self.cache: dict[str, dict[str, float]] = {}
        self.spreads: list[float] = []
        self.timer: Any = None

    def _reference(self) -> Any:
        from nasforge.supernets.evaluate import prepare_child
        from nasforge.workers.latency import ReferenceTimer

        if self.timer is None:
            self.timer = ReferenceTimer(prepare_child(self.net, self.space.largest(), self.calib), self.x1,
                                        warmup=3, repeats=self.repeats, threads=1, statistic="min")
            self.timer.calibrate()
        return self.timer

    def measure(self, archs: list[Any]) -> list[dict[str, float]]:
        from nasforge.supernets.evaluate import evaluate_classifier, prepare_child

        todo = list({a.key(): a for a in archs if a.key() not in self.cache}.values())
        if not todo:
            return [self.cache[a.key()] for a in archs]
        models = [prepare_child(self.net, a, self.calib) for a in todo]
        bs = self.spec.evaluation.batch_size
        scores = [[evaluate_classifier(m, X, y, bs) for X, y in self.halves] for m in models]
        from nasforge.workers.latency import time_interleaved

        t = time_interleaved(models, [self.x1] * len(models), self._reference().measure, rounds=self.rounds,
                             rng=np.random.default_rng(len(self.cache)))
        per_round = t["latency_ms"]  # min of calls, normalised by the reference
        per_round_raw = t["latency_raw_ms"]  # the same calls, min, not normalised
        per_round_median = t["latency_median_ms"] / t["latency_reference_scale"]  # median, not normalised
        med = np.median(per_round, axis=0)
        med_of_medians = np.median(per_round_median, axis=0)
        even, odd = np.median(per_round[0::2], axis=0), np.median(per_round[1::2], axis=0)
        for i, a in enumerate(todo):
            (va, te) = scores[i]
            self.cache[a.key()] = {
                "accuracy": (va["accuracy"] + te["accuracy"]) / 2, "loss": (va["loss"] + te["loss"]) / 2,
                "accuracy_val": va["accuracy"], "accuracy_test": te["accuracy"],
                "loss_val": va["loss"], "loss_test": te["loss"],
                "latency_ms": float(med[i]), "latency_even_ms": float(even[i]), "latency_odd_ms": float(odd[i]),
                "latency_median_stat_ms": float(med_of_medians[i]),
                "latency_raw_even_ms": float(np.median(per_round_raw[0::2, i])),
                "latency_raw_odd_ms": float(np.median(per_round_raw[1::2, i])),
                "latency_raw_ms": float(np.median(per_round_raw[:, i])),
                "latency_median_stat_even_ms": float(np.median(per_round_median[0::2, i])),
                "latency_median_stat_odd_ms": float(np.median(per_round_median[1::2, i])),
            }
            self.spreads.append(float((per_round[:, i].max() - per_round[:, i].min()) / med[i]))
        return [self.cache[a.key()] for a in archs]


def tau_ceiling(split_half_tau: float) -> float:
    """Kendall tau a perfect predictor of a child's true accuracy could reach against the
    accuracy measured on both halves together, given the tau between the two halves.

    Gaussian model: tau = 2/pi asin(r); the halves' correlation r is the reliability of one half;
    Spearman-Brown gives the reliability of both, R = 2r / (1 + r); truth vs measurement
    correlates as sqrt(R)."""
    r = float(np.sin(np.pi / 2 * split_half_tau))
    if r <= 0:
        return 0.0
    rel = 2 * r / (1 + r)
    return float(2 / np.pi * np.arcsin(np.sqrt(rel)))


def unique_archs(space: Any, n: int, seed: int) -> list[Any]:
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    while len(out) < n:
        a = space.sample(rng)
        out.setdefault(a.key(), a)
    return list(out.values())


# ---- the benchmark ----------------------------------------------------------------------------
def run(quick: bool = False) -> dict[str, Any]:
    import torch

    from nasforge.core.types import Direction, EvalResult, Objective
    from nasforge.predictors import PREDICTORS
    from nasforge.predictors.features import arch_features, cost_matrix
    from nasforge.predictors.latency import LatencyLUT, LatencyPredictor
    from nasforge.predictors.metrics import ranking_report
    from nasforge.search import STRATEGIES
    from nasforge.search.pareto import hypervolume
    from nasforge.workers.profile import profile_device

    torch.set_num_threads(1)
    t_start = time.perf_counter()
    notes: list[str] = []
    spec = quickstart_spec()
    space, net, data = trained_supernet(spec)
    n_train, n_test = (60, 40) if quick else (300, 200)
    oracle = Oracle(space, net, data, spec, rounds=2 if quick else 4)
    archs = unique_archs(space, n_train + n_test, seed=123)
    t0 = time.perf_counter()
    measured = oracle.measure(archs)
    measure_s = time.perf_counter() - t0
    col = {k: np.array([m[k] for m in measured]) for k in measured[0]}  # one array per measured key
    acc, loss, lat = col["accuracy"], col["loss"], col["latency_ms"]
    acc_val, acc_test = col["accuracy_val"], col["accuracy_test"]
    lat_even, lat_odd = col["latency_even_ms"], col["latency_odd_ms"]
    lat_med, lat_med_even, lat_med_odd = (col["latency_median_stat_ms"], col["latency_median_stat_even_ms"],
                                          col["latency_median_stat_odd_ms"])
    lat_raw, lat_raw_even, lat_raw_odd = col["latency_raw_ms"], col["latency_raw_even_ms"], col["latency_raw_odd_ms"]
    tr, te = slice(0, n_train), slice(n_train, n_train + n_test)
    rows: list[dict[str, Any]] = []

    # 1. accuracy predictors -------------------------------------------------------------------
    Xc = arch_features(space, archs, with_cost=True)
    X = arch_features(space, archs)
    fits: dict[str, dict[str, float]] = {}
    for name in PREDICTORS.names():
        for with_cost, feats in (("onehot+cost", Xc), ("onehot", X)):
            t1 = time.perf_counter()
            pred = PREDICTORS.get(name)(seed=0).fit(feats[tr], acc[tr])
            mean, std = pred.predict(feats[te])
            rep = ranking_report(acc[te], mean, k=10)
            fits[f"{name}/{with_cost}"] = rep
            rows.append({"part": "accuracy", "predictor": name, "features": with_cost, "train": n_train,
                         "kendall_tau": rep["kendall_tau"], "spearman_rho": rep["spearman_rho"], "rmse": rep["rmse"],
                         "top10_hit_rate": rep["top10_hit_rate"], "mean_std": float(std.mean()),
                         "fit_s": time.perf_counter() - t1})
    best_key = max(fits, key=lambda k: fits[k]["kendall_tau"])
    mlp_key = "mlp_ensemble/onehot+cost"
    # the measurement's own noise: the same held-out children scored on val vs on test
    split_half_tau = ranking_report(acc_val[te], acc_test[te])["kendall_tau"]
    # a lower-noise target on the same images: mean cross-entropy (ranked as -loss)
    loss_fit = PREDICTORS.get("mlp_ensemble")(seed=0).fit(Xc[tr], -loss[tr])
    loss_tau = ranking_report(-loss[te], loss_fit.predict(Xc[te])[0])["kendall_tau"]
    loss_split_tau = ranking_report(col["loss_val"][te], col["loss_test"][te])["kendall_tau"]

    # pretraining at 50 samples: 3 seeds, different subsets; encoding-only features (proxies are targets)
    pool = unique_archs(space, 2000, seed=999)
    Xp, Pp = arch_features(space, pool), cost_matrix(space, pool)
    taus_pre, taus_plain = [], []
    for seed in range(3):
        sub = np.random.default_rng(seed).choice(n_train, 50, replace=False)
        pre = PREDICTORS.get("mlp_ensemble")(seed=seed).pretrain(Xp, Pp).fit(X[sub], acc[sub])
        plain = PREDICTORS.get("mlp_ensemble")(seed=seed).fit(X[sub], acc[sub])
        taus_pre.append(ranking_report(acc[te], pre.predict(X[te])[0])["kendall_tau"])
        taus_plain.append(ranking_report(acc[te], plain.predict(X[te])[0])["kendall_tau"])
        rows.append({"part": "pretraining@50", "predictor": "mlp_ensemble", "features": "onehot", "train": 50,
                     "seed": seed, "kendall_tau_pretrained": taus_pre[-1], "kendall_tau_plain": taus_plain[-1]})

    # 2. latency: LUT + correction ---------------------------------------------------------------
    t1 = time.perf_counter()
    lut_path = profile_device(space, out=CACHE / "lut-cpu.json", warmup=3, repeats=10, rounds=2 if quick else 5,
                              threads=1, batch_size=1, statistic="min", reference=True)
    profile_s = time.perf_counter() - t1
    lut = LatencyLUT.load(lut_path)
    lut_spread = lut.meta["spread"]
    # re-time the held-out children now (interleaved again) so the check is not against stale timings
    lat_rows = {}
    for corr in ("none", "ridge", "huber", "gbt"):
        lp = LatencyPredictor(lut, correction=corr, seed=0).fit(space, archs[tr], lat[tr])  # type: ignore[arg-type]
        pred_lat, _ = lp.predict(space, archs[te])  # type: ignore[arg-type]
        rel = np.abs(pred_lat / lat[te] - 1)
        lat_rows[corr] = float(np.mean(rel <= 0.10))
        rows.append({"part": "latency", "correction": corr, "train": n_train, "within_10pct": lat_rows[corr],
                     "median_abs_rel_err": float(np.median(rel)), "p90_abs_rel_err": float(np.percentile(rel, 90)),
                     "kendall_tau": ranking_report(lat[te], pred_lat)["kendall_tau"]})
    plain_sum = lut.predict(space, archs[te])  # type: ignore[arg-type]
    # the same predictor judged against the median of the same calls (what a median-reporting job sees)
    # and against un-normalised timings of the same calls (min, and median as a median-reporting job sees)
    def within(target: np.ndarray) -> float:
        lp_t = LatencyPredictor(lut, correction="ridge", seed=0).fit(space, archs[tr], target[tr])  # type: ignore[arg-type]
        return float(np.mean(np.abs(lp_t.predict(space, archs[te])[0] / target[te] - 1) <= 0.10))  # type: ignore[arg-type]

    def agree(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean(np.abs(a[te] / b[te] - 1) <= 0.10))

    within_raw, remeasure_raw = within(lat_raw), agree(lat_raw_even, lat_raw_odd)
    within_med, remeasure_med = within(lat_med), agree(lat_med_even, lat_med_odd)
    cost_te = cost_matrix(space, archs[te])  # type: ignore[arg-type]
    proxy_tau = {name: ranking_report(acc[te], cost_te[:, j])["kendall_tau"] for j, name in enumerate(("flops", "params"))}

    # 2b. the same LUT + correction on the other supernet spaces (fresh-weight children; latency only)
    other_lat = {
        "elastic_vit": other_space_latency("elastic_vit", {"preset": "mnist"}, "elastic_vit",
                                           n_train=60 if quick else 150, n_test=40 if quick else 100,
                                           rounds=2 if quick else 4),
        "pooling_layout": other_space_latency("pooling_layout", {"preset": "resnet20"}, "pooling_mixture",
                                              n_train=24, n_test=12, rounds=2 if quick else 4),
        "lm_transformer": other_space_latency("lm_transformer", {}, "lm_transformer",
                                              n_train=60 if quick else 150, n_test=40 if quick else 100,
                                              rounds=2 if quick else 4),
    }
    rows += [{"part": "latency(other spaces)", **r} for r in other_lat.values()]

    # 3. guided vs plain evolution, real evaluations only ---------------------------------------
    objectives = [Objective("accuracy", Direction.MAXIMIZE), Objective("latency_ms", Direction.MINIMIZE)]
    budget, batch = (32, 8) if quick else (96, 16)
    plain_name = "nsga2" if "nsga2" in STRATEGIES else "random"
    try:
        STRATEGIES.get(plain_name)
    except ImportError:
        plain_name = "random"
        notes.append("nsga2 strategy not importable at run time: plain baseline = random search")
    ref = np.array([-0.0, float(np.percentile(lat, 95))])
    hv_rows: dict[str, list[float]] = {"guided": [], "guided_no_table": [], plain_name: []}

    def search(name: str, seed: int, options: dict[str, Any]) -> float:
        strat = STRATEGIES.get(name)(space, objectives=objectives, seed=seed, options=options)
        pts = []
        done = 0
        while done < budget:
            asked = strat.ask(min(batch, budget - done))
            if not asked:
                break
            ms = oracle.measure(asked)
            strat.tell(asked, [EvalResult(a.key(), m) for a, m in zip(asked, ms, strict=True)])
            pts += [(-m["accuracy"], m["latency_ms"]) for m in ms]
            done += len(asked)
        return hypervolume(np.array(pts), ref)

    # guided: accuracy by a GP on the encoding; latency by the LUT built above + ridge correction
    # refitted on the latencies measured so far (the job-file option strategy.options.latency_table)
    guided_no_table = {"predictor": "gp", "population": 96, "generations": 15}
    guided_opts = {**guided_no_table, "latency_table": str(lut_path), "latency_correction": "ridge"}
    plain_opts = {"population": batch} if plain_name == "nsga2" else {}
    search_seeds = list(range(2 if quick else 5))
    for seed in search_seeds:
        t1 = time.perf_counter()
        hg = search("guided", seed, guided_opts)
        tg = time.perf_counter() - t1
        hgn = search("guided", seed, guided_no_table)
        t1 = time.perf_counter()
        hp = search(plain_name, seed, plain_opts)
        tp = time.perf_counter() - t1
        hv_rows["guided"].append(hg)
        hv_rows["guided_no_table"].append(hgn)
        hv_rows[plain_name].append(hp)
        rows.append({"part": "search(real evals)", "seed": seed, "budget": budget, "hv_guided": hg,
                     "hv_guided_no_table": hgn, f"hv_{plain_name}": hp, "guided_s": tg, f"{plain_name}_s": tp})

    # 4. predictor-only search speed vs Optuna ---------------------------------------------------
    speed = predictor_only_speed(space, X, acc, lat, tr, quick=quick)
    rows += speed["rows"]

    result = {
        "kendall_tau_300": fits[mlp_key]["kendall_tau"],
        "spearman_rho_300": fits[mlp_key]["spearman_rho"],
        "rmse_300": fits[mlp_key]["rmse"],
        "best_predictor_300": best_key,
        "kendall_tau_300_best": fits[best_key]["kendall_tau"],
        "accuracy_split_half_tau": split_half_tau,
        "kendall_tau_ceiling_estimate": tau_ceiling(split_half_tau),
        "kendall_tau_300_loss": loss_tau,
        "loss_split_half_tau": loss_split_tau,
        "kendall_tau_50_pretrained": float(np.mean(taus_pre)),
        "kendall_tau_50_plain": float(np.mean(taus_plain)),
        "proxy_tau_flops_vs_accuracy": proxy_tau["flops"],
        "proxy_tau_params_vs_accuracy": proxy_tau["params"],
        "latency_within_10pct_cpu": lat_rows["ridge"],
        "latency_within_10pct_cpu_lut_only": lat_rows["none"],
        "latency_within_10pct_cpu_gbt_correction": lat_rows["gbt"],
        "latency_within_10pct_cpu_huber_correction": lat_rows["huber"],
        "latency_remeasure_within_10pct": agree(lat_even, lat_odd),
        "latency_within_10pct_cpu_elastic_vit": other_lat["elastic_vit"]["within_10pct"],
        "latency_remeasure_within_10pct_elastic_vit": other_lat["elastic_vit"]["remeasure_within_10pct"],
        "latency_within_10pct_cpu_pooling_layout": other_lat["pooling_layout"]["within_10pct"],
        "latency_remeasure_within_10pct_pooling_layout": other_lat["pooling_layout"]["remeasure_within_10pct"],
        "latency_within_10pct_cpu_lm_transformer": other_lat["lm_transformer"]["within_10pct"],
        "latency_remeasure_within_10pct_lm_transformer": other_lat["lm_transformer"]["remeasure_within_10pct"],
        "latency_within_10pct_cpu_unnormalised_min": within_raw,
        "latency_remeasure_within_10pct_unnormalised_min": remeasure_raw,
        "latency_within_10pct_cpu_median_of_calls": within_med,
        "latency_remeasure_within_10pct_median_of_calls": remeasure_med,
        "lut_sum_within_10pct_uncorrected": float(np.mean(np.abs(plain_sum / lat[te] - 1) <= 0.10)),
        "latency_child_spread_median": float(np.median(oracle.spreads)),
        "latency_child_spread_p90": float(np.percentile(oracle.spreads, 90)),
        "lut_op_spread_median": float(lut_spread["median_rel_p10_p90"]),
        "hv_ratio_guided_vs_plain": float(np.mean(hv_rows["guided"]) / max(np.mean(hv_rows[plain_name]), 1e-12)),
        "hv_ratio_guided_no_table_vs_plain": float(np.mean(hv_rows["guided_no_table"])
                                                   / max(np.mean(hv_rows[plain_name]), 1e-12)),
        "plain_baseline": plain_name,
        "speed_ratio_vs_optuna": speed["speed_ratio"],
        "hv_ratio_vs_optuna": speed["hv_ratio"],
        "candidates_per_s_ours": speed["ours_per_s"],
        "candidates_per_s_optuna": speed["optuna_per_s"],
        "speed_ratio_vs_optuna_per_round": speed["round_ratios"],
        "speed_ratio_vs_optuna_first_round": speed["first_round_ratio"],
        "speed_ratio_vs_optuna_single_shot": speed["single_shot_ratio"],
        "accuracy_range_heldout": f"{acc[te].min():.3f}..{acc[te].max():.3f}",
        "children_measured": len(oracle.cache),
        "measure_children_s": measure_s,
        "profile_device_s": profile_s,
        "rows": rows,
        "seeds": {"pretraining@50": [0, 1, 2], "search": search_seeds, "predictors": [0]},
        "notes": " ".join(notes + [
            f"Supernet: examples/quickstart.yaml trained here with the SandwichTrainer (checkpoint {CACHE}/supernet). "
            f"Accuracy = mean of the val and test splits ({oracle.n_images} images, 500 each, neither seen in "
            f"training) after BN recalibration on {spec.evaluation.bn_recalibration_images} train images; "
            "accuracy_split_half_tau = Kendall tau between the held-out children's val and test accuracies (the "
            "measurement's own repeatability), kendall_tau_ceiling_estimate = the tau a perfect predictor of true "
            "accuracy could reach against the 1000-image figure (Gaussian model + Spearman-Brown, see tau_ceiling). "
            f"{n_train} training children, {n_test} held-out children, distinct arch keys. "
            f"Latency noise: each child timed in {oracle.rounds} interleaved rounds (all children shuffled per round, "
            "3 warm-up + 10 timed calls per round, 1 thread, batch 1); per round the min of the 10 calls, "
            "normalised by the largest child timed just before it (ReferenceTimer: x baseline / reference now), "
            "value = median over rounds; spread = (max-min)/median of the round values per child; the same calls "
            "un-normalised (min, and median of the calls) give the *_unnormalised_min and *_median_of_calls keys; "
            "latency_remeasure_within_10pct = share of held-out children whose even-round and odd-round values agree "
            "within 10% (the ceiling any predictor faces); the LUT's ops are timed the same way (min per round, normalised by the "
            "slowest op) in 5 rounds. "
            "Other spaces (keys *_elastic_vit, *_pooling_layout, *_lm_transformer; rows part 'latency(other spaces)'): the same "
            "LUT (min + reference, 5 rounds) x ridge correction on elastic_vit (mnist preset, 150 train / 100 held-out "
            "children), pooling_layout (resnet20 preset: all 36 layouts, 24 train / 12 held-out) and lm_transformer "
            "(default options: context 64, byte vocabulary; 150 train / 100 held-out; one sequence per call), "
            "children built with fresh weights and timed like the Oracle times them. "
            "Guided vs plain: guided = GP accuracy predictor + latency table (LUT sum x ridge correction); "
            "guided_no_table = GP for both metrics; all see the same cached measurement of a child; hypervolume of (-accuracy, latency) with "
            "ref = (0, p95 of the 500 children's latency). Predictor-only speed: "
            f"{speed['rounds']} interleaved rounds (which method runs first alternates), each timing one Optuna "
            f"NSGAIISampler run (~4 s) and {speed['ours_repeats']} back-to-back NSGA2.optimize runs (~40 ms each; "
            "their median is the round's value), same objective, population and candidate count; "
            "speed_ratio_vs_optuna = median over rounds of ours / of Optuna's throughput, per-round ratios beside it; "
            "speed_ratio_vs_optuna_single_shot = the same from only the first of our runs per round. kendall_tau_300 is the MLP ensemble on one-hot + log-cost "
            "features; every predictor/feature set is in rows.",
        ]),
        "wall_before_harness_s": time.perf_counter() - t_start,
    }
    return result


#: back-to-back runs of our ~40 ms predictor-only search per timing round (median taken)
OURS_REPEATS = 10


def predictor_only_speed(space: Any, X: np.ndarray, acc: np.ndarray, lat: np.ndarray, tr: slice, *,
                         quick: bool) -> dict[str, Any]:
    """Same objective (two MLP ensembles on the one-hot encoding: accuracy and latency), same number
    of scored candidates: ``NSGA2.optimize`` (one batched predictor call per generation) vs Optuna's
    NSGAIISampler (one trial = one candidate). Hypervolume over every candidate each scored."""
    import optuna

    from nasforge.predictors import PREDICTORS
    from nasforge.search.nsga2 import NSGA2
    from nasforge.search.pareto import hypervolume

    acc_p = PREDICTORS.get("mlp_ensemble")(seed=0).fit(X[tr], acc[tr])
    lat_p = PREDICTORS.get("mlp_ensemble")(seed=0).fit(X[tr], lat[tr])
    population, generations = (50, 9) if quick else (100, 19)
    budget = population * (generations + 1)
    seen: list[np.ndarray] = []

    def score(idx: np.ndarray) -> np.ndarray:
        E = space.encode_indices(idx)
        F = np.stack([-acc_p.predict(E)[0], lat_p.predict(E)[0]], axis=1)
        seen.append(F)
        return F

    probe = score(space.sample_indices(2000, np.random.default_rng(5)))
    seen.clear()
    ref = np.array([probe[:, 0].max(), probe[:, 1].max()])
    from nasforge.core.types import Direction, Objective

    def run_ours() -> tuple[float, np.ndarray]:
        seen.clear()
        t0 = time.perf_counter()
        nsga2 = NSGA2(space, objectives=[Objective("accuracy", Direction.MAXIMIZE),
                                         Objective("latency_ms", Direction.MINIMIZE)],
                      seed=0, options={"population": population})
        nsga2.optimize(score, generations)
        wall = time.perf_counter() - t0
        F = np.concatenate(seen)
        assert len(F) == budget
        return wall, F

    names = space.names
    card = space.cardinalities
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def run_optuna() -> tuple[float, np.ndarray]:
        study = optuna.create_study(directions=["minimize", "minimize"],
                                    sampler=optuna.samplers.NSGAIISampler(population_size=population, seed=0))
        F_opt: list[np.ndarray] = []

        def objective(trial: Any) -> tuple[float, float]:
            row = np.array([[trial.suggest_categorical(n, list(range(int(c)))) for n, c in zip(names, card, strict=True)]])
            E = space.encode_indices(row)
            f = (float(-acc_p.predict(E)[0][0]), float(lat_p.predict(E)[0][0]))
            F_opt.append(np.array(f))
            return f

        t0 = time.perf_counter()
        study.optimize(objective, n_trials=budget)
        return time.perf_counter() - t0, np.array(F_opt)

    # interleaved rounds (ours, Optuna, alternating which goes first) on this noisy machine; the
    # headline is the ratio of the per-method median throughputs; both runs are seeded, so every
    # round of a method scores the same candidates (hypervolumes from the first round)
    # our run lasts ~40 ms, Optuna's ~4 s: one shot of ours swings by +-20% with whatever else the
    # machine does in those milliseconds, so each round times OURS_REPEATS back-to-back runs of ours
    # (same seed, same candidates) and takes their median; Optuna's run is timed once per round
    rounds = 2 if quick else 3
    ours_repeats = 3 if quick else OURS_REPEATS
    ours_walls, ours_single, opt_walls, rows = [], [], [], []
    F_ours = F_opt = np.zeros((0, 2))
    for r in range(rounds):
        order = ("ours", "optuna") if r % 2 == 0 else ("optuna", "ours")
        for method in order:
            if method == "ours":
                walls = []
                for _ in range(ours_repeats):
                    wall, F = run_ours()
                    walls.append(wall)
                ours_single.append(walls[0])
                wall = float(np.median(walls))
                ours_walls.append(wall)
                F_ours = F if r == 0 else F_ours
                extra = {"repeats": ours_repeats, "seconds_first_run": walls[0],
                         "seconds_min": min(walls), "seconds_max": max(walls)}
            else:
                wall, F = run_optuna()
                opt_walls.append(wall)
                F_opt = F if r == 0 else F_opt
                extra = {"repeats": 1}
            rows.append({"part": "predictor-only search", "round": r,
                         "method": "NSGA2.optimize" if method == "ours" else "optuna NSGAIISampler",
                         "candidates": budget, "seconds": wall, "candidates_per_s": budget / wall, **extra})
    hv_ours = hypervolume(F_ours, ref)
    hv_opt = hypervolume(F_opt, ref)
    ours_per_s, opt_per_s = budget / float(np.median(ours_walls)), budget / float(np.median(opt_walls))
    round_ratios = [o / w for o, w in zip(opt_walls, ours_walls, strict=True)]
    single_shot = float(np.median(opt_walls) / np.median(ours_single))
    for row in rows:
        row["hv"] = hv_ours if row["method"] == "NSGA2.optimize" else hv_opt
    return {
        "speed_ratio": ours_per_s / opt_per_s, "hv_ratio": hv_ours / max(hv_opt, 1e-12),
        "ours_per_s": ours_per_s, "optuna_per_s": opt_per_s,
        "round_ratios": round_ratios, "first_round_ratio": round_ratios[0], "rounds": rounds,
        "single_shot_ratio": single_shot, "ours_repeats": ours_repeats,
        "rows": rows,
    }


def other_space_latency(space_name: str, options: dict[str, Any], supernet: str, *, n_train: int, n_test: int,
                        rounds: int, seed: int = 7, device: str = "cpu") -> dict[str, Any]:
    """Part 2 on another space: LUT (profile-device, min + reference) x ridge correction fitted on
    ``n_train`` children's measured latency; share of ``n_test`` others within +-10%.

    Children are built with fresh weights (latency does not depend on the values) and timed like
    the Oracle times them: ``rounds`` interleaved passes, per pass the min of 10 calls normalised
    by the largest child timed just before (ReferenceTimer), median over passes. ``device``: where
    children, reference and the table's ops are timed (``cuda``: CUDA events, see measure_latency)."""
    import torch

    from nasforge.predictors.latency import LatencyLUT, LatencyPredictor
    from nasforge.predictors.metrics import ranking_report
    from nasforge.spaces import SPACES
    from nasforge.supernets import SUPERNETS
    from nasforge.workers.latency import ReferenceTimer, time_interleaved
    from nasforge.workers.profile import profile_device

    space = SPACES.get(space_name, "space")(options)
    cls = SUPERNETS.get(supernet, "supernet")
    pool = space.layouts() if hasattr(space, "layouts") else unique_archs(space, n_train + n_test, seed=seed)
    order = np.random.default_rng(seed).permutation(len(pool))[: n_train + n_test]
    archs = [pool[i] for i in order]
    models = [cls.build_child(space, a).eval().to(device) for a in archs]
    o, g = space.options, torch.Generator().manual_seed(0)
    if cls.input_kind == "tokens":
        x = torch.randint(0, o.vocab_size, (1, o.context), generator=g)
    else:
        x = torch.randn(1, o.in_channels, o.input_size, o.input_size, generator=g)
    x = x.to(device)
    timer = ReferenceTimer(cls.build_child(space, space.largest()).eval().to(device), x, warmup=3, repeats=10,
                           threads=1, statistic="min")
    timer.calibrate()
    t0 = time.perf_counter()
    per_round = time_interleaved(models, [x] * len(models), timer.measure, rounds=rounds,
                                 rng=np.random.default_rng(seed))["latency_ms"]
    measure_s = time.perf_counter() - t0
    lat = np.median(per_round, axis=0)
    even, odd = np.median(per_round[0::2], axis=0), np.median(per_round[1::2], axis=0)
    t0 = time.perf_counter()
    lut_path = profile_device(space, out=CACHE / f"lut-{device}-{space_name}.json", warmup=3, repeats=10, rounds=5,
                              threads=1, batch_size=1, statistic="min", reference=True, device=device)
    profile_s = time.perf_counter() - t0
    lut = LatencyLUT.load(lut_path)
    tr, te = slice(0, n_train), slice(n_train, n_train + n_test)
    lp = LatencyPredictor(lut, correction="ridge", seed=0).fit(space, archs[tr], lat[tr])
    pred = lp.predict(space, archs[te])[0]
    lut_sum = lut.predict(space, archs[te])
    return {
        "space": space_name, "options": options, "device": device, "train": n_train, "test": n_test, "rounds": rounds,
        "ops_in_table": len(lut.table),
        "within_10pct": float(np.mean(np.abs(pred / lat[te] - 1) <= 0.10)),
        "remeasure_within_10pct": float(np.mean(np.abs(even[te] / odd[te] - 1) <= 0.10)),
        "lut_sum_kendall_tau": ranking_report(lat[te], lut_sum)["kendall_tau"],
        "lut_sum_over_measured_median": float(np.median(lut_sum / lat[te])),
        "latency_span": float(lat.max() / lat.min()),
        "measure_s": measure_s, "profile_s": profile_s,
    }
