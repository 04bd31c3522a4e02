"""Search spaces (no torch). Add a space: one module + one line in SPACES."""

from nasforge.core.registry import Registry
from nasforge.spaces.base import SearchSpace

SPACES: Registry[type[SearchSpace]] = Registry(
    "space",
    {
        "bignas_cnn": "nasforge.spaces.bignas_cnn:BigNASCNNSpace",
        "compression": "nasforge.spaces.compression:CompressionSpace",
        "lm_transformer": "nasforge.spaces.lm_transformer:LMTransformerSpace",
        "elastic_vit": "nasforge.spaces.elastic_vit:ElasticViTSpace",
    },
)

__all__ = ["SPACES", "SearchSpace"]
