"""``mlp_ensemble``: an ensemble of small MLPs trained together as one batched network.

Mean and spread come from the members (each member has its own initialisation and, by default,
its own bootstrap resample of the training rows). All members run as one batched matrix product
(``torch.baddbmm`` over a leading member axis), so the ensemble costs about as much as a single
wider MLP on CPU. torch is imported when a predictor is built, not when this module is imported.

FBNetV3-style pretraining: ``pretrain(X, P)`` trains the shared body on free proxy targets ``P``
(n, p) -- e.g. log FLOPs and log params from ``space.cost`` of many sampled archs -- with a proxy
head; a later ``fit(X, y)`` keeps the pretrained body, puts a fresh output head on it and
fine-tunes everything on the measured metric.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from nasforge.predictors.base import Predictor, PredictorOptions


class MLPEnsembleOptions(PredictorOptions):
    members: int = Field(default=5, ge=1, description="ensemble members (spread = their std)")
    hidden: int = Field(default=64, ge=1, description="units per hidden layer")
    layers: int = Field(default=2, ge=1, description="hidden layers")
    epochs: int = Field(default=200, ge=1, description="passes over the training rows in fit")
    pretrain_epochs: int = Field(default=100, ge=1, description="passes over the proxy rows in pretrain")
    batch_size: int = Field(default=64, ge=1, description="rows per gradient step (per member)")
    max_steps: int = Field(default=1000, ge=1, description="cap on gradient steps of one fit/pretrain")
    lr: float = Field(default=3e-3, gt=0, description="Adam learning rate")
    weight_decay: float = Field(default=1e-4, ge=0, description="AdamW weight decay")
    bootstrap: bool = Field(default=True, description="each member trains on its own bootstrap resample")
    rank_loss: float = Field(
        default=0.5, ge=0,
        description="weight of a pairwise logistic ranking loss added to the MSE (0 = MSE only)",
    )


class MLPEnsemblePredictor(Predictor):
    """Batched MLP ensemble; ``predict`` returns the members' mean and std (ddof 0)."""

    Options = MLPEnsembleOptions
    options: MLPEnsembleOptions

    def __init__(self, options: MLPEnsembleOptions | dict[str, Any] | None = None, *, seed: int = 0):
        super().__init__(options, seed=seed)
        self._params: dict[str, Any] | None = None  # name -> torch tensor
        self._x_mean: np.ndarray | None = None
        self._x_std: np.ndarray | None = None
        self._y_mean = 0.0
        self._y_std = 1.0
        self._pretrained = False
        self._body_after_pretrain: dict[str, Any] = {}
        self._fits = 0

    # ---- network ----------------------------------------------------------------------------
    def _init_layer(self, name: str, fan_in: int, fan_out: int, g: Any) -> None:
        import torch

        k = self.options.members
        bound = 1.0 / math.sqrt(fan_in)
        assert self._params is not None
        self._params[f"{name}.w"] = (torch.rand(k, fan_in, fan_out, generator=g, dtype=torch.float64) * 2 - 1) * bound
        self._params[f"{name}.b"] = (torch.rand(k, 1, fan_out, generator=g, dtype=torch.float64) * 2 - 1) * bound

    def _init_body(self, d: int, g: Any) -> None:
        self._params = {}
        fan_in = d
        for i in range(self.options.layers):
            self._init_layer(f"body{i}", fan_in, self.options.hidden, g)
            fan_in = self.options.hidden

    def _forward(self, x: Any, head: str) -> Any:
        """x: (members, batch, d) -> (members, batch, out)."""
        import torch

        assert self._params is not None
        h = x
        for i in range(self.options.layers):
            h = torch.relu(torch.baddbmm(self._params[f"body{i}.b"], h, self._params[f"body{i}.w"]))
        return torch.baddbmm(self._params[f"{head}.b"], h, self._params[f"{head}.w"])

    def _xform(self, X: np.ndarray) -> np.ndarray:
        assert self._x_mean is not None and self._x_std is not None
        return (np.asarray(X, dtype=np.float64) - self._x_mean) / self._x_std

    def _set_x_scaler(self, X: np.ndarray) -> None:
        self._x_mean = X.mean(axis=0)
        std = X.std(axis=0)
        self._x_std = np.where(std > 1e-12, std, 1.0)

    def _train(self, X: np.ndarray, Y: np.ndarray, head: str, epochs: int, g: Any, rank_loss: float) -> None:
        """Train body + ``head`` on standardized X (n, d) and standardized Y (n, out)."""
        import torch

        o = self.options
        assert self._params is not None
        n = X.shape[0]
        k = o.members
        Xt = torch.from_numpy(X)
        Yt = torch.from_numpy(Y)
        if o.bootstrap and n > 1:
            rows = torch.randint(0, n, (k, n), generator=g)
        else:
            rows = torch.arange(n).repeat(k, 1)
        bs = min(o.batch_size, n)
        steps_per_epoch = max(1, math.ceil(n / bs))
        steps = min(o.max_steps, epochs * steps_per_epoch)
        params = list(self._params.values())
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        for _ in range(steps):
            pick = torch.randint(0, n, (k, bs), generator=g)
            idx = torch.gather(rows, 1, pick)  # (k, bs) rows of each member's resample
            xb = Xt[idx]  # (k, bs, d)
            yb = Yt[idx]  # (k, bs, out)
            pred = self._forward(xb, head)
            loss = ((pred - yb) ** 2).mean()
            if rank_loss > 0 and bs > 1:
                dp = pred[..., 0].unsqueeze(2) - pred[..., 0].unsqueeze(1)  # (k, bs, bs)
                dy = yb[..., 0].unsqueeze(2) - yb[..., 0].unsqueeze(1)
                sign = torch.sign(dy)
                mask = sign != 0
                if bool(mask.any()):
                    loss = loss + rank_loss * torch.nn.functional.softplus(-sign * dp * 2.0)[mask].mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        for p in params:
            p.requires_grad_(False)
            p.grad = None

    # ---- public -----------------------------------------------------------------------------
    def pretrain(self, X: np.ndarray, P: np.ndarray) -> MLPEnsemblePredictor:
        """Train the body on proxy targets ``P`` (n, p) (or (n,)); the next ``fit`` fine-tunes it.

        The feature scaler is set from ``X`` here and kept by later fits, since the body's
        weights are tied to it.
        """
        import torch

        X = np.asarray(X, dtype=np.float64)
        P = np.asarray(P, dtype=np.float64)
        if P.ndim == 1:
            P = P[:, None]
        if X.ndim != 2 or P.shape[0] != X.shape[0] or X.shape[0] == 0:
            raise ValueError(f"pretrain needs X (n, d) and P (n, p) with n >= 1; got {X.shape} and {P.shape}")
        g = torch.Generator().manual_seed(self.seed * 7919 + 17)
        self._set_x_scaler(X)
        self._init_body(X.shape[1], g)
        self._init_layer("proxy", self.options.hidden, P.shape[1], g)
        p_mean, p_std = P.mean(axis=0), P.std(axis=0)
        Ps = (P - p_mean) / np.where(p_std > 1e-12, p_std, 1.0)
        self._train(self._xform(X), Ps, "proxy", self.options.pretrain_epochs, g, rank_loss=0.0)
        assert self._params is not None
        self._params.pop("proxy.w")
        self._params.pop("proxy.b")
        self._body_after_pretrain = {k: v.clone() for k, v in self._params.items()}
        self._pretrained = True
        return self

    def fit(self, X: np.ndarray, y: np.ndarray) -> MLPEnsemblePredictor:
        """Fit (from scratch, or from the pretrained body) on X (n, d), y (n,). Deterministic per seed."""
        import torch

        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).ravel()
        if X.ndim != 2 or y.shape[0] != X.shape[0] or X.shape[0] == 0:
            raise ValueError(f"fit needs X (n, d) and y (n,) with n >= 1; got {X.shape} and {y.shape}")
        g = torch.Generator().manual_seed(self.seed * 7919 + 1)
        if self._pretrained:
            assert self._x_mean is not None
            if self._x_mean.shape[0] != X.shape[1]:
                raise ValueError(f"fit got {X.shape[1]} features but the body was pretrained on {self._x_mean.shape[0]}")
            # keep the pretrained body (a copy, so refits always start from the pretrained state)
            body = {k: v.clone() for k, v in self._pretrained_body().items()}
            self._params = body
        else:
            self._set_x_scaler(X)
            self._init_body(X.shape[1], g)
        self._init_layer("out", self.options.hidden, 1, g)
        self._y_mean = float(y.mean())
        std = float(y.std())
        self._y_std = std if std > 1e-12 else 1.0
        ys = ((y - self._y_mean) / self._y_std)[:, None]
        self._train(self._xform(X), ys, "out", self.options.epochs, g, rank_loss=self.options.rank_loss)
        self._fits += 1
        return self

    def _pretrained_body(self) -> dict[str, Any]:
        return self._body_after_pretrain

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        if self._params is None or "out.w" not in self._params:
            raise RuntimeError("predict called before fit")
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        if X.shape[0] == 0:
            return np.zeros(0), np.zeros(0)
        if X.shape[0] < 2048:
            out = self._predict_small(self._xform(X))
        else:
            with torch.no_grad():
                xt = torch.from_numpy(self._xform(X)).unsqueeze(0).expand(self.options.members, -1, -1)
                out = self._forward(xt, "out")[..., 0].numpy()
        out = out * self._y_std + self._y_mean  # (k, n)
        return out.mean(axis=0), out.std(axis=0)

    def _predict_small(self, x: np.ndarray) -> np.ndarray:
        """The search loop's path (one population per call): float32 copies of the weights, the
        first layer of all members as one matrix product. Returns (members, n) raw outputs.

        Torch, not NumPy: torch honours the worker's explicit thread count, while NumPy's BLAS
        threads spin against other processes on a loaded machine (measured 20x slower here)."""
        import torch

        if getattr(self, "_fast_for", None) != self._fits:
            assert self._params is not None
            w0 = self._params["body0.w"]  # (k, d, h)
            self._fast = {
                "w0": w0.permute(1, 0, 2).reshape(w0.shape[1], -1).float().contiguous(),
                "b0": self._params["body0.b"].reshape(1, -1).float(),
                **{n: t.float().contiguous() for n, t in self._params.items() if not n.startswith("body0.")},
            }
            self._fast_for = self._fits
        f, k = self._fast, self.options.members
        with torch.no_grad():
            h = torch.relu(torch.addmm(f["b0"], torch.from_numpy(x.astype(np.float32)), f["w0"]))  # (n, k*h)
            h = h.reshape(len(x), k, -1).transpose(0, 1).contiguous()  # (k, n, h)
            for i in range(1, self.options.layers):
                h = torch.relu(torch.baddbmm(f[f"body{i}.b"], h, f[f"body{i}.w"]))
            out = torch.baddbmm(f["out.b"], h, f["out.w"])[..., 0]
        return out.numpy().astype(np.float64)

    def save(self, path: str | Path) -> None:
        import torch

        if self._params is None:
            raise RuntimeError("save called before fit")
        state = {
            "kind": "mlp_ensemble",
            "options": self.options.model_dump(mode="json"),
            "seed": self.seed,
            "params": {k: v.detach().clone() for k, v in self._params.items()},
            "x_mean": torch.from_numpy(np.asarray(self._x_mean)),
            "x_std": torch.from_numpy(np.asarray(self._x_std)),
            "y_mean": self._y_mean,
            "y_std": self._y_std,
            "pretrained": self._pretrained,
            "fits": self._fits,
        }
        if self._pretrained:
            state["pretrained_body"] = {k: v.clone() for k, v in self._pretrained_body().items()}
        buf = io.BytesIO()
        torch.save(state, buf)
        Path(path).write_bytes(buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> MLPEnsemblePredictor:
        import torch

        state = torch.load(io.BytesIO(Path(path).read_bytes()), weights_only=True)
        if state.get("kind") != "mlp_ensemble":
            raise ValueError(f"{path} is not a saved mlp_ensemble predictor")
        self = cls(state["options"], seed=int(state["seed"]))
        self._params = dict(state["params"])
        self._x_mean = state["x_mean"].numpy()
        self._x_std = state["x_std"].numpy()
        self._y_mean = float(state["y_mean"])
        self._y_std = float(state["y_std"])
        self._pretrained = bool(state["pretrained"])
        self._fits = int(state["fits"])
        if "pretrained_body" in state:
            self._body_after_pretrain = dict(state["pretrained_body"])
        return self
