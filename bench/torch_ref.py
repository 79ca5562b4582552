"""A PyTorch implementation of the same SSMax transformer, for parity checks and side-by-side timing (bench/bench.py).

Written from the paper and Edifice's description, not translated from ssmax_tiny/model.py: the parameter names match
tinygrad's state dict so that one set of weights runs in both.
"""
import torch
import torch.nn.functional as F
from torch import nn


def device() -> torch.device:
  """Where PyTorch's side of a benchmark runs: the GPU when this PyTorch has one (CUDA), else the CPU."""
  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def rope(x, base=10000.0, start=0):
  """Rotary embedding, GPT-NeoX's half-split layout (RoFormer eq. 34): x [B, H, T, Hd] at positions start..start+T-1."""
  T, d = x.shape[-2], x.shape[-1]
  inv_freq = base ** (-torch.arange(0, d, 2, dtype=x.dtype, device=x.device) / d)          # (Hd/2,)
  angle = torch.arange(start, start + T, dtype=x.dtype, device=x.device)[:, None] * inv_freq[None, :]     # (T, Hd/2)
  cos, sin = torch.cat([angle.cos()] * 2, -1), torch.cat([angle.sin()] * 2, -1)           # (T, Hd)
  x1, x2 = x[..., : d // 2], x[..., d // 2:]
  return x * cos + torch.cat([-x2, x1], -1) * sin


class Attention(nn.Module):
  def __init__(self, h, heads, attention="ssmax", positional="none"):
    super().__init__()
    self.heads, self.attention, self.positional = heads, attention, positional
    self.q, self.k, self.v, self.out = (nn.Linear(h, h) for _ in range(4))
    if attention == "ssmax": self.ssmax = nn.Module(); self.ssmax.s = nn.Parameter(torch.ones(1))

  def forward(self, x):
    B, T, C = x.shape
    q, k, v = (f(x).view(B, T, self.heads, C // self.heads).transpose(1, 2) for f in (self.q, self.k, self.v))  # (B, H, T, Hd)
    if self.positional == "rope": q, k = rope(q), rope(k)
    if self.attention == "ssmax":
      n = torch.arange(1, T + 1, device=x.device, dtype=x.dtype).view(T, 1)   # causal row i sees i + 1 keys
      q = q * (self.ssmax.s * torch.log(n))                                   # SSMax folded into the query
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return self.out(y.transpose(1, 2).reshape(B, T, C))

  def step(self, x, cache, pos: int):
    """One position x [B, 1, C] at position pos, its key and value written into cache [2, B, H, max_len, Hd], attending to
    the pos + 1 cached ones (a decoding step)."""
    B, _, C = x.shape
    q, k, v = (f(x).view(B, 1, self.heads, C // self.heads).transpose(1, 2) for f in (self.q, self.k, self.v))  # (B, H, 1, Hd)
    if self.positional == "rope": q, k = rope(q, start=pos), rope(k, start=pos)
    if self.attention == "ssmax": q = q * (self.ssmax.s * torch.log(torch.tensor(pos + 1.0)))
    cache[0, :, :, pos:pos + 1], cache[1, :, :, pos:pos + 1] = k, v
    y = F.scaled_dot_product_attention(q, cache[0, :, :, :pos + 1], cache[1, :, :, :pos + 1])
    return self.out(y.transpose(1, 2).reshape(B, 1, C))


class Block(nn.Module):
  def __init__(self, h, heads, dropout, attention, positional="none"):
    super().__init__()
    self.ln1, self.ln2 = nn.LayerNorm(h), nn.LayerNorm(h)
    self.attn = Attention(h, heads, attention, positional)
    self.ffn = nn.Module()
    self.ffn.up, self.ffn.down = nn.Linear(h, 4 * h), nn.Linear(4 * h, h)
    self.drop = nn.Dropout(dropout)

  def forward(self, x):
    x = x + self.drop(self.attn(self.ln1(x)))
    return x + self.drop(self.ffn.down(F.gelu(self.ffn.up(self.ln2(x)))))

  def step(self, x, cache, pos: int):
    x = x + self.attn.step(self.ln1(x), cache, pos)
    return x + self.ffn.down(F.gelu(self.ffn.up(self.ln2(x))))


class TorchSSMaxTransformer(nn.Module):
  def __init__(self, embed_dim, hidden_size=256, num_heads=4, num_layers=6, dropout=0.1, attention="ssmax", positional="none"):
    super().__init__()
    self.input_proj = nn.Linear(embed_dim, hidden_size) if embed_dim != hidden_size else None
    self.blocks = nn.ModuleList(Block(hidden_size, num_heads, dropout, attention, positional) for _ in range(num_layers))
    self.ln_f = nn.LayerNorm(hidden_size)
    self.drop = nn.Dropout(dropout)

  def hidden(self, x):  # every position: [B, T, hidden]
    h = self.input_proj(x) if self.input_proj is not None else x
    for i, block in enumerate(self.blocks):
      h = block(h)
      if i < len(self.blocks) - 1: h = self.drop(h)
    return self.ln_f(h)

  def forward(self, x): return self.hidden(x)[:, -1, :]

  def step(self, x, caches: list, pos: int):
    """A decoding step: x [B, 1, embed_dim] at position pos -> [B, hidden] (caches: one per block, see Attention.step)."""
    h = self.input_proj(x) if self.input_proj is not None else x
    for block, cache in zip(self.blocks, caches): h = block.step(h, cache, pos)
    return self.ln_f(h)[:, -1, :]


class TorchLM(nn.Module):
  """Byte-level language model: embedding -> the transformer at every position -> logits through the tied embedding."""

  def __init__(self, vocab_size, hidden_size, num_heads, num_layers, attention="ssmax", positional="rope"):
    super().__init__()
    self.embed = nn.Embedding(vocab_size, hidden_size)
    self.transformer = TorchSSMaxTransformer(hidden_size, hidden_size, num_heads, num_layers, 0.0, attention, positional)

  def forward(self, tokens): return self.transformer.hidden(self.embed(tokens)) @ self.embed.weight.T  # [B, T, vocab]


def load_tinygrad_state(model: nn.Module, state: dict) -> None:
  """state: name -> numpy array, from tinygrad.nn.state.get_state_dict."""
  own = model.state_dict()
  missing = sorted(set(own) - set(state))
  if missing: raise ValueError(f"tinygrad state lacks {missing}")
  model.load_state_dict({k: torch.from_numpy(state[k].copy()).reshape(own[k].shape) for k in own})

