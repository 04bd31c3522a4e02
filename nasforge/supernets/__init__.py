"""Weight-sharing supernets, their dynamic layers, trainers, BN recalibration, extraction.

Imports torch only when a registered entry is resolved.
"""

from nasforge.core.registry import Registry

SUPERNETS: Registry = Registry(
    "supernet",
    {
        "bignas": "nasforge.supernets.bignas:BigNASSupernet",
        "elastic_vit": "nasforge.supernets.elastic_vit:ElasticViTSupernet",
        "lm_transformer": "nasforge.supernets.lm_transformer:LMTransformerSupernet",
        "pooling_mixture": "nasforge.supernets.pooling_mixture:PoolingMixtureSupernet",
    },
)
TRAINERS: Registry = Registry(
    "trainer",
    {
        "sandwich": "nasforge.supernets.trainer:SandwichTrainer",
        "pooling_mixture": "nasforge.supernets.pooling_mixture:PoolingMixtureTrainer",
    },
)

__all__ = ["SUPERNETS", "TRAINERS"]
