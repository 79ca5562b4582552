"""ssmax_tiny: Scalable-Softmax (SSMax, arXiv:2501.19399) attention for tinygrad. The model is ssmax_tiny/model.py."""
from ssmax_tiny.model import (
  Decoder,
  FeedForward,
  KVCache,
  SSMax,
  SSMaxAttention,
  SSMaxConfig,
  SSMaxTransformer,
  TransformerBlock,
  attend,
  build,
  build_ssmax_attention,
  compute,
  layer,
  output_size,
  ssmax_scale,
)

__version__ = "0.1.0"
__all__ = ["Decoder", "KVCache", "SSMax", "SSMaxAttention", "SSMaxConfig", "SSMaxTransformer", "TransformerBlock", "FeedForward", "attend", "build",
           "build_ssmax_attention", "compute", "layer", "output_size", "ssmax_scale"]
