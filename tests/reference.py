"""An independent float64 numpy reference of SSMax and of the SSMax transformer, written from the paper's equations.

It shares no code with ssmax_tiny.model: it reads only the parameters (by state-dict name) and the config.
"""
import math

import numpy as np


def softmax(z, mask=None):
  z = np.where(mask, z, -np.inf) if mask is not None else z
  m = z.max(axis=-1, keepdims=True)
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


def rope(x, positions, base=10000.0):
  half = x.shape[-1] // 2
  inv = base ** (-2.0 * np.arange(half) / x.shape[-1])
  ang = positions[:, None] * inv[None, :]
  x1, x2 = x[..., :half], x[..., half:]
  return np.concatenate([x1 * np.cos(ang) - x2 * np.sin(ang), x2 * np.cos(ang) + x1 * np.sin(ang)], axis=-1)


def attention(x, p, prefix, cfg, return_weights=False):
  B, T, C = x.shape
  H = cfg["num_heads"]; D = C // H
  lin = lambda name, t: t @ p[f"{prefix}.{name}.weight"].T + p[f"{prefix}.{name}.bias"]
  heads = lambda t: t.reshape(B, T, H, D).transpose(0, 2, 1, 3)
  q, k, v = heads(lin("q", x)), heads(lin("k", x)), heads(lin("v", x))
  if cfg.get("positional", "none") == "rope":
    pos = np.arange(T, dtype=np.float64)
    q, k = rope(q, pos), rope(k, pos)
  z = q @ k.transpose(0, 1, 3, 2) / math.sqrt(D)
  mask = np.tril(np.ones((T, T), bool))
  if cfg.get("attention", "ssmax") == "ssmax":
    s = p[f"{prefix}.ssmax.s"].reshape(-1, 1, 1) if cfg.get("per_head") else p[f"{prefix}.ssmax.s"].reshape(())
    b = p.get(f"{prefix}.ssmax.bias", np.zeros(1))
    b = b.reshape(-1, 1, 1) if cfg.get("per_head") else b.reshape(())
    n = np.full((T, 1), T) if cfg.get("n_mode", "row") == "sequence" else np.arange(1, T + 1)[:, None]
    w = ssmax(z, s, n, b, mask)
  else:
    w = softmax(z, mask)
  y = (w @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
  y = lin("out", y)
  return (y, w) if return_weights else y


def gelu(x):
  return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def model(x, p, cfg):
  """The Edifice model in inference (no dropout): projection, pre-LN blocks, final LN, read-out."""
  p = {k: np.asarray(v, np.float64) for k, v in p.items()}
  h = np.asarray(x, np.float64)
  if cfg["embed_dim"] != cfg["hidden_size"]: h = h @ p["input_proj.weight"].T + p["input_proj.bias"]
  for i in range(cfg["num_layers"]):
    pre = f"blocks.{i}"
    h = h + attention(layernorm(h, p[f"{pre}.ln1.weight"], p[f"{pre}.ln1.bias"]), p, f"{pre}.attn", cfg)
    u = layernorm(h, p[f"{pre}.ln2.weight"], p[f"{pre}.ln2.bias"])
    u = gelu(u @ p[f"{pre}.ffn.up.weight"].T + p[f"{pre}.ffn.up.bias"])
    h = h + u @ p[f"{pre}.ffn.down.weight"].T + p[f"{pre}.ffn.down.bias"]
  h = layernorm(h, p["ln_f.weight"], p["ln_f.bias"])
  mode = cfg.get("output_mode", "last")
  return h[:, -1] if mode == "last" else h.mean(1) if mode == "mean" else h
