"""ssmax_tiny.model: Scalable-Softmax (SSMax) attention and Edifice's SSMax transformer, in tinygrad, in one file.

References
- Nakanishi, "Scalable-Softmax Is Superior for Attention", arXiv:2501.19399 (2025).
  Section 2: softmax's largest weight fades like 1/n as the number of keys n grows ("attention fading").
  Section 3, eq. (4): SSMax(z)_i = exp(s log(n) z_i) / sum_j exp(s log(n) z_j) = softmax((s log n) * z).
  Section 3: s is a learnable scalar (one per layer, or one per head), and a learnable bias b gives
  softmax((s log n + b) * z); Section 4 uses it inside RoPE transformers, n is the number of keys a query sees.
- Edifice (Elixir), `Edifice.Blocks.SSMax`: compute/layer/build_ssmax_attention/build/output_size, whose model this file
  ports. Edifice writes SSMax as exp(x_i - s log n) / sum_j exp(x_j - s log n); that shift cancels in the ratio, so it is
  plain softmax and s gets no gradient. We implement the paper's multiplicative form (tests/test_compute.py shows both).
- Su et al., "RoFormer" (arXiv:2104.09864): rotary position embedding, the optional `positional="rope"`.
- Radford et al., GPT-2 / karpathy's nanoGPT: pre-LayerNorm blocks, N(0, 0.02) weights, residual projections scaled.
- tinygrad 0.14: `Tensor.scaled_dot_product_attention` (tinygrad/mixin/rand.py) is what `attend`, the fused path we fold
  SSMax into, follows (with the weights realised before they meet v: see `attend`);
  `TinyJit` (tinygrad/engine/jit.py) freezes Python numbers at capture (test/unit/test_jit_footguns.py), so every
  per-call quantity here (positions, log n) is derived from tensor shapes or a bound Variable, never a Python number.

Reading order: the SSMax function, the SSMax module, attention, feed-forward, block, config, model, builders.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

from tinygrad import Tensor, TinyJit, Variable, dtypes, nn
from tinygrad.helpers import TRAINING

# ---------------------------------------------------------------------------------------------------------------------
# 1. The SSMax function (paper eq. 4)


def _log_n(seq_len: int | Tensor) -> float | Tensor:
  """log(n) for an int n >= 1, or elementwise for a Tensor of key counts."""
  if isinstance(seq_len, Tensor): return seq_len.cast("float32").log()
  if isinstance(seq_len, bool) or not isinstance(seq_len, int) and not hasattr(seq_len, "__index__"):
    raise ValueError(f"seq_len={seq_len!r} must be an int >= 1 or a Tensor of key counts")
  if int(seq_len) < 1: raise ValueError(f"seq_len={seq_len} must be >= 1 (the number of keys a query can see)")
  return math.log(int(seq_len))


def ssmax_scale(s: float | Tensor, seq_len: int | Tensor, bias: float | Tensor = 0.0) -> float | Tensor:
  """The multiplier SSMax puts on the logits: s * log(n) + bias (paper Section 3). s*log n = 1 is plain softmax."""
  return s * _log_n(seq_len) + bias


def compute(logits: Tensor, s: float | Tensor, seq_len: int | Tensor, *, bias: float | Tensor = 0.0,
            mask: Tensor | None = None) -> Tensor:
  """SSMax over the last axis: softmax((s * log(seq_len) + bias) * logits), the paper's formula (not Edifice's shift).

  logits [..., n_keys]; s a float or a Tensor broadcastable to logits (one scalar, or one per head);
  seq_len an int >= 1 or a Tensor broadcastable to logits with last dimension 1 (n per row: causal row i sees i+1 keys);
  mask an optional bool Tensor broadcastable to logits, True where a key may be attended.
  The mask is applied after scaling, so a scale of 0 (n = 1) or below (s < 0) never turns -inf into NaN or into weight.
  A row with every key masked has no defined distribution and gives NaN, as in PyTorch.
  float16/bfloat16 logits are scaled and normalised in float32, and the weights returned in the logits' dtype.
  """
  if not isinstance(logits, Tensor): raise ValueError(f"logits must be a tinygrad Tensor, got {type(logits).__name__}")
  if isinstance(seq_len, Tensor) and seq_len.ndim and seq_len.shape[-1] != 1:
    raise ValueError(f"seq_len has shape {seq_len.shape}: a per-row n must have last dimension 1")
  if mask is not None and mask.dtype != dtypes.bool:
    raise ValueError(f"mask has dtype {mask.dtype}; a bool Tensor (True = may attend) is accepted")
  z = logits.float() if dtypes.is_float(logits.dtype) and logits.dtype.itemsize < 4 else logits  # half inputs: float32 inside
  c = ssmax_scale(s, seq_len, bias)
  # Shift each row so that its largest scaled logit (over the keys it may attend) is 0 before scaling; softmax ignores a
  # per-row shift, and z * c alone overflows for large logits (3e38 * log 1e6 = inf, inf - inf = NaN). The clip keeps a
  # row spanning more than the dtype's range finite, so that a scale of 0 (n = 1) never meets an infinity.
  big = 3.4028234663852886e38 if z.dtype.itemsize <= 4 else 1.7976931348623157e308  # the largest finite float32 / float64
  hi = (mask.where(z, -math.inf) if mask is not None else z).max(-1, keepdim=True)
  lo = (mask.where(z, math.inf) if mask is not None else z).min(-1, keepdim=True)
  top = (c >= 0).where(hi, lo) if isinstance(c, Tensor) else hi if c >= 0 else lo
  z = (z - top).clip(-big, big) * c
  if mask is not None: z = mask.where(z, -math.inf)
  # softmax subtracts the row maximum again; every unmasked value is finite here
  return z.softmax(-1).cast(logits.dtype)


# ---------------------------------------------------------------------------------------------------------------------
# 2. The SSMax module: the trainable s (and optional bias)


class SSMax:
  """Holds s (one scalar, or one per head) and an optional learnable bias; Edifice's `layer`.

  `__call__(logits, seq_len, mask=None)` is `compute` with these parameters; `scale(log_n)` returns s*log n + bias for
  folding into the query. `freeze()` keeps s (and bias) at their values: no gradient, and optimizers skip them.
  """

  def __init__(self, init_s: float = 1.0, num_heads: int = 1, per_head: bool = False, learn_bias: bool = False,
               learn_s: bool = True):
    if not isinstance(num_heads, int) or num_heads < 1: raise ValueError(f"num_heads={num_heads!r} must be an int >= 1")
    shape = (num_heads, 1, 1) if per_head else (1,)  # (H, 1, 1) broadcasts over [B, H, T_q, T_k] logits
    self.s = Tensor.full(shape, float(init_s)).contiguous()
    self.bias = Tensor.zeros(shape).contiguous() if learn_bias else None
    self.frozen = False
    if not learn_s: self.freeze()

  def freeze(self) -> SSMax:
    self.frozen = True
    for t in (self.s, self.bias):
      if t is not None: t.is_param_(False)
    return self

  def _params(self) -> tuple[Tensor, Tensor | float]:
    s, b = self.s, (self.bias if self.bias is not None else 0.0)
    if self.frozen: s, b = s.detach(), (b.detach() if isinstance(b, Tensor) else b)
    return s, b

  def scale(self, seq_len: int | Tensor) -> Tensor:
    s, b = self._params()
    return ssmax_scale(s, seq_len, b)

  def __call__(self, logits: Tensor, seq_len: int | Tensor, mask: Tensor | None = None) -> Tensor:
    s, b = self._params()
    return compute(logits, s, seq_len, bias=b, mask=mask)


# ---------------------------------------------------------------------------------------------------------------------
# 3. Causal multi-head attention with SSMax (Edifice's build_ssmax_attention)

ATTENTIONS = ("ssmax", "softmax")
SEQ_LEN_MODES = ("row", "window")
POSITIONALS = ("none", "rope")
OUTPUT_MODES = ("last", "all", "mean")


def _linear(d_in: int, d_out: int, std: float) -> nn.Linear:
  # N(0, std) weights and zero biases (GPT-2); tinygrad's default Kaiming-uniform would make the scale depend on d_in
  layer = nn.Linear(d_in, d_out)
  layer.weight, layer.bias = Tensor.normal(d_out, d_in, std=std).contiguous(), Tensor.zeros(d_out).contiguous()
  return layer


def rope(x: Tensor, positions: Tensor, base: float = 10000.0) -> Tensor:
  """Rotary embedding (RoFormer eq. 34, GPT-NeoX's half-split layout) on x [..., T, Hd] at positions [T].

  rope(x) = x * cos + rotate_half(x) * sin, with rotate_half([x1, x2]) = [-x2, x1] written as a product with a fixed
  (Hd, Hd) signed permutation: slicing and concatenating instead made tinygrad's training step 6x slower (measured)."""
  d, half = x.shape[-1], x.shape[-1] // 2
  inv_freq = [base ** (-2.0 * (i % half) / d) for i in range(d)]                       # (Hd,) both halves share freqs
  angle = positions.cast("float32").reshape(-1, 1) * Tensor(inv_freq).reshape(1, d)    # (T, Hd)
  rotate = [[0.0] * d for _ in range(d)]
  for i in range(half): rotate[i + half][i], rotate[i][i + half] = -1.0, 1.0          # x @ R = [-x2, x1]
  return x * angle.cos() + (x @ Tensor(rotate)) * angle.sin()


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, causal: bool = False) -> Tensor:
  """softmax(q k^T / sqrt(Hd)) v over q [B, H, T, Hd], k and v [B, H, T_k, Hd]; mask [T, T_k] bool, True = may attend;
  causal=True masks key j > query i (T == T_k), with the mask made on the scores' device(s), sharded ones included.

  What tinygrad's Tensor.scaled_dot_product_attention computes (tinygrad/mixin/rand.py), with one change: the weights
  are made contiguous (realised) before they meet v. Left lazy, tinygrad fuses exp(z - max) / sum into the kernel that
  multiplies with v and recomputes it for every column of the output: forward and backward of one attention ran 1.6x
  slower at T = 60, 3.3x at T = 256, 2.8x at T = 1024 on the CL device (bench/attention_layout.py)."""
  scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])                      # (B, H, T, T_k)
  if causal: mask = scores.const_like(True, dtypes.bool).tril()
  if mask is not None: scores = mask.where(scores, -math.inf)
  return scores.softmax(-1).contiguous() @ v                                       # (B, H, T, T_k) @ (B, H, T_k, Hd)


class SSMaxAttention:
  """Causal multi-head attention: q, k, v, out Linear layers (with bias), scores / sqrt(head_dim), SSMax or softmax.

  n, the number of keys a query sees: `seq_len_mode="row"` gives row i n = start_pos + i + 1 (the paper's causal n);
  `"window"` gives every row Edifice's single n = start_pos + T.
  The fused path folds s*log n + bias into q (a per-row rescaling of the logits) and calls `attend`, so SSMax costs no
  kernel over softmax. The explicit path computes the weights with `compute` and can return them.
  `cache` [2, B, H, max_len, Hd] (a KVCache layer) turns it into a decoding step: the new keys and values are written at
  start_pos.. and the query attends to all start_pos + T of them. start_pos may be a bound Variable (TinyJit decoding).
  """

  def __init__(self, hidden_size: int, num_heads: int, attention: str = "ssmax", seq_len_mode: str = "row",
               per_head: bool = False, init_s: float = 1.0, learn_s: bool = True, learn_bias: bool = False,
               positional: str = "none", out_std: float = 0.02):
    _check_int("hidden_size", hidden_size)
    _check_int("num_heads", num_heads)
    if hidden_size % num_heads: raise ValueError(f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}")
    _check_choice("attention", attention, ATTENTIONS)
    _check_choice("seq_len_mode", seq_len_mode, SEQ_LEN_MODES)
    _check_choice("positional", positional, POSITIONALS)
    self.num_heads, self.head_dim = num_heads, hidden_size // num_heads
    if positional == "rope" and self.head_dim % 2:
      raise ValueError(f"positional='rope' needs an even head_dim; hidden_size/num_heads = {self.head_dim}")
    self.attention, self.seq_len_mode, self.positional = attention, seq_len_mode, positional
    self.q, self.k, self.v = (_linear(hidden_size, hidden_size, 0.02) for _ in range(3))
    self.out = _linear(hidden_size, hidden_size, out_std)
    self.ssmax = SSMax(init_s, num_heads, per_head, learn_bias, learn_s) if attention == "ssmax" else None

  def _heads(self, t: Tensor) -> Tensor:
    B, T, _ = t.shape
    return t.reshape(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, T, C) -> (B, H, T, Hd)

  def key_counts(self, T: int, start_pos: int | Tensor = 0) -> Tensor:
    """n per query row as a (T, 1) Tensor; start_pos may be a bound Variable (decoding under TinyJit)."""
    if self.seq_len_mode == "window": return (Tensor.zeros(T, 1) + start_pos + T)  # every row: all keys so far
    return (Tensor.arange(T).reshape(T, 1) + start_pos + 1)                          # row i: keys 0..start_pos+i

  def __call__(self, x: Tensor, fused: bool = True, return_weights: bool = False, start_pos: int | Tensor = 0,
               cache: Tensor | None = None):
    B, T, C = x.shape
    q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))  # each (B, H, T, Hd)
    if self.positional == "rope":
      positions = Tensor.arange(T) + start_pos
      q, k = rope(q, positions), rope(k, positions)
    if cache is not None:
      # write this step's keys and values into the cache, then read back all of them (tinygrad/llm/model.py does the same)
      stored = Tensor(cache.uop.after(cache[:, :, :, start_pos:start_pos + T, :].uop.store(Tensor.stack(k, v).uop)))
      k, v = stored[0, :, :, 0:start_pos + T, :], stored[1, :, :, 0:start_pos + T, :]  # (B, H, start_pos + T, Hd)
    T_k = k.shape[2]
    scale = self.ssmax.scale(self.key_counts(T, start_pos)) if self.ssmax is not None else None  # (T, 1) or (H, T, 1)
    # causal mask: query row i (absolute position start_pos + i) sees keys 0..start_pos+i
    mask = None
    if cache is not None and T > 1:  # one new query sees every cached key: no mask (and no arange of a symbolic length)
      mask = Tensor.arange(T_k).reshape(1, T_k) <= (Tensor.arange(T).reshape(T, 1) + start_pos)  # (T, T_k)
    if fused and not return_weights:
      # SSMax folded into q: ((s log n_i + b) q_i) . k_j = (s log n_i + b) z_ij. contiguous_backward realises the gradient
      # that reaches q's projection (dq * scale) once; left lazy, the two matmuls that read it (the weight's and the
      # input's gradient) recomputed it with a per-row index inside their loops: training step 8% over softmax, not 0-3%
      if scale is not None: q = q.contiguous_backward() * scale
      y, weights = attend(q, k, v, mask, causal=cache is None), None
    else:
      scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)                  # (B, H, T, T_k)
      if mask is None:  # causal without a cache (T_k == T); with one, a single new query sees every cached key
        mask = scores.const_like(True, dtypes.bool)
        if cache is None: mask = mask.tril()
      weights = self.ssmax(scores, self.key_counts(T, start_pos), mask) if self.ssmax is not None else \
        mask.where(scores, -math.inf).softmax(-1)
      y = weights.contiguous() @ v                                                 # (B, H, T, Hd); see attend()
    y = self.out(y.transpose(1, 2).reshape(B, T, C))                               # (B, H, T, Hd) -> (B, T, C)
    return (y, weights) if return_weights else y


# ---------------------------------------------------------------------------------------------------------------------
# 4. Feed-forward and the pre-LayerNorm block


class FeedForward:
  """Linear(h, 4h), exact (erf) GELU as in Axon and PyTorch, Linear(4h, h)."""

  def __init__(self, hidden_size: int, out_std: float = 0.02):
    self.up, self.down = _linear(hidden_size, 4 * hidden_size, 0.02), _linear(4 * hidden_size, hidden_size, out_std)

  def __call__(self, x: Tensor) -> Tensor:
    # contiguous: without it the backward recomputes the GELU per output column (157 vs 67 GFLOP a step in our prototype)
    return self.down(self.up(x).gelu(approximate="none").contiguous())


class TransformerBlock:
  """x + Dropout(Attention(LN(x))), then x + Dropout(FFN(LN(x))): Edifice's pre-LayerNorm block."""

  def __init__(self, hidden_size: int, num_heads: int, dropout: float = 0.1, num_layers: int = 1, **attention_options):
    # residual projections get std 0.02/sqrt(2 L) so the residual stream's variance does not grow with depth (GPT-2)
    out_std = 0.02 / math.sqrt(2 * num_layers)
    self.ln1, self.ln2 = nn.LayerNorm(hidden_size), nn.LayerNorm(hidden_size)
    self.attn = SSMaxAttention(hidden_size, num_heads, out_std=out_std, **attention_options)
    self.ffn = FeedForward(hidden_size, out_std)
    self.dropout = dropout

  def __call__(self, x: Tensor, fused: bool = True, start_pos: int | Tensor = 0, cache: Tensor | None = None):
    x = x + self.attn(self.ln1(x), fused=fused, start_pos=start_pos, cache=cache).dropout(self.dropout)
    x = x + self.ffn(self.ln2(x)).dropout(self.dropout)
    return x


# ---------------------------------------------------------------------------------------------------------------------
# 5. Configuration and the model (Edifice's build)


def _check_int(name: str, value, minimum: int = 1):
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f"{name}={value!r} must be an int >= {minimum}")


def _check_choice(name: str, value, accepted: tuple[str, ...]):
  if value not in accepted: raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, accepted))}")


@dataclass(frozen=True)
class SSMaxConfig:
  """Edifice's build options (embed_dim, hidden_size=256, num_heads=4, num_layers=6, dropout=0.1, window_size=60),
  then ours: how the output is read, which attention, how n is counted, the SSMax variant, positions."""
  embed_dim: int
  hidden_size: int = 256
  num_heads: int = 4
  num_layers: int = 6
  dropout: float = 0.1
  window_size: int = 60
  output_mode: str = "last"      # "last": [B, h] at the last position (Edifice); "all": [B, T, h]; "mean": mean over T
  attention: str = "ssmax"       # "softmax" runs the same code as a baseline
  seq_len_mode: str = "row"      # "row": n = i + 1 for causal row i (the paper); "window": n = T for every row (Edifice)
  per_head: bool = False         # one s per head instead of one per layer
  init_s: float = 1.0            # Edifice's default
  learn_s: bool = True           # False keeps s fixed at init_s
  learn_bias: bool = False       # softmax((s log n + b) z), paper Section 3
  positional: str = "none"       # "rope": rotary embedding on q and k (the paper's setting); Edifice has none

  def __post_init__(self):
    for name in ("embed_dim", "hidden_size", "num_heads", "num_layers", "window_size"): _check_int(name, getattr(self, name))
    if self.hidden_size % self.num_heads:
      raise ValueError(f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}")
    if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
      raise ValueError(f"dropout={self.dropout!r} must be a number in [0, 1)")
    if isinstance(self.init_s, bool) or not isinstance(self.init_s, (int, float)) or not math.isfinite(self.init_s):
      raise ValueError(f"init_s={self.init_s!r} must be a finite number")
    for name in ("per_head", "learn_s", "learn_bias"):
      if not isinstance(getattr(self, name), bool): raise ValueError(f"{name}={getattr(self, name)!r} must be True or False")
    _check_choice("output_mode", self.output_mode, OUTPUT_MODES)
    _check_choice("attention", self.attention, ATTENTIONS)
    _check_choice("seq_len_mode", self.seq_len_mode, SEQ_LEN_MODES)
    _check_choice("positional", self.positional, POSITIONALS)
    if self.positional == "rope" and (self.hidden_size // self.num_heads) % 2:
      raise ValueError(f"positional='rope' needs an even head_dim; hidden_size/num_heads = {self.hidden_size // self.num_heads}")

  @classmethod
  def from_options(cls, **options) -> SSMaxConfig:
    """Like SSMaxConfig(**options), but an unknown option is a ValueError that lists the accepted ones."""
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(options) - set(names))
    if unknown: raise ValueError(f"unknown option(s) {', '.join(unknown)}; accepted: {', '.join(names)}")
    if "embed_dim" not in options: raise ValueError("embed_dim is required (the size of each input timestep)")
    return cls(**options)

  def attention_options(self) -> dict:
    return dict(attention=self.attention, seq_len_mode=self.seq_len_mode, per_head=self.per_head, init_s=self.init_s,
                learn_s=self.learn_s, learn_bias=self.learn_bias, positional=self.positional)


class SSMaxTransformer:
  """Input projection (when embed_dim != hidden_size), pre-LN blocks with dropout between them, a final LayerNorm,
  and the output at the last position. Inference at T == window_size replays a TinyJit (one per batch size)."""

  def __init__(self, config: SSMaxConfig):
    self.config = c = config
    self.input_proj = _linear(c.embed_dim, c.hidden_size, 0.02) if c.embed_dim != c.hidden_size else None
    self.blocks = [TransformerBlock(c.hidden_size, c.num_heads, c.dropout, c.num_layers, **c.attention_options())
                   for _ in range(c.num_layers)]
    self.ln_f = nn.LayerNorm(c.hidden_size)
    self._jits = _JitCache()

  def check_input(self, x) -> None:
    if not isinstance(x, Tensor): raise ValueError(f"x must be a tinygrad Tensor [batch, T, embed_dim], got {type(x).__name__}")
    if x.ndim != 3: raise ValueError(f"x has shape {x.shape}: expected rank 3, [batch, T, embed_dim={self.config.embed_dim}]")
    if x.shape[-1] != self.config.embed_dim:
      raise ValueError(f"x has last dimension {x.shape[-1]}: expected embed_dim={self.config.embed_dim}")
    if x.shape[0] < 1 or x.shape[1] < 1: raise ValueError(f"x has shape {x.shape}: batch and T must be >= 1")

  def hidden(self, x: Tensor, fused: bool = True) -> Tensor:
    """[B, T, embed_dim] -> [B, T, hidden_size], before the output is read."""
    h = self.input_proj(x) if self.input_proj is not None else x
    for i, block in enumerate(self.blocks):
      h = block(h, fused=fused)
      if i < len(self.blocks) - 1: h = h.dropout(self.config.dropout)  # between blocks, not after the last
    return self.ln_f(h)

  def read_out(self, h: Tensor) -> Tensor:
    if self.config.output_mode == "last": return h[:, -1, :]   # (B, T, h) -> (B, h)
    if self.config.output_mode == "mean": return h.mean(axis=1)
    return h

  def forward(self, x: Tensor, fused: bool = True) -> Tensor:
    """The eager (lazy, unjitted) forward; training steps jit this inside their own TinyJit."""
    self.check_input(x)
    return self.read_out(self.hidden(x, fused))

  def _jit_forward(self, x: Tensor) -> Tensor:
    return self.forward(x).contiguous().realize()

  def __call__(self, x: Tensor) -> Tensor:
    self.check_input(x)
    if TRAINING or x.shape[1] != self.config.window_size: return self.forward(x)
    jit = self._jits.get(x.shape[0], lambda: TinyJit(self._jit_forward))
    # a replay writes into the same output buffer every time: hand the caller a copy of its own
    return jit(x.contiguous().realize()).clone().realize()

  def reset_jit(self) -> None:
    """Forget captured graphs (needed only if parameters were replaced rather than assigned in place)."""
    self._jits.clear()

  def ssmax_layers(self) -> list[SSMax]:
    return [b.attn.ssmax for b in self.blocks if b.attn.ssmax is not None]

  def learned_s(self) -> list[list[float]]:
    """s of each layer (one value, or one per head) as Python floats."""
    return [m.s.numpy().reshape(-1).tolist() for m in self.ssmax_layers()]

  def decode(self, x: Tensor, cache: KVCache, start_pos: int | Tensor) -> Tensor:
    """New positions x [B, T_new, embed_dim] after the start_pos ones already in `cache`; their keys and values are written
    into it. Returns hidden [B, T_new, h] after the final LayerNorm. n continues from the cache: start_pos + i + 1."""
    self.check_input(x)
    h = self.input_proj(x) if self.input_proj is not None else x
    for block, layer_cache in zip(self.blocks, cache.layers): h = block(h, start_pos=start_pos, cache=layer_cache)
    return self.ln_f(h)


class KVCache:
  """Keys and values of every layer for decoding, preallocated: one [2, B, H, max_len, Hd] Tensor per layer."""

  def __init__(self, model: SSMaxTransformer, batch_size: int, max_len: int):
    _check_int("batch_size", batch_size)
    _check_int("max_len", max_len)
    self.max_len = max_len
    self.layers = [Tensor.zeros(2, batch_size, b.attn.num_heads, max_len, b.attn.head_dim).contiguous().realize() for b in model.blocks]


class Decoder:
  """One position at a time through a TinyJit, the position a bound Variable (so one captured graph serves every step).

  `prefill(x)` runs a prompt [B, T, embed_dim] eagerly; then each `step(x_t)` with x_t [B, 1, embed_dim] returns the
  hidden state [B, h] of that position, equal to a full recompute (tests/test_model.py)."""

  def __init__(self, model: SSMaxTransformer, batch_size: int, max_len: int):
    self.model, self.cache, self.pos = model, KVCache(model, batch_size, max_len), 0
    self.start_pos = Variable("start_pos", 0, max_len - 1)
    self._jit = TinyJit(lambda x, start_pos: self.model.decode(x, self.cache, start_pos)[:, -1, :].contiguous().realize())

  def _room(self, T: int) -> None:
    if self.pos + T > self.cache.max_len:
      raise ValueError(f"decoding {T} more position(s) after {self.pos} exceeds max_len={self.cache.max_len}")

  def prefill(self, x: Tensor) -> Tensor:
    self._room(x.shape[1])
    h = self.model.decode(x, self.cache, self.pos).realize()
    self.pos += x.shape[1]
    return h

  def step(self, x: Tensor) -> Tensor:
    if x.ndim != 3 or x.shape[1] != 1: raise ValueError(f"x has shape {x.shape}: step takes one position, [batch, 1, embed_dim]")
    self._room(1)
    h = self._jit(x.contiguous().realize(), self.start_pos.bind(self.pos)).clone().realize()
    self.pos += 1
    return h


class _JitCache:
  """TinyJits keyed by batch size. No __dict__, so nn.state.get_state_dict does not walk into captured buffers."""
  __slots__ = ("jits",)

  def __init__(self): self.jits: dict = {}
  def __contains__(self, key) -> bool: return key in self.jits
  def clear(self) -> None: self.jits.clear()

  def get(self, key, make):
    if key not in self.jits: self.jits[key] = make()
    return self.jits[key]


# ---------------------------------------------------------------------------------------------------------------------
# 6. Builders with Edifice's names


def build(embed_dim: int, **options) -> SSMaxTransformer:
  """Edifice's `build`: SSMaxTransformer(SSMaxConfig(embed_dim, hidden_size=256, num_heads=4, num_layers=6, dropout=0.1,
  window_size=60, ...)). Output [batch, hidden_size] from the last position by default."""
  return SSMaxTransformer(SSMaxConfig.from_options(embed_dim=embed_dim, **options))


def output_size(**options) -> int:
  """Edifice's `output_size`: the width of build(**options)'s output, hidden_size (default 256)."""
  options.setdefault("embed_dim", options.get("hidden_size", 256))
  return SSMaxConfig.from_options(**options).hidden_size


def layer(init_s: float = 1.0, **options) -> SSMax:
  """Edifice's `layer`: an SSMax module with a learnable s (init_s=1.0)."""
  return SSMax(init_s, **options)


def build_ssmax_attention(hidden_size: int, num_heads: int = 4, **options) -> SSMaxAttention:
  """Edifice's `build_ssmax_attention`: causal multi-head attention with SSMax instead of softmax."""
  return SSMaxAttention(hidden_size, num_heads, **options)
