"""Build a small SSMax transformer, run it, and print the output shape and each layer's learned s.

  python examples/quickstart.py
"""
from tinygrad import Tensor

import ssmax_tiny

Tensor.manual_seed(0)
model = ssmax_tiny.build(embed_dim=32, hidden_size=64, num_heads=4, num_layers=2, window_size=16)
x = Tensor.randn(8, 16, 32)              # [batch, T, embed_dim]; T == window_size runs through the TinyJit
y = model(x)                             # [batch, hidden_size], from the last position (Edifice's output)
print("output shape:", y.shape)
assert y.shape == (8, ssmax_tiny.output_size(hidden_size=64, num_heads=4))
for i, s in enumerate(model.learned_s()):
  print(f"layer {i}: s = {s}")

# SSMax itself, on raw logits: softmax((s log n) z). With s log n > 1 it is sharper than softmax.
w = ssmax_tiny.compute(Tensor([[-2.0] * 99 + [3.0]]), s=0.43, seq_len=100)
print(f"largest SSMax weight over 100 keys: {w.max().item():.3f} (softmax: {Tensor([[-2.0] * 99 + [3.0]]).softmax().max().item():.3f})")
