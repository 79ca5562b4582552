"""ssmax_tiny: Scalable-Softmax (SSMax, arXiv:2501.19399) attention for tinygrad. The model is ssmax_tiny/model.py."""
import os

# PoCL (tinygrad's CL device on a CPU) compiles tinygrad's generated kernels with clang and prints "1 warning generated."
# for each one that has `if ((lidx0==0))` (-Wparentheses-equality): dozens of lines of noise about code nobody wrote by
# hand. PoCL accepts only OpenCL's own build options, so -w (no kernel-compiler warnings) is the narrowest switch there
# is; it touches nothing but PoCL, and a value the user sets is kept.
os.environ.setdefault("POCL_EXTRA_BUILD_FLAGS", "-w")

from ssmax_tiny.model import (  # noqa: E402 (after the environment is set)
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
