"""An independent float64 numpy reference of SSMax and of the SSMax transformer, written from the paper's equations.

It shares no code with ssmax_tiny.model: it reads only the parameters (by state-dict name) and the config.
"""
import math

import numpy as np


def softmax(z, mask=None):
  z = np.where(mask, z, -np.inf) if mask is not None else z
  m = z.max(axis=-1, keepdims=True)
  with np.errstate(invalid="ignore"):  # a row with every key masked is NaN here; attention() zeroes it
    e = np.exp(z - m)
    return e / e.sum(axis=-1, keepdims=True)


def ssmax(z, s, n, bias=0.0, mask=None):
  """Paper eq. (4) with the bias of Section 3: softmax((s log n + b) z)."""
  return softmax((np.asarray(s, np.float64) * np.log(np.asarray(n, np.float64)) + bias) * z, mask)


def edifice_ssmax(z, s, n):
  """Edifice's written formula, exp(x_i - s log n) / sum_j exp(x_j - s log n): the shift cancels."""
  e = np.exp(z - s * math.log(n))
  return e / e.sum(axis=-1, keepdims=True)


def layernorm(x, w, b, eps=1e-5):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * w + b


def rope(x, positions, base=10000.0, fraction=1.0):
  """RoFormer's rotation, half-split layout; fraction < 1: only the first r dims rotate, at the r/2 highest frequencies."""
  d = x.shape[-1]
  r = 2 * round(fraction * d / 2)
  half = r // 2
  inv = base ** (-2.0 * np.arange(half) / d)
  ang = positions[:, None] * inv[None, :]
  x1, x2, rest = x[..., :half], x[..., half:r], x[..., r:]
  return np.concatenate([x1 * np.cos(ang) - x2 * np.sin(ang), x2 * np.cos(ang) + x1 * np.sin(ang), rest], axis=-1)


def rmsnorm(x, w, eps=1e-6):
  return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * w


# the variants' formulas, from their sources (each written here without the library's code)
def logn(n): return np.log(n)                                                        # Chiang & Cholak 2022
def qwen_logn(n, L): return np.maximum(1.0, np.log(n) / np.log(L))                  # Qwen-7B logn_list
def llama4(pos, F, beta=0.1): return np.log1p(np.floor((pos + 1) / F)) * beta + 1   # modeling_llama4.py attn_scales


def scale_invariant(S, t, tau=10.0):                                                  # arXiv:2505.17083
  u = np.log(np.maximum(t, 0) / tau + 1)
  return np.sqrt(1 + 2 * u) * S - 2 * u


def attention(x, p, prefix, cfg, return_weights=False, lengths=None):
  """lengths: right padding, one length per sequence; padded query rows get zero weights."""
  B, T, C = x.shape
  H = cfg["num_heads"]; D = C // H
  lin = lambda name, t: t @ p[f"{prefix}.{name}.weight"].T + p[f"{prefix}.{name}.bias"]
  heads = lambda t: t.reshape(B, T, H, D).transpose(0, 2, 1, 3)
  q, k, v = heads(lin("q", x)), heads(lin("k", x)), heads(lin("v", x))
  if cfg.get("qk_norm"): q, k = rmsnorm(q, p[f"{prefix}.q_norm.weight"]), rmsnorm(k, p[f"{prefix}.k_norm.weight"])
  pos = np.arange(T, dtype=np.float64)
  if cfg.get("positional", "none") == "rope":
    q, k = (rope(t, pos, cfg.get("rope_base", 10000.0), cfg.get("rope_fraction", 1.0)) for t in (q, k))
  z = q @ k.transpose(0, 1, 3, 2) / math.sqrt(D)
  mask = np.broadcast_to(np.tril(np.ones((T, T), bool)), (B, 1, T, T))
  lens = np.full(B, T) if lengths is None else np.asarray(lengths)
  if lengths is not None:
    real = pos[None, :] < lens[:, None]                                                # (B, T)
    mask = mask & real[:, None, :, None] & real[:, None, None, :]
  kind = cfg.get("attention", "ssmax")
  n = lens.reshape(B, 1, 1, 1).astype(np.float64) if cfg.get("n_mode", "row") == "sequence" else np.arange(1, T + 1)[:, None]
  if kind == "ssmax":
    s = p[f"{prefix}.ssmax.s"].reshape(-1, 1, 1) if cfg.get("per_head") else p[f"{prefix}.ssmax.s"].reshape(())
    b = p.get(f"{prefix}.ssmax.bias", np.zeros(1))
    b = b.reshape(-1, 1, 1) if cfg.get("per_head") else b.reshape(())
    z = (s * np.log(n) + b) * z
  elif kind == "logn": z = logn(n) * z
  elif kind == "qwen_logn": z = qwen_logn(n, cfg["train_length"]) * z
  elif kind == "llama4": z = llama4(pos[:, None], cfg["train_length"]) * z
  elif kind == "scale_invariant": z = scale_invariant(z, pos[:, None] - pos[None, :])
  w = softmax(z, mask)
  w = np.where(mask.any(-1, keepdims=True), w, 0.0)                                    # a row with no key: zeros
  y = (w @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
  y = lin("out", y)
  return (y, w) if return_weights else y


def gelu(x):
  return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def model(x, p, cfg, lengths=None):
  """The Edifice model in inference (no dropout): projection, pre-LN blocks, final LN, read-out ("all" with lengths)."""
  p = {k: np.asarray(v, np.float64) for k, v in p.items()}
  h = np.asarray(x, np.float64)
  if cfg["embed_dim"] != cfg["hidden_size"]: h = h @ p["input_proj.weight"].T + p["input_proj.bias"]
  for i in range(cfg["num_layers"]):
    pre = f"blocks.{i}"
    h = h + attention(layernorm(h, p[f"{pre}.ln1.weight"], p[f"{pre}.ln1.bias"]), p, f"{pre}.attn", cfg, lengths=lengths)
    u = layernorm(h, p[f"{pre}.ln2.weight"], p[f"{pre}.ln2.bias"])
    u = gelu(u @ p[f"{pre}.ffn.up.weight"].T + p[f"{pre}.ffn.up.bias"])
    h = h + u @ p[f"{pre}.ffn.down.weight"].T + p[f"{pre}.ffn.down.bias"]
  h = layernorm(h, p["ln_f.weight"], p["ln_f.bias"])
  mode = cfg.get("output_mode", "last")
  return h[:, -1] if mode == "last" else h.mean(1) if mode == "mean" else h


def lm_token_losses(tokens, targets, p, cfg):
  """A tied byte-level language model: embedding, the transformer at every position, logits h @ E^T; the cross-entropy
  of each position's next-token prediction [B, T]. p holds the LanguageModel's state dict."""
  p = {k: np.asarray(v, np.float64) for k, v in p.items()}
  E = p["embed.weight"]
  h = model(E[np.asarray(tokens)], {k[len("transformer."):]: v for k, v in p.items() if k.startswith("transformer.")},
            {**cfg, "output_mode": "all"})
  logits = h @ E.T
  logits = logits - logits.max(-1, keepdims=True)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  return -np.take_along_axis(logp, np.asarray(targets)[..., None], -1)[..., 0]
