"""Accuracy and latency predictors, ranking metrics, latency lookup tables."""

from nasforge.core.registry import Registry

PREDICTORS: Registry = Registry(
    "predictor",
    {
        "mlp_ensemble": "nasforge.predictors.mlp:MLPEnsemblePredictor",
        "gbt": "nasforge.predictors.gbt:GBTPredictor",
        "gp": "nasforge.predictors.gp:GPPredictor",
    },
)

__all__ = ["PREDICTORS"]
