"""FBNetV3-style pretraining of the MLP ensemble on free proxies."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nasforge.predictors.features import arch_features, cost_matrix, feature_dim  # noqa: E402
from nasforge.predictors.metrics import kendall_tau  # noqa: E402
from nasforge.predictors.mlp import MLPEnsemblePredictor  # noqa: E402
from nasforge.spaces.bignas_cnn import BigNASCNNSpace  # noqa: E402

OPTS = {"members": 3, "hidden": 32, "epochs": 100, "pretrain_epochs": 20, "max_steps": 300}


def test_features_are_the_space_encoding_plus_log_costs() -> None:
    space = BigNASCNNSpace()
    archs = [space.sample(np.random.default_rng(i)) for i in range(4)]
    X = arch_features(space, archs, with_cost=True)
    assert X.shape == (4, feature_dim(space, with_cost=True))
    np.testing.assert_array_equal(X[:, :-2], space.encode(archs))
    np.testing.assert_allclose(X[:, -2], np.log1p([space.cost(a)["flops"] for a in archs]))


def test_pretraining_on_flops_helps_a_flops_driven_target_at_few_samples() -> None:
    """Target = a monotone function of FLOPs: the body pretrained on log FLOPs ranks it better
    from 20 labels than the same network trained from scratch (averaged over 3 seeds)."""
    torch.set_num_threads(1)
    space = BigNASCNNSpace()
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(1200)]
    X = arch_features(space, archs)  # encoding only: the proxies are not features
    P = cost_matrix(space, archs)
    y = -np.exp(-P[:, 0] / 3.0)  # accuracy-like, saturating in FLOPs
    train, test = slice(1000, 1020), slice(1020, 1200)
    taus_pre, taus_plain = [], []
    for seed in range(3):
        pre = MLPEnsemblePredictor(OPTS, seed=seed).pretrain(X[:1000], P[:1000]).fit(X[train], y[train])
        plain = MLPEnsemblePredictor(OPTS, seed=seed).fit(X[train], y[train])
        taus_pre.append(kendall_tau(y[test], pre.predict(X[test])[0]))
        taus_plain.append(kendall_tau(y[test], plain.predict(X[test])[0]))
    print(taus_pre, taus_plain)
    assert np.mean(taus_pre) > np.mean(taus_plain) + 0.05, (taus_pre, taus_plain)


def test_pretrained_body_survives_save_and_refit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    space = BigNASCNNSpace()
    rng = np.random.default_rng(1)
    archs = [space.sample(rng) for _ in range(200)]
    X, P = arch_features(space, archs), cost_matrix(space, archs)
    pred = MLPEnsemblePredictor(OPTS, seed=0).pretrain(X[:150], P[:150]).fit(X[150:170], P[150:170, 0])
    pred.save(tmp_path / "m.pt")
    loaded = MLPEnsemblePredictor.load(tmp_path / "m.pt")
    a = pred.fit(X[150:180], P[150:180, 0]).predict(X[180:])
    b = loaded.fit(X[150:180], P[150:180, 0]).predict(X[180:])
    np.testing.assert_array_equal(a[0], b[0])
    with pytest.raises(ValueError, match="pretrained on"):
        loaded.fit(X[:5, :10], P[:5, 0])
