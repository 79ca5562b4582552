"""ssmax_tiny: Scalable-Softmax (SSMax, arXiv:2501.19399) attention for tinygrad. The model is ssmax_tiny/model.py.

Importing the package changes nothing in tinygrad; the optional OpenCL-on-CPU kit is `ssmax_tiny.pocl`."""
from ssmax_tiny.model import (
  Attended,
  Decoder,
  FeedForward,
  KVCache,
  LanguageModel,
  SSMax,
  SSMaxAttention,
  SSMaxConfig,
  SSMaxTransformer,
  TokenModel,
  TransformerBlock,
  attend,
  build,
  build_ssmax_attention,
  causal_mask,
  compute,
  layer,
  output_size,
  ssmax_scale,
  with_options,
)

__version__ = "0.1.0"
__all__ = ["Attended", "Decoder", "FeedForward", "KVCache", "LanguageModel", "SSMax", "SSMaxAttention", "SSMaxConfig", "SSMaxTransformer",
           "TokenModel", "TransformerBlock", "attend", "build", "build_ssmax_attention", "causal_mask", "compute", "layer", "output_size",
           "ssmax_scale", "with_options"]
