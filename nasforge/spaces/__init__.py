"""Search spaces (no torch). Add a space: one module + one line in SPACES."""

from nasforge.core.registry import Registry
from nasforge.spaces.base import SearchSpace

SPACES: Registry[type[SearchSpace]] = Registry(
    "space",
    {
        "bignas_cnn": "nasforge.spaces.bignas_cnn:BigNASCNNSpace",
        "compression": "nasforge.spaces.compression:CompressionSpace",
        "elastic_vit": "nasforge.spaces.elastic_vit:ElasticViTSpace",
        "lm_transformer": "nasforge.spaces.lm_transformer:LMTransformerSpace",
        "pooling_layout": "nasforge.spaces.pooling_layout:PoolingLayoutSpace",
    },
)

__all__ = ["SPACES", "SearchSpace"]
