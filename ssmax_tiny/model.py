"""ssmax_tiny.model: Scalable-Softmax (SSMax) attention and Edifice's SSMax transformer, in tinygrad, in one file.

SSMax replaces softmax(z) over a query's n visible keys by softmax((s log n) z), s learnable, so that attention does not
fade as n grows. Here it lives in a causal multi-head attention (n per query row), inside pre-LayerNorm transformer
blocks, inside Edifice's model ([batch, T, embed_dim] -> [batch, hidden_size] at the last position), wrapped by a token
classifier and a next-token language model; both decode through a KV cache. The field's other length-dependent
temperatures are options of the same attention, for side-by-side comparison.

References
- Nakanishi, "Scalable-Softmax Is Superior for Attention", arXiv:2501.19399 (2025). Section 2: softmax's largest weight
  fades like 1/n ("attention fading"). Section 3, eq. (4): SSMax(z) = softmax((s log n) z), s learnable (per layer or
  per head), with an optional bias b: softmax((s log n + b) z). Section 4: inside RoPE transformers, n = keys a query sees.
- Edifice (Elixir), `Edifice.Blocks.SSMax`: compute/layer/build_ssmax_attention/build/output_size, ported here. Edifice
  writes exp(x_i - s log n) / sum_j exp(x_j - s log n): the shift cancels, so it is plain softmax and s gets no gradient.
  We implement the paper's multiplicative form (tests/test_compute.py shows both).
- Su et al., RoFormer (arXiv:2104.09864): rotary position embedding; partial RoPE after Barbero et al. (arXiv:2410.06205).
- The variants, each beside its formula in section 3: Chiang & Cholak 2022 (arXiv:2202.12172, log-n); Qwen's log-n
  (Qwen-7B modeling_qwen.py); Llama 4's temperature (transformers modeling_llama4.py); Anson, Wang, Aitchison,
  scale-invariant attention (arXiv:2505.17083); QK-norm (Henry et al. 2020, arXiv:2010.04245).
- Radford et al., GPT-2, and karpathy's nanoGPT: pre-LayerNorm blocks, N(0, 0.02) weights, residual projections scaled
  by depth, the decay / no-decay split of `configure_optimizers`. Mixed precision as PyTorch's autocast does it.
- tinygrad 0.14: `attend` follows Tensor.scaled_dot_product_attention (tinygrad/mixin/rand.py); TinyJit
  (tinygrad/engine/jit.py) freezes Python numbers at capture, so every per-call quantity (positions, log n) comes from
  tensor shapes or a bound Variable. How the kernels run, and what was measured: docs/speed.md, docs/long-context.md.

Reading order: 1. the SSMax function (`compute`); 2. the `SSMax` module; 3. attention (the variants, `Linear`, RoPE,
masks, `attend`, `attend_blocked`, `SSMaxAttention`); 4. `FeedForward`, `TransformerBlock`; 5. `SSMaxConfig`,
`SSMaxTransformer`; 6. decoding (`KVCache`, `Decoder`); 7. the token models (`TokenModel`, `LanguageModel`, `decode`,
`with_options`); 8. the builders with Edifice's names.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import NamedTuple

import numpy as np
from tinygrad import Context, Tensor, TinyJit, UOp, Variable, dtypes, nn
from tinygrad.function import function
from tinygrad.helpers import TRAINING
from tinygrad.nn.optim import AdamW, OptimizerGroup
from tinygrad.nn.state import get_parameters, get_state_dict

from ssmax_tiny.checks import check_bool, check_choice, check_int, check_number

# ---------------------------------------------------------------------------------------------------------------------
# 1. The SSMax function (paper eq. 4)


def log_n(n: int | Tensor) -> float | Tensor:
  """log(n) for an int n >= 1 (n: the number of keys a query sees), or elementwise for a Tensor of such counts."""
  return n.cast("float32").log() if isinstance(n, Tensor) else math.log(check_int("n", n))


def ssmax_scale(s: float | Tensor, n: int | Tensor, bias: float | Tensor = 0.0) -> float | Tensor:
  """The multiplier SSMax puts on the logits: s * log(n) + bias (paper Section 3). s*log n = 1 is plain softmax."""
  return s * log_n(n) + bias


def _softmax_backward(grad_w: UOp, call: UOp) -> tuple[UOp | None, ...]:
  # d scores = w * (g - sum(g * w)), from the weights w the forward returned: autograd's graph would recompute exp
  w, g = Tensor(call.gettuple(0)), Tensor(grad_w)
  return ((w * (g - (g * w).sum(-1, keepdim=True))).uop,) + (None,) * (len(call.src) - 2)  # none for the mask


@function(grad_fxn=_softmax_backward)
def masked_softmax(scores: Tensor, mask: Tensor | None = None) -> Tensor:
  """softmax over the last axis, over the keys `mask` allows (True = may attend). A row that allows no key (a padded
  query) gets all-zero weights, as FlashAttention returns, instead of NaN: its maximum is taken as 0 and its sum as 1, so
  no NaN reaches the backward pass either. The backward is written out above (tinygrad.function, the mechanism of
  tinygrad's nn.Embedding). In training exp(z - max) is realised once for the sum and the division to read; at inference
  it stays lazy, so the forward holds no more [B, H, T, T_k] buffers."""
  e, total = _exp_and_sum(scores if mask is None else mask.where(scores, -math.inf), stored=TRAINING)
  return e / total


def _exp_and_sum(z: Tensor, stored: bool) -> tuple[Tensor, Tensor]:
  """exp(z - the row's maximum) and its row sum, for z masked with -inf; a row that allows no key gets zeros and a sum of
  1, so that dividing by it gives zeros. stored=True realises exp once for the kernels that read it."""
  top = z.max(-1, keepdim=True)
  e = (z - (top == -math.inf).where(0.0, top)).exp()
  if stored: e = e.contiguous()
  total = e.sum(-1, keepdim=True)
  return e, (total == 0).where(1.0, total)


def compute(logits: Tensor, s: float | Tensor, n: int | Tensor | None = None, *, bias: float | Tensor = 0.0,
            mask: Tensor | None = None, seq_len: int | Tensor | None = None) -> Tensor:
  """SSMax over the last axis: softmax((s * log(n) + bias) * logits), the paper's formula (not Edifice's shift).

  logits [..., n_keys]; s a float or a Tensor broadcastable to logits (one scalar, or one per head);
  n, the number of keys a query sees (Edifice calls it seq_len, accepted as a keyword): an int >= 1, or a Tensor
  broadcastable to logits with last dimension 1 (n per row: causal row i sees i+1 keys);
  mask an optional bool Tensor broadcastable to logits, True where a key may be attended.
  The mask is applied after scaling, so a scale of 0 (n = 1) or below (s < 0) never turns -inf into NaN or into weight.
  A row with every key masked gets all-zero weights (FlashAttention's convention), never NaN.
  float16/bfloat16 logits are scaled and normalised in float32, and the weights returned in the logits' dtype.
  """
  if seq_len is not None:
    if n is not None: raise ValueError("pass n or Edifice's name for it, seq_len, not both")
    n = seq_len
  if n is None: raise ValueError("n (the number of keys a query sees) is required")
  if not isinstance(logits, Tensor): raise ValueError(f"logits must be a tinygrad Tensor, got {type(logits).__name__}")
  if isinstance(n, Tensor) and n.ndim and n.shape[-1] != 1:
    raise ValueError(f"n has shape {n.shape}: a per-row n must have last dimension 1")
  if mask is not None and mask.dtype != dtypes.bool:
    raise ValueError(f"mask has dtype {mask.dtype}; a bool Tensor (True = may attend) is accepted")
  z = logits.float() if dtypes.is_float(logits.dtype) and logits.dtype.itemsize < 4 else logits  # half inputs: float32 inside
  c = ssmax_scale(s, n, bias)
  # Shift each row so that its largest scaled logit (over the keys it may attend) is 0 before scaling; softmax ignores a
  # per-row shift, and z * c alone overflows for large logits (3e38 * log 1e6 = inf, inf - inf = NaN). The clip keeps a
  # row spanning more than the dtype's range finite, so that a scale of 0 (n = 1) never meets an infinity.
  big = 3.4028234663852886e38 if z.dtype.itemsize <= 4 else 1.7976931348623157e308  # the largest finite float32 / float64
  hi = (mask.where(z, -math.inf) if mask is not None else z).max(-1, keepdim=True)
  lo = (mask.where(z, math.inf) if mask is not None else z).min(-1, keepdim=True)
  top = (c >= 0).where(hi, lo) if isinstance(c, Tensor) else hi if c >= 0 else lo
  z = (z - top).clip(-big, big) * c
  return masked_softmax(z, mask).cast(logits.dtype)   # softmax subtracts the row maximum again; every unmasked value is finite


# ---------------------------------------------------------------------------------------------------------------------
# 2. The SSMax module: the trainable s (and optional bias)


class SSMax:
  """Holds s (one scalar, or one per head) and an optional learnable bias; Edifice's `layer`.

  `__call__(logits, n, mask=None)` is `compute` with these parameters; `scale(n)` returns s*log n + bias for folding
  into the query. `freeze()` keeps s (and bias) at their values: no gradient, and optimizers skip them.
  """

  def __init__(self, init_s: float = 1.0, num_heads: int = 1, per_head: bool = False, learn_bias: bool = False,
               learn_s: bool = True):
    check_int("num_heads", num_heads)
    check_number("init_s", init_s)
    shape = (num_heads, 1, 1) if per_head else (1,)  # (H, 1, 1) broadcasts over [B, H, T_q, T_k] logits
    self.s = Tensor.full(shape, float(init_s)).contiguous().realize()
    self.bias = Tensor.zeros(shape).contiguous().realize() if learn_bias else None
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

  def scale(self, n: int | Tensor) -> Tensor:
    s, b = self._params()
    return ssmax_scale(s, n, b)

  def __call__(self, logits: Tensor, n: int | Tensor, mask: Tensor | None = None) -> Tensor:
    s, b = self._params()
    return compute(logits, s, n, bias=b, mask=mask)


# ---------------------------------------------------------------------------------------------------------------------
# 3. Causal multi-head attention with SSMax (Edifice's build_ssmax_attention), and the field's length-dependent variants

ATTENTIONS = ("ssmax", "softmax", "logn", "qwen_logn", "llama4", "scale_invariant")
N_MODES = ("row", "sequence")
POSITIONALS = ("none", "rope")
OUTPUT_MODES = ("last", "all", "mean")
DTYPES = ("float32", "bfloat16", "float16")
LLAMA4_BETA = 0.1          # transformers' modeling_llama4.py, attn_scale
SCALE_INVARIANT_TAU = 10.0  # arXiv:2505.17083, the tau of its experiments

# The variants, each a function of n (the keys a query row sees), of the query's position, or of the query-key distance.
# All but scale-invariant multiply the logits of a whole row by one number, so they fold into q like SSMax (no kernel).


def logn_scale(n: int | Tensor) -> float | Tensor:
  """Chiang & Cholak 2022 ("Overcoming a theoretical limitation of self-attention", Section 5): logits times log n, in
  training and at test. SSMax with s = 1 fixed and no bias."""
  return log_n(n)


def qwen_logn_scale(n: int | Tensor, train_length: int) -> float | Tensor:
  """Qwen's log-n attention (Qwen-7B modeling_qwen.py, `logn_list`): q times max(1, log_L n), L the training length, so
  it is 1 within the training length: a model trained with it is trained with softmax, and it acts at inference only."""
  L = math.log(train_length)
  return (log_n(n) / L).maximum(1.0) if isinstance(n, Tensor) else max(1.0, log_n(n) / L)


def llama4_scale(position: int | Tensor, floor_scale: int, beta: float = LLAMA4_BETA) -> float | Tensor:
  """Llama 4's attention temperature (transformers' modeling_llama4.py, `attn_scales`): q times
  beta * log(floor((pos + 1) / F) + 1) + 1, pos the query's absolute position. There F = 8192; here F = the training
  length, so the temperature starts to rise where training ended."""
  if isinstance(position, Tensor): return ((position.cast("float32") + 1) / floor_scale).floor().add(1).log() * beta + 1
  return beta * math.log(math.floor((position + 1) / floor_scale) + 1) + 1


def scale_invariant_logits(scores: Tensor, q_pos: Tensor, k_pos: Tensor, tau: float = SCALE_INVARIANT_TAU) -> Tensor:
  """Scale-invariant attention (Anson, Wang, Aitchison, arXiv:2505.17083): logit a_t * S + m_t for the score S of a query
  and a key at distance t = q_pos - k_pos, with a_t^2 = 1 + 2 log(t / tau + 1) and m_t = -2 log(t / tau + 1). An additive
  term per (query, key) does not fold into q: it is one more elementwise pass over the scores, fused into their kernel.
  q_pos [T, 1] and k_pos [1, T_k] are absolute positions; t < 0 (masked keys) is taken as 0."""
  u = ((q_pos - k_pos).maximum(0).cast("float32") / tau + 1).log()               # (T, T_k)
  return scores * (1 + 2 * u).sqrt() - 2 * u


def drawn(t: Tensor) -> Tensor:
  """A parameter's initial draw, realised at once. tinygrad 0.14's random numbers are lazy reads of a per-device counter
  buffer (Tensor._next_counter): a draw realised after a later one reads the counter's newer state, so it gets that
  draw's numbers, and two such parameters updated by one optimizer step put a cycle in its schedule ("cycle detected
  in assign graph", tinygrad issue #16520). Realised here, a parameter holds its own numbers and any training loop works."""
  return t.contiguous().realize()


def _affine_backward(grad_y: UOp, call: UOp) -> tuple[UOp, UOp, UOp]:
  x, w, g = Tensor(call.src[1]), Tensor(call.src[2]), Tensor(grad_y)   # call.src[1:]: the forward's inputs
  # dy^T, copied (out, N) once, makes dW = dy^T x a plain product and db a sum along rows; dx reads it too, and is
  # realised so that the layer below does not fuse the whole product into its own reductions (docs/speed.md)
  gt = g.T.contiguous()                                                 # (out, N)
  return (gt.T @ w).contiguous().uop, (gt @ x).uop, gt.sum(1).uop       # dx (N, in), dW (out, in), db (out,)


@function(grad_fxn=_affine_backward)
def affine(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
  """x (N, in) @ w (out, in)^T + b, with the backward above: the same values as autograd's, with W^T copied (in, out) so
  that the forward and both gradients are plain products (each operand read along its rows, as a BLAS reads them)."""
  return x @ w.T.contiguous() + b


class Linear:
  """nn.Linear's parameters (weight (out, in), bias (out,), the same state-dict names), N(0, std) weights and zero biases
  (GPT-2; tinygrad's default Kaiming-uniform would make the scale depend on d_in). Computes in `dtype`, the weights cast
  from float32 at use (autocast). Layers of at least HAND_BACKWARD_MIN weights take `affine`'s hand-written backward,
  measured on tinygrad's CPU and CL devices (docs/speed.md); None keeps every layer on autograd."""
  HAND_BACKWARD_MIN: int | None = 1 << 16

  def __init__(self, d_in: int, d_out: int, std: float = 0.02, dtype: str = "float32"):
    nn.Linear(d_in, d_out)  # its (discarded) draws keep the random stream, and so every seed's weights, as they have been
    self.weight, self.bias = drawn(Tensor.normal(d_out, d_in, std=std)), drawn(Tensor.zeros(d_out))
    self.dtype = dtype

  def __call__(self, x: Tensor) -> Tensor:
    d_out, d_in = self.weight.shape
    x, w, b = x.cast(self.dtype), self.weight.cast(self.dtype), self.bias.cast(self.dtype)
    if self.HAND_BACKWARD_MIN is None or d_in * d_out < self.HAND_BACKWARD_MIN or not isinstance(x.device, str):
      return x.linear(w.transpose(), b)                                                # small, or sharded: autograd
    return affine(x.reshape(-1, d_in), w, b).reshape(*x.shape[:-1], d_out)  # (..., in) -> (N, in) -> (..., out)


def rope_tables(positions: Tensor, d: int, base: float = 10000.0, fraction: float = 1.0, device=None) -> tuple[Tensor, Tensor, Tensor] | None:
  """RoPE's cos and sin tables (T, Hd) at positions [T] and its rotation (Hd, Hd) (below), on `device`; None when no
  dimension rotates. Realised (`contiguous`), so that the kernels reading them do not recompute sin and cos per element."""
  r = 2 * round(fraction * d / 2)                                                    # rotated dimensions, even
  if r == 0: return None
  half = r // 2
  inv_freq = [base ** (-2.0 * (i % half) / d) for i in range(r)] + [0.0] * (d - r)   # (Hd,) both halves share freqs
  # the tables live on x's device(s): replicated where a data-parallel batch is sharded across devices
  angle = positions.cast("float32").reshape(-1, 1) * Tensor(inv_freq, device=device).reshape(1, d)  # (T, Hd)
  rotate = [[0.0] * d for _ in range(d)]
  for i in range(half): rotate[i + half][i], rotate[i][i + half] = -1.0, 1.0        # x @ R = [-x2, x1] on the first r
  return angle.cos().contiguous(), angle.sin().contiguous(), Tensor(rotate, device=device)


def rope(x: Tensor, positions: Tensor, base: float = 10000.0, fraction: float = 1.0, tables=None) -> Tensor:
  """Rotary embedding (RoFormer eq. 34, GPT-NeoX's half-split layout) on x [..., T, Hd] at positions [T], in float32.

  rope(x) = x * cos + rotate_half(x) * sin, with rotate_half([x1, x2]) = [-x2, x1] written as a product with a fixed
  (Hd, Hd) signed permutation (slicing and concatenating made tinygrad's training step much slower).
  fraction < 1 is partial RoPE (p-RoPE, Barbero et al. 2024, arXiv:2410.06205, used by arXiv:2505.17083): only the first
  r = fraction * Hd dimensions rotate, at RoPE's r/2 highest frequencies; the others carry no position (angle 0).
  `tables` (from rope_tables) lets q and k share one pair of tables."""
  tables = tables or rope_tables(positions, x.shape[-1], base, fraction, x.device)
  if tables is None: return x
  cos, sin, rotate = tables
  y = x.float()
  return (y * cos + (y @ rotate) * sin).cast(x.dtype)


def causal_mask(scores: Tensor, start_pos: int | Tensor = 0) -> Tensor | None:
  """True where query row i, at absolute position start_pos + i, may see key j: j <= start_pos + i. Made from the scores
  [..., T, T_k] with const_like, so it lives on their device(s), sharded ones included. None for a single query row,
  which sees every key it is given (a decoding step, whose start_pos may be a symbolic Variable)."""
  if scores.shape[-2] == 1: return None
  return scores.const_like(True, dtypes.bool).tril(start_pos)


def positions(T: int, T_k: int, start_pos: int | Tensor = 0) -> tuple[Tensor, Tensor]:
  """Absolute positions of T query rows starting at start_pos, [T, 1], and of T_k keys from 0, [1, T_k]."""
  return (Tensor.arange(T) + start_pos).reshape(T, 1), Tensor.arange(T_k).reshape(1, T_k)


def padding_mask(lengths: Tensor, q_pos: Tensor, k_pos: Tensor) -> Tensor:
  """True where both the query and the key are inside their sequence: lengths [B] (right padding), q_pos [T, 1],
  k_pos [1, T_k] -> [B, 1, T, T_k]. A padded query row allows no key, so it gets zero weights and a zero output."""
  n = lengths.reshape(-1, 1, 1, 1)
  return (q_pos < n) & (k_pos < n)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, causal: bool = False, start_pos: int | Tensor = 0,
           score_mod=None, lengths: Tensor | None = None, scale: Tensor | None = None) -> Tensor:
  """softmax(q k^T / sqrt(Hd)) v over q [B, H, T, Hd], k and v [B, H, T_k, Hd]; mask bool broadcastable to [B, H, T, T_k],
  True = may attend; causal=True adds `causal_mask` (query row i at position start_pos + i); lengths [B] adds
  `padding_mask`. score_mod(scores, q_pos, k_pos) rewrites the scores from absolute positions before the softmax (the
  idea of PyTorch's FlexAttention `score_mod`); `scale` multiplies each row's scores (a per-row temperature).

  The scores and the softmax are float32 whatever q's dtype (q k^T accumulates in float32); the weights meet v in v's
  dtype. As tinygrad's Tensor.scaled_dot_product_attention, but the weights are realised before they meet v (left lazy,
  tinygrad fuses exp(z - max) / sum into the product with v and recomputes it for every column of the output). At
  inference the division comes after the product, (exp(z - max) @ v) / sum, so that each kernel reads the realised scores
  once and exp runs once per score; and k^T is copied so that both products read their right operand along its rows."""
  kt = k.transpose(-2, -1)                                                             # (B, H, Hd, T_k)
  # copied for several queries only: a decoding step's one query reads the cache's keys row by row as they are
  return _attend(q, kt if TRAINING or q.shape[-2] == 1 else kt.contiguous(), v, mask, causal, start_pos, score_mod, lengths, scale)


def _attend(q: Tensor, kt: Tensor, v: Tensor, mask, causal, start_pos, score_mod, lengths, scale) -> Tensor:
  """`attend` with k^T [B, H, Hd, T_k] given."""
  scores = q.matmul(kt, dtype=dtypes.float32) / math.sqrt(q.shape[-1])               # (B, H, T, T_k)
  if scale is not None: scores = scores * scale
  if score_mod is not None or lengths is not None: q_pos, k_pos = positions(scores.shape[-2], scores.shape[-1], start_pos)
  if score_mod is not None: scores = score_mod(scores, q_pos, k_pos)
  if causal and (cm := causal_mask(scores, start_pos)) is not None: mask = cm if mask is None else cm & mask
  if lengths is not None: mask = padding_mask(lengths, q_pos, k_pos) if mask is None else mask & padding_mask(lengths, q_pos, k_pos)
  if TRAINING: return masked_softmax(scores, mask).cast(v.dtype).contiguous() @ v   # (B, H, T, T_k) @ (B, H, T_k, Hd)
  e, total = _exp_and_sum((scores if mask is None else mask.where(scores, -math.inf)).contiguous(), stored=True)  # (B, H, T, T_k)
  return (e.cast(v.dtype).matmul(v, dtype=dtypes.float32) / total).cast(v.dtype)


# Scores one block of queries may hold at inference before the queries are split into blocks: 2^26 floats, 256 MiB in
# float32 (at 4 heads, batch 1: the whole matrix up to T = 4096, then 2048 queries at a time at 8192, 256 at 65,536).
SCORE_BUDGET = 1 << 26
LAYER_SCORES = 1 << 22  # one layer's scores above which an inference forward realises block by block (16 MiB; `hidden`)
# what surrounds such a forward: nothing here; the OpenCL-on-CPU kit's install() sets it to give PoCL's freed host memory
# back to the system while the blocks' sizes change (ssmax_tiny/pocl/memory.py), and uninstall() sets it back
inference_memory = contextlib.nullcontext
# what computes causal attention at inference without storing its scores, (q, k, v, start_pos, the cache after this
# call's write or None) -> [B, H, T, Hd], or None where it does not apply: nothing here; the OpenCL-on-CPU kit's
# install() sets it to its kernels (an online softmax, ssmax_tiny/pocl/attention.py), and uninstall() sets it back
streaming_attention = None


def default_query_block(batch: int, heads: int, T: int, T_k: int) -> int:
  """Queries per block so that one block of scores [B, H, C, T_k] holds at most SCORE_BUDGET floats: T (one block, the
  materialised path) when the whole matrix fits, else a multiple of 16 (at least 16)."""
  if batch * heads * T * T_k <= SCORE_BUDGET: return T
  return max(16, SCORE_BUDGET // (batch * heads * T_k) // 16 * 16)


def attend_blocked(q: Tensor, k: Tensor, v: Tensor, query_block: int, start_pos: int = 0, score_mod=None,
                   lengths: Tensor | None = None, scale: Tensor | None = None) -> Tensor:
  """Causal `attend` one block of query_block queries at a time, each block realised before the next, so that the extra
  memory is one block of scores [B, H, C, T_k] instead of [B, H, T, T_k]. Each query row is computed exactly as in
  `attend` (a row's softmax needs only its own scores; score_mod and the padding mask see absolute positions), so the
  result is the same; a block's queries see no key after its last row, so the keys are cut near there. Realising breaks the
  autograd graph: inference and prefill only."""
  B, H, T, Hd = q.shape
  q, kt, v = (t.contiguous().realize() for t in (q, k.transpose(-2, -1), v))  # computed once, read by every block (kt: see attend)
  # each distinct number of keys is a new shape with new kernels: cut the keys at a multiple of `step` (the causal mask
  # hides the extra ones), so that at most 8 shapes are compiled
  step = query_block * math.ceil(math.ceil(T / query_block) / 8)
  # the block's first query, a bound Variable: blocks of one shape share their kernels instead of compiling each
  first = Variable("query_block_start", 0, T - 1)
  blocks = []
  # every block's scores have their own size: tinygrad's allocator would keep one freed buffer of each (LRUAllocator)
  with Context(LRU=0):
    for c0 in range(0, T, query_block):
      c1, c = min(T, c0 + query_block), first.bind(c0)
      # row c1 - 1 sees keys 0..start_pos + c1 - 1; more are cut off by the causal mask, which a one-row block has not
      keys = start_pos + (c1 if c1 - c0 == 1 else min(T, math.ceil(c1 / step) * step))
      q_block = q.shrink(((0, B), (0, H), (c, c + c1 - c0), (0, Hd)))              # (B, H, c1 - c0, Hd)
      # the rows' scale: (T, 1), (H, T, 1) with one s per head, or (B, 1, 1, 1) (sequence mode with lengths), rows second last
      s_block = scale if scale is None or scale.shape[-2] == 1 else \
        scale.shrink(tuple((0, n) for n in scale.shape[:-2]) + ((c, c + c1 - c0), (0, 1)))   # (..., c1 - c0, 1)
      blocks.append(_attend(q_block, kt[:, :, :, :keys], v[:, :, :keys], None, True, start_pos + c, score_mod, lengths, s_block).realize())
  return Tensor.cat(*blocks, dim=2)                                                 # (B, H, T, Hd)


class Attended(NamedTuple):
  """What `SSMaxAttention.explicit` returns: the attention's output [B, T, C] and its weights [B, H, T, T_k]."""
  output: Tensor
  weights: Tensor


class SSMaxAttention:
  """Causal multi-head attention: q, k, v, out Linear layers (with bias), scores / sqrt(head_dim), SSMax or softmax, or
  one of the field's variants (config.attention; see their functions above). Built from an SSMaxConfig
  (`build_ssmax_attention` makes one from keyword options), which has checked every option.

  n, the number of keys a query sees: `n_mode="row"` gives row i n = start_pos + i + 1 (the paper's causal n);
  `"sequence"` gives every row Edifice's single n = start_pos + T (with padding, the sequence's own length).
  `__call__` multiplies each row by its scale (s*log n + b for SSMax) and calls `attend`; `explicit` computes the
  weights with `compute` and returns them with the output.
  `cache` [2, B, H, max_len, Hd] (a KVCache layer) turns either into a decoding step: the new keys and values are written
  at start_pos.. and the queries attend to all start_pos + T of them. start_pos may be a bound Variable (TinyJit decoding).
  `lengths` [B] (right padding): keys at or after a sequence's length are masked, and its padded query rows get zeros.
  """

  def __init__(self, config: SSMaxConfig, out_std: float = 0.02):
    c = self.config = config
    self.num_heads, self.head_dim = c.num_heads, c.hidden_size // c.num_heads
    self.q, self.k, self.v = (Linear(c.hidden_size, c.hidden_size, dtype=c.dtype) for _ in range(3))
    self.out = Linear(c.hidden_size, c.hidden_size, out_std, dtype=c.dtype)
    # QK-norm (Henry et al. 2020; RMSNorm per head as in OLMo 2 and Qwen3), before RoPE and before any scaling
    self.q_norm, self.k_norm = (nn.RMSNorm(self.head_dim), nn.RMSNorm(self.head_dim)) if c.qk_norm else (None, None)
    self.ssmax = SSMax(c.init_s, c.num_heads, c.per_head, c.learn_bias, c.learn_s) if c.attention == "ssmax" else None
    self.score_mod = scale_invariant_logits if c.attention == "scale_invariant" else None

  def _heads(self, t: Tensor) -> Tensor:
    B, T, _ = t.shape
    return t.reshape(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, T, C) -> (B, H, T, Hd)

  def keys_seen(self, T: int, start_pos: int | Tensor = 0, lengths: Tensor | None = None) -> Tensor:
    """n per query row as a (T, 1) Tensor ([B, 1, 1, 1] in sequence mode with lengths); start_pos may be a bound Variable
    (decoding under TinyJit). With right padding a real row's n in row mode is unchanged (its keys are all real)."""
    if self.config.n_mode == "sequence":
      return lengths.reshape(-1, 1, 1, 1) if lengths is not None else Tensor.zeros(T, 1) + start_pos + T  # all keys so far
    return Tensor.arange(T).reshape(T, 1) + start_pos + 1                        # row i: keys 0..start_pos+i

  def query_scale(self, T: int, start_pos: int | Tensor = 0, lengths: Tensor | None = None) -> Tensor | None:
    """The number each query row's logits are multiplied by, (T, 1) (or (H, T, 1), (B, 1, 1, 1)); None for softmax and
    scale-invariant attention (whose change is per key: `score_mod`)."""
    attention, L = self.config.attention, self.config.train_length
    if attention == "ssmax": return self.ssmax.scale(self.keys_seen(T, start_pos, lengths))
    if attention == "logn": return logn_scale(self.keys_seen(T, start_pos, lengths))
    if attention == "qwen_logn": return qwen_logn_scale(self.keys_seen(T, start_pos, lengths), L)
    if attention == "llama4": return llama4_scale(positions(T, 1, start_pos)[0], L)
    return None

  def _qkv(self, x: Tensor, start_pos: int | Tensor, cache: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """q, k, v [B, H, T or start_pos + T, Hd], and the whole cache [2, B, H, max_len, Hd] after this call's write (None
    without a cache)."""
    B, T, _ = x.shape
    q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))  # each (B, H, T, Hd)
    if self.q_norm is not None: q, k = self.q_norm(q.float()).cast(q.dtype), self.k_norm(k.float()).cast(k.dtype)
    if self.config.positional == "rope":
      at = Tensor.arange(T).to(x.device) + start_pos
      tables = rope_tables(at, self.head_dim, self.config.rope_base, self.config.rope_fraction, x.device)
      q, k = rope(q, at, tables=tables), rope(k, at, tables=tables)
    if cache is not None:
      # write this step's keys and values into the cache, then read back all of them (tinygrad/llm/model.py does the same)
      stored = Tensor(cache.uop.after(cache[:, :, :, start_pos:start_pos + T, :].uop.store(Tensor.stack(k, v).uop)))
      k, v = stored[0, :, :, 0:start_pos + T, :], stored[1, :, :, 0:start_pos + T, :]  # (B, H, start_pos + T, Hd)
      return q, k, v, stored
    return q, k, v, None

  def _merge(self, y: Tensor) -> Tensor:
    B, _, T, _ = y.shape
    return self.out(y.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim))   # (B, H, T, Hd) -> (B, T, C)

  def __call__(self, x: Tensor, start_pos: int | Tensor = 0, cache: Tensor | None = None, fold_scale: bool = True,
               query_block: int | None = None, lengths: Tensor | None = None) -> Tensor:
    """[B, T, C] -> [B, T, C]. fold_scale=False takes the explicit path (`explicit`), the same result to 1e-5.
    query_block=C < T attends C queries at a time (`attend_blocked`: inference and prefill, not differentiable)."""
    if query_block is not None: check_int("query_block", query_block)
    if not fold_scale: return self.explicit(x, start_pos, cache, lengths).output
    q, k, v, stored = self._qkv(x, start_pos, cache)
    scale = self.query_scale(x.shape[1], start_pos, lengths)
    if scale is not None:
      # realised in training, as is the gradient of q * c, so that the kernels reading them do not recompute log n and the
      # scale per element; at inference c stays lazy and adds no kernel
      if TRAINING: scale = scale.contiguous().contiguous_backward()
      # in float32, (c_i q_i) . k_j = c_i z_ij: the scale folds into q at no cost; in half precision q would round c to
      # its 8 or 11 bits, so c multiplies the float32 scores instead
      if q.dtype == dtypes.float32: q, scale = q.contiguous_backward() * scale, None   # (B, H, T, Hd) * (T, 1)
    if not TRAINING and scale is None and self.score_mod is None and streaming_attention is not None and \
       (y := streaming_attention(q, k, v, start_pos, stored)) is not None:
      if lengths is not None: y = (positions(x.shape[1], 1, start_pos)[0] < lengths.reshape(-1, 1, 1, 1)).where(y, 0)  # padded rows: 0
      return self._merge(y)
    if query_block is not None and query_block < x.shape[1]:
      return self._merge(attend_blocked(q, k, v, query_block, start_pos, self.score_mod, lengths, scale))
    return self._merge(attend(q, k, v, causal=True, start_pos=start_pos, score_mod=self.score_mod, lengths=lengths, scale=scale))

  def explicit(self, x: Tensor, start_pos: int | Tensor = 0, cache: Tensor | None = None, lengths: Tensor | None = None) -> Attended:
    """The weights made explicitly with `compute` (SSMax) or the variant's formula on the scores, then weights @ v: the
    reference path, and the weights."""
    q, k, v, _ = self._qkv(x, start_pos, cache)
    scores = q.matmul(k.transpose(-2, -1), dtype=dtypes.float32) / math.sqrt(self.head_dim)   # (B, H, T, T_k)
    mask = causal_mask(scores, start_pos)
    if lengths is not None:
      pad = padding_mask(lengths, *positions(scores.shape[-2], scores.shape[-1], start_pos))
      mask = pad if mask is None else mask & pad
    if self.ssmax is not None: weights = self.ssmax(scores, self.keys_seen(x.shape[1], start_pos, lengths), mask)
    else:
      if (c := self.query_scale(x.shape[1], start_pos, lengths)) is not None: scores = scores * c
      if self.score_mod is not None: scores = self.score_mod(scores, *positions(scores.shape[-2], scores.shape[-1], start_pos))
      weights = masked_softmax(scores, mask)
    return Attended(self._merge(weights.cast(v.dtype).contiguous() @ v), weights)   # (B, H, T, Hd); see attend()


# ---------------------------------------------------------------------------------------------------------------------
# 4. Feed-forward and the pre-LayerNorm block


class FeedForward:
  """Linear(h, 4h), exact (erf) GELU as in Axon and PyTorch, Linear(4h, h)."""

  def __init__(self, hidden_size: int, out_std: float = 0.02, dtype: str = "float32"):
    self.up, self.down = Linear(hidden_size, 4 * hidden_size, dtype=dtype), Linear(4 * hidden_size, hidden_size, out_std, dtype=dtype)

  def __call__(self, x: Tensor) -> Tensor:
    # contiguous: without it the backward recomputes the GELU once per output column of the down projection
    return self.down(self.up(x).gelu(approximate="none").contiguous())


class TransformerBlock:
  """x + Dropout(Attention(LN(x))), then x + Dropout(FFN(LN(x))): Edifice's pre-LayerNorm block. out_std is the init of
  the two projections that write into the residual stream (SSMaxTransformer sets it from the depth). The residual stream
  and the LayerNorms stay float32 in every dtype, as under PyTorch's autocast; the projections run in config.dtype."""

  def __init__(self, config: SSMaxConfig, out_std: float = 0.02):
    self.ln1, self.ln2 = nn.LayerNorm(config.hidden_size), nn.LayerNorm(config.hidden_size)
    self.attn = SSMaxAttention(config, out_std)
    self.ffn = FeedForward(config.hidden_size, out_std, config.dtype)
    self.dropout = config.dropout

  def __call__(self, x: Tensor, start_pos: int | Tensor = 0, cache: Tensor | None = None, fold_scale: bool = True,
               query_block: int | None = None, lengths: Tensor | None = None, weights: list | None = None) -> Tensor:
    """weights: a list, to which the attention's weights are appended (the explicit path, for analysis)."""
    if weights is not None:
      attended = self.attn.explicit(self.ln1(x), start_pos, cache, lengths)
      weights.append(attended.weights)
      x = x + attended.output.dropout(self.dropout).float()
    else: x = x + self.attn(self.ln1(x), start_pos, cache, fold_scale, query_block, lengths).dropout(self.dropout).float()
    return x + self.ffn(self.ln2(x)).dropout(self.dropout).float()


# ---------------------------------------------------------------------------------------------------------------------
# 5. Configuration and the model (Edifice's build)


@dataclass(frozen=True)
class SSMaxConfig:
  """Edifice's build options (embed_dim, hidden_size=256, num_heads=4, num_layers=6, dropout=0.1, window_size=60),
  then ours: how the output is read, which attention, how n is counted, the SSMax variant, positions, precision.
  Every option is checked here, once; a bad one raises a ValueError naming it, its value and what is accepted."""
  embed_dim: int
  hidden_size: int = 256
  num_heads: int = 4
  num_layers: int = 6
  dropout: float = 0.1
  window_size: int = 60          # Edifice's: the sequence length inference is compiled (TinyJit) for; others run unjitted
  output_mode: str = "last"      # "last": [B, h] at the last position (Edifice); "all": [B, T, h]; "mean": mean over T
  attention: str = "ssmax"       # "softmax" runs the same code as a baseline
  n_mode: str = "row"            # "row": n = i + 1 for causal row i (the paper); "sequence": n = T for every row (Edifice)
  per_head: bool = False         # one s per head instead of one per layer
  init_s: float = 1.0            # Edifice's default
  learn_s: bool = True           # False keeps s fixed at init_s
  learn_bias: bool = False       # softmax((s log n + b) z), paper Section 3
  positional: str = "none"       # "rope": rotary embedding on q and k (the paper's setting); Edifice has none
  query_block: int | None = None # inference: queries per attention block; None chooses from T (default_query_block)
  rope_base: float = 10000.0     # RoPE's base (raise it at evaluation with `with_options`)
  rope_fraction: float = 1.0     # < 1: partial RoPE, only that fraction of each head's dimensions rotates
  qk_norm: bool = False          # RMSNorm on each head's q and k before RoPE and scaling
  train_length: int | None = None  # L, the length the model trains at: qwen_logn's log base and llama4's floor scale
  dtype: str = "float32"         # the projections' and activations' dtype; weights, LayerNorms, softmax, loss: float32

  def __post_init__(self):
    for name in ("embed_dim", "hidden_size", "num_heads", "num_layers", "window_size"): check_int(name, getattr(self, name))
    if self.hidden_size % self.num_heads:
      raise ValueError(f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}")
    check_number("dropout", self.dropout, 0, 1, high_open=True)
    check_number("init_s", self.init_s)
    for name in ("per_head", "learn_s", "learn_bias", "qk_norm"): check_bool(name, getattr(self, name))
    if self.query_block is not None: check_int("query_block", self.query_block)
    check_choice("output_mode", self.output_mode, OUTPUT_MODES)
    check_choice("attention", self.attention, ATTENTIONS)
    check_choice("n_mode", self.n_mode, N_MODES)
    check_choice("positional", self.positional, POSITIONALS)
    check_choice("dtype", self.dtype, DTYPES)
    if self.positional == "rope" and (self.hidden_size // self.num_heads) % 2:
      raise ValueError(f"positional='rope' needs an even head_dim; hidden_size/num_heads = {self.hidden_size // self.num_heads}")
    check_number("rope_base", self.rope_base, 1, low_open=True)
    check_number("rope_fraction", self.rope_fraction, 0, 1, low_open=True)
    if self.train_length is not None: check_int("train_length", self.train_length, 2)
    if self.attention in ("qwen_logn", "llama4") and self.train_length is None:
      raise ValueError(f"attention={self.attention!r} needs train_length (the length L the model trains at)")

  def to_dict(self) -> dict:
    """The fields, as a sweep's cell and a tuned step's signature record them: dtype is left out at float32, its default,
    because it came after the first sweeps, whose cells are named by a hash of this (ssmax_tiny/sweep.py)."""
    return {k: v for k, v in asdict(self).items() if not (k == "dtype" and v == "float32")}

  @classmethod
  def from_options(cls, **options) -> SSMaxConfig:
    """Like SSMaxConfig(**options), but an unknown option is a ValueError that lists the accepted ones."""
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(options) - set(names))
    if unknown: raise ValueError(f"unknown option(s) {', '.join(unknown)}; accepted: {', '.join(names)}")
    if "embed_dim" not in options: raise ValueError("embed_dim is required (the size of each input timestep)")
    return cls(**options)


class _JitCache:
  """TinyJits keyed by batch size. No __dict__, so nn.state.get_state_dict does not walk into captured buffers."""
  __slots__ = ("jits",)

  def __init__(self): self.jits: dict = {}
  def __contains__(self, key) -> bool: return key in self.jits

  def get(self, key, make):
    if key not in self.jits: self.jits[key] = make()
    return self.jits[key]


class SSMaxTransformer:
  """Input projection (when embed_dim != hidden_size), pre-LN blocks with dropout between them, a final LayerNorm,
  and the output read at the last position. Inference at T == window_size replays a TinyJit (one per batch size)."""

  def __init__(self, config: SSMaxConfig):
    self.config = c = config
    # GPT-2's initialisation: every Linear N(0, 0.02) with zero bias (`Linear`); the two projections of each block that
    # write into the residual stream N(0, 0.02 / sqrt(2 L)), so that the stream's variance does not grow with depth
    residual_std = 0.02 / math.sqrt(2 * c.num_layers)
    self.input_proj = Linear(c.embed_dim, c.hidden_size, dtype=c.dtype) if c.embed_dim != c.hidden_size else None
    self.blocks = [TransformerBlock(c, residual_std) for _ in range(c.num_layers)]
    self.ln_f = nn.LayerNorm(c.hidden_size)
    self._jits = _JitCache()

  def check_input(self, x) -> None:
    if not isinstance(x, Tensor): raise ValueError(f"x must be a tinygrad Tensor [batch, T, embed_dim], got {type(x).__name__}")
    if x.ndim != 3: raise ValueError(f"x has shape {x.shape}: expected rank 3, [batch, T, embed_dim={self.config.embed_dim}]")
    if x.shape[-1] != self.config.embed_dim:
      raise ValueError(f"x has last dimension {x.shape[-1]}: expected embed_dim={self.config.embed_dim}")
    if x.shape[0] < 1 or x.shape[1] < 1: raise ValueError(f"x has shape {x.shape}: batch and T must be >= 1")

  def hidden(self, x: Tensor, start_pos: int | Tensor = 0, cache: KVCache | None = None, fold_scale: bool = True,
             lengths=None, weights: list | None = None) -> Tensor:
    """[B, T, embed_dim] -> [B, T, hidden_size] after the final LayerNorm, before the output is read. With a KVCache, x
    holds the positions after the start_pos ones already cached, and their keys and values are written into it.
    lengths (B ints, or an int Tensor [B]): each sequence's length in a right-padded batch; padded positions attend to
    nothing and no real position attends to them. weights: a list that receives each layer's attention weights."""
    h = (self.input_proj(x) if self.input_proj is not None else x).float()   # the residual stream: float32 (TransformerBlock)
    lengths = self.check_lengths(lengths, x.shape[0], x.shape[1])
    if lengths is not None and cache is not None: raise ValueError("lengths (padding) is not supported with a KV cache")
    layer_caches = cache.layers if cache is not None else [None] * len(self.blocks)
    query_block = self.query_block(x.shape[0], x.shape[1], start_pos)
    # An eager forward is one schedule, and tinygrad holds each realised attention matrix of a schedule to its end
    # (held_bufs, tinygrad/schedule/__init__.py): one per layer. At inference with large scores, each block's output is
    # realised before the next block runs, so that one layer's matrix is alive at a time (docs/long-context.md)
    by_layer = query_block is not None and x.shape[0] * self.config.num_heads * x.shape[1] * (start_pos + x.shape[1]) > LAYER_SCORES
    with inference_memory() if by_layer else contextlib.nullcontext():
      for i, (block, layer_cache) in enumerate(zip(self.blocks, layer_caches)):
        h = block(h, start_pos, layer_cache, fold_scale, query_block, lengths, weights)
        if i < len(self.blocks) - 1: h = h.dropout(self.config.dropout)  # between blocks, not after the last
        if by_layer: h = h.realize()
      return self.ln_f(h).realize() if by_layer else self.ln_f(h)

  @staticmethod
  def check_lengths(lengths, batch: int, T: int) -> Tensor | None:
    """lengths as an int32 Tensor [batch], each in [1, T] (a Tensor is taken as it is)."""
    if lengths is None or isinstance(lengths, Tensor): return lengths
    arr = np.asarray(lengths)
    if arr.shape != (batch,) or not np.issubdtype(arr.dtype, np.integer) or arr.min() < 1 or arr.max() > T:
      raise ValueError(f"lengths={arr.tolist()} must be {batch} integers (one per sequence) in [1, T={T}]")
    return Tensor(arr.astype(np.int32))

  def query_block(self, batch: int, T: int, start_pos: int | Tensor = 0) -> int | None:
    """Queries per attention block for this call: None (the materialised path) in training, which needs the graph that
    blocks break, and for a symbolic start_pos (a decoding step has one query); else config.query_block, or one chosen
    from T by default_query_block."""
    if TRAINING or not isinstance(start_pos, int): return None
    if self.config.query_block is not None: return self.config.query_block
    return default_query_block(batch, self.config.num_heads, T, start_pos + T)

  def read_out(self, h: Tensor, lengths: Tensor | None = None) -> Tensor:
    """[B, T, h] -> the output: "last" [B, h], "mean" [B, h] or "all" [B, T, h]. With lengths (right padding), "last" reads
    each sequence at its own last position and "mean" averages its real positions only."""
    mode = self.config.output_mode
    if mode == "all": return h
    if lengths is None: return h[:, -1, :] if mode == "last" else h.mean(axis=1)   # (B, T, h) -> (B, h)
    at = Tensor.arange(h.shape[1]).reshape(1, -1, 1)                                 # (1, T, 1) against (B, 1, 1)
    if mode == "last": return (at == lengths.reshape(-1, 1, 1) - 1).where(h, 0.0).sum(1)
    return (at < lengths.reshape(-1, 1, 1)).where(h, 0.0).sum(1) / lengths.reshape(-1, 1).cast(h.dtype)

  def forward(self, x: Tensor, fold_scale: bool = True, lengths=None) -> Tensor:
    """The eager (lazy, unjitted) forward; training steps jit this inside their own TinyJit."""
    self.check_input(x)
    lengths = self.check_lengths(lengths, x.shape[0], x.shape[1])
    return self.read_out(self.hidden(x, fold_scale=fold_scale, lengths=lengths), lengths)

  def _jit_forward(self, x: Tensor) -> Tensor:
    return self.forward(x).contiguous().realize()

  def __call__(self, x: Tensor) -> Tensor:
    self.check_input(x)
    if TRAINING or x.shape[1] != self.config.window_size: return self.forward(x)
    jit = self._jits.get(x.shape[0], lambda: TinyJit(self._jit_forward))
    # a replay writes into the same output buffer every time: hand the caller a copy of its own
    return jit(x.contiguous().realize()).clone().realize()

  def ssmax_layers(self) -> list[SSMax]:
    return [b.attn.ssmax for b in self.blocks if b.attn.ssmax is not None]

  def learned_s(self) -> list[list[float]]:
    """s of each layer (one value, or one per head) as Python floats."""
    return [m.s.numpy().reshape(-1).tolist() for m in self.ssmax_layers()]


# ---------------------------------------------------------------------------------------------------------------------
# 6. Decoding with a KV cache


class KVCache:
  """Keys and values of every layer for decoding, preallocated in the model's dtype: one [2, B, H, max_len, Hd] Tensor
  per layer."""

  def __init__(self, model: SSMaxTransformer, batch_size: int, max_len: int):
    check_int("batch_size", batch_size)
    self.max_len = check_int("max_len", max_len)
    self.layers = [Tensor.zeros(2, batch_size, b.attn.num_heads, max_len, b.attn.head_dim, dtype=model.config.dtype).contiguous().realize()
                   for b in model.blocks]


class Decoder:
  """One position at a time through a TinyJit, the position a bound Variable (so one captured graph serves every step).

  `prefill(x)` runs a prompt [B, T, embed_dim] eagerly and returns its hidden states [B, T, h]; then each `step(x_t)`
  with x_t [B, 1, embed_dim] returns the hidden state [B, h] of that position, equal to a full recompute (tests)."""

  def __init__(self, model: SSMaxTransformer, batch_size: int, max_len: int):
    self.model, self.cache, self.pos = model, KVCache(model, batch_size, max_len), 0
    self.start_pos = Variable("start_pos", 0, max_len - 1)
    self._jit = TinyJit(lambda x, start_pos: self.model.hidden(x, start_pos, self.cache)[:, -1, :].contiguous().realize())

  def _check_capacity(self, T: int) -> None:
    if self.pos + T > self.cache.max_len:
      raise ValueError(f"decoding {T} more position(s) after {self.pos} exceeds max_len={self.cache.max_len}")

  def prefill(self, x: Tensor) -> Tensor:
    self.model.check_input(x)
    self._check_capacity(x.shape[1])
    h = self.model.hidden(x, self.pos, self.cache).realize()
    self.pos += x.shape[1]
    return h

  def step(self, x: Tensor) -> Tensor:
    if x.ndim != 3 or x.shape[1] != 1: raise ValueError(f"x has shape {x.shape}: step takes one position, [batch, 1, embed_dim]")
    self._check_capacity(1)
    h = self._jit(x.contiguous().realize(), self.start_pos.bind(self.pos)).clone().realize()
    self.pos += 1
    return h


# ---------------------------------------------------------------------------------------------------------------------
# 7. Token models: a classifier read at the last position (the retrieval tasks), and a next-token language model


def configure_optimizers(model, lr: float, betas: tuple[float, float], weight_decay: float) -> OptimizerGroup:
  """AdamW over the trainable parameters, weight decay on matrices and the embedding only (rank >= 2); biases,
  LayerNorm, s and b are not decayed (nanoGPT's configure_optimizers)."""
  params = [p for p in get_parameters(model) if p.is_param]
  decay, no_decay = [p for p in params if p.ndim >= 2], [p for p in params if p.ndim < 2]
  b1, b2 = betas
  return OptimizerGroup(AdamW(decay, lr=lr, b1=b1, b2=b2, weight_decay=weight_decay), AdamW(no_decay, lr=lr, b1=b1, b2=b2, weight_decay=0.0))


def check_prompt(tokens) -> np.ndarray:
  prompt = tokens.numpy() if isinstance(tokens, Tensor) else np.asarray(tokens)
  if prompt.ndim != 2 or prompt.shape[1] < 1 or not np.issubdtype(prompt.dtype, np.integer):
    raise ValueError(f"tokens has shape {prompt.shape} and dtype {prompt.dtype}: expected integer ids [batch, T >= 1]")
  return prompt.astype(np.int32)


def decode(model: TokenModel | LanguageModel, prompt: np.ndarray, max_new_tokens: int, choose):
  """The decoding loop both token models share: the prompt [B, T0] once (prefill), then one position at a time through a
  Decoder (its TinyJit step, the position a bound Variable; n continues from the cache). choose(logits [B, classes]) ->
  token ids [B]; yields (tokens [B], logits [B, classes]) as they come."""
  check_int("max_new_tokens", max_new_tokens)
  vocab = model.embed.weight.shape[0]
  B, T0 = prompt.shape
  decoder = Decoder(model.transformer, B, T0 + max_new_tokens - 1)  # the last generated token is never fed back
  h = decoder.prefill(model.embed(Tensor(prompt)))[:, -1, :]        # (B, T0, h) -> (B, h)
  for i in range(max_new_tokens):
    logits = model.project(h).numpy()                                # (B, classes)
    tok = np.asarray(choose(logits), dtype=np.int32).reshape(B)
    if tok.min() < 0 or tok.max() >= vocab: raise ValueError(f"decoding chose ids {tok.tolist()} outside [0, {vocab}), the vocabulary")
    yield tok, logits
    if i < max_new_tokens - 1: h = decoder.step(model.embed(Tensor(tok).reshape(B, 1)))


def _embedding(vocab_size: int, width: int) -> nn.Embedding:
  embed = nn.Embedding(vocab_size, width)
  embed.weight = drawn(Tensor.normal(vocab_size, width, std=0.02))  # GPT-2's token init
  return embed


class TokenModel:
  """Token embedding -> SSMaxTransformer (output at the last position) -> linear head over num_classes (a task's values)."""

  def __init__(self, vocab_size: int, num_classes: int, config: SSMaxConfig):
    check_int("vocab_size", vocab_size)
    check_int("num_classes", num_classes)
    if config.output_mode != "last": raise ValueError(f"output_mode={config.output_mode!r}: the token model reads 'last'")
    self.config = config
    self.embed = _embedding(vocab_size, config.embed_dim)
    self.transformer = SSMaxTransformer(config)
    self.head = Linear(config.hidden_size, num_classes, dtype=config.dtype)

  def __call__(self, tokens: Tensor, lengths=None) -> Tensor:
    return self.project(self.transformer.forward(self.embed(tokens), lengths=lengths))  # (B, T) -> (B, T, E) -> (B, h) -> (B, classes)

  def project(self, h: Tensor) -> Tensor: return self.head(h).float()

  def logits_from(self, h: Tensor, lengths=None) -> Tensor:
    """the transformer's hidden states [B, T, h] (after its final LayerNorm) -> logits [B, classes]"""
    return self.project(self.transformer.read_out(h, lengths))

  def head_options(self) -> dict:
    return dict(kind="classifier", vocab_size=self.embed.weight.shape[0], num_classes=self.head.weight.shape[0])

  def configure_optimizers(self, lr: float, betas: tuple[float, float], weight_decay: float) -> OptimizerGroup:
    return configure_optimizers(self, lr, betas, weight_decay)

  def generate(self, tokens, max_new_tokens: int, token_of_class=None, return_logits: bool = False):
    """Greedy decoding with the KV cache (`decode`). The head predicts one of num_classes classes; `token_of_class` maps
    an int array of classes to the token ids fed back (default: the identity, allowed only when num_classes ==
    vocab_size). Returns the new tokens [B, max_new_tokens] as numpy int32 (and the logits [B, max_new_tokens, classes]
    with return_logits)."""
    prompt = check_prompt(tokens)
    vocab, classes = self.embed.weight.shape[0], self.head.weight.shape[0]
    if token_of_class is None:
      if classes != vocab:
        raise ValueError(f"the head predicts {classes} classes, not the {vocab} tokens of the vocabulary: pass token_of_class")
      token_of_class = lambda c: c
    steps = list(decode(self, prompt, max_new_tokens, lambda logits: token_of_class(logits.argmax(-1))))
    new, logits = np.stack([t for t, _ in steps], 1), np.stack([lg for _, lg in steps], 1)
    return (new, logits) if return_logits else new


class LanguageModel:
  """A next-token model: token embedding -> SSMaxTransformer at every position -> logits over the vocabulary, the head
  tied to the embedding by default (GPT-2, nanoGPT; tying needs embed_dim == hidden_size). Byte-level by default
  (vocabulary 256). The transformer's output_mode is not used: every position is read. Logits are float32."""

  def __init__(self, config: SSMaxConfig, vocab_size: int = 256, tie_weights: bool = True):
    check_int("vocab_size", vocab_size)
    check_bool("tie_weights", tie_weights)
    if tie_weights and config.embed_dim != config.hidden_size:
      raise ValueError(f"tie_weights=True needs embed_dim == hidden_size; got embed_dim={config.embed_dim}, hidden_size={config.hidden_size}")
    self.config, self.tie_weights = config, tie_weights
    self.embed = _embedding(vocab_size, config.embed_dim)
    self.transformer = SSMaxTransformer(config)
    self.head = None if tie_weights else Linear(config.hidden_size, vocab_size, dtype=config.dtype)

  def project(self, h: Tensor) -> Tensor:
    """hidden states [..., h] -> float32 logits [..., vocab]: h @ embed^T when tied (in config.dtype), else the head."""
    if self.head is not None: return self.head(h).float()
    dt = self.config.dtype
    return (h.cast(dt) @ self.embed.weight.cast(dt).T).float()

  def logits_from(self, h: Tensor, lengths=None) -> Tensor: return self.project(h)  # [B, T, h] -> [B, T, vocab]

  def __call__(self, tokens: Tensor, lengths=None) -> Tensor:
    """tokens [B, T] -> logits [B, T, vocab]; lengths (right padding) as in SSMaxTransformer.hidden."""
    if tokens.ndim != 2: raise ValueError(f"tokens has shape {tokens.shape}: expected [batch, T]")
    return self.project(self.transformer.hidden(self.embed(tokens), lengths=lengths))

  def token_losses(self, tokens: Tensor, targets: Tensor, lengths=None) -> Tensor:
    """Cross-entropy of each position's next-token prediction, [B, T] (nats); 0 at padded positions."""
    losses = self(tokens, lengths).sparse_categorical_crossentropy(targets, reduction="none")   # (B, T)
    lengths = self.transformer.check_lengths(lengths, *tokens.shape)
    return losses if lengths is None else (Tensor.arange(tokens.shape[1]).reshape(1, -1) < lengths.reshape(-1, 1)).where(losses, 0.0)

  def loss(self, tokens: Tensor, targets: Tensor, lengths=None) -> Tensor:
    """Mean next-token cross-entropy over the real positions of the batch."""
    if lengths is None: return self(tokens).sparse_categorical_crossentropy(targets)
    lengths = self.transformer.check_lengths(lengths, *tokens.shape)
    return self.token_losses(tokens, targets, lengths).sum() / lengths.sum().cast("float32")

  def head_options(self) -> dict:
    return dict(kind="lm", vocab_size=self.embed.weight.shape[0], tie_weights=self.tie_weights)

  def configure_optimizers(self, lr: float, betas: tuple[float, float], weight_decay: float) -> OptimizerGroup:
    return configure_optimizers(self, lr, betas, weight_decay)

  def generate(self, tokens, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None, seed: int = 0):
    """Yields the next token of each sequence, [B] numpy int32, one position at a time, through the KV cache.
    temperature 0 is greedy (argmax); otherwise sampling from softmax(logits / temperature), restricted to the top_k
    most likely tokens when top_k is given, from numpy's generator seeded with `seed` (Gumbel-max)."""
    prompt = check_prompt(tokens)
    check_number("temperature", temperature, 0)
    vocab = self.embed.weight.shape[0]
    if top_k is not None and not (isinstance(top_k, int) and 1 <= top_k <= vocab):
      raise ValueError(f"top_k={top_k!r} must be an integer in [1, {vocab}] (the vocabulary), or None")
    rng = np.random.default_rng(seed)

    def choose(logits: np.ndarray) -> np.ndarray:
      if temperature == 0: return logits.argmax(-1)
      z = logits.astype(np.float64) / temperature
      if top_k is not None: z = np.where(z >= np.sort(z, -1)[:, -top_k, None], z, -np.inf)        # keep the top_k
      return (z + rng.gumbel(size=z.shape)).argmax(-1)                               # argmax(z + Gumbel) ~ softmax(z)

    for tok, _ in decode(self, prompt, max_new_tokens, choose): yield tok


def with_options(model, **changes):
  """A copy of a token model (TokenModel or LanguageModel) whose transformer config has `changes` (say rope_base for
  evaluation, attention="qwen_logn" on a softmax model, dtype="bfloat16"), with the same weights. The changes must not
  add or remove parameters."""
  config = replace(model.config, **changes)
  new = TokenModel(model.embed.weight.shape[0], model.head.weight.shape[0], config) if isinstance(model, TokenModel) else \
      LanguageModel(config, model.embed.weight.shape[0], model.tie_weights)
  old_state, new_state = get_state_dict(model), get_state_dict(new)
  if set(old_state) != set(new_state) or any(old_state[k].shape != new_state[k].shape for k in old_state):
    raise ValueError(f"with_options({', '.join(f'{k}={v!r}' for k, v in changes.items())}) changes the model's parameters; "
                     "only options that keep them (rope_base, rope_fraction, query_block, attention among the ones without "
                     "parameters, n_mode, train_length, dtype) are accepted")
  for k, t in new_state.items(): t.assign(old_state[k]).realize()
  return new


# ---------------------------------------------------------------------------------------------------------------------
# 8. Builders with Edifice's names


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
  """Edifice's `build_ssmax_attention`: causal multi-head attention with SSMax instead of softmax. options are
  SSMaxConfig's attention options (attention, n_mode, per_head, init_s, learn_s, learn_bias, positional, rope_base,
  rope_fraction, qk_norm, train_length, dtype)."""
  return SSMaxAttention(SSMaxConfig.from_options(embed_dim=hidden_size, hidden_size=hidden_size, num_heads=num_heads, **options))
