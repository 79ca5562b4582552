"""Your own training loop, written the way tinygrad's examples write theirs (examples/beautiful_mnist.py): an optimizer
over nn.state.get_parameters(model) and one TinyJit step. It trains a small SSMax language model to continue counting
bytes (each next byte is the previous one plus 1), then checks that it learned: the loss must fall below 1 nat/byte.

  python examples/train_loop.py            (STEPS=60 by default; about a minute on 2 CPU cores)
"""
from tinygrad import Context, Tensor, TinyJit, nn
from tinygrad.helpers import getenv

import ssmax_tiny

model = ssmax_tiny.LanguageModel(ssmax_tiny.SSMaxConfig(embed_dim=32, hidden_size=32, num_heads=4, num_layers=2, dropout=0.0,
                                                        window_size=64, positional="rope"))
opt = nn.optim.AdamW(nn.state.get_parameters(model), lr=1e-2)

@TinyJit
def train_step(tokens: Tensor) -> Tensor:
  with Context(TRAINING=1):
    opt.zero_grad()
    loss = model(tokens[:, :-1]).sparse_categorical_crossentropy(tokens[:, 1:]).backward()
    opt.step()
    return loss.realize()

for step in range(getenv("STEPS", 60)):
  tokens = (Tensor.randint(16, 1, high=256) + Tensor.arange(65)) % 256   # 16 sequences of 65 counting bytes
  loss = train_step(tokens.realize()).item()
  if step % 10 == 0: print(f"step {step:3d}  loss {loss:.3f}")
print(f"final loss {loss:.3f} nats/byte; learned s per layer: {model.transformer.learned_s()}")
if loss > 1.0: raise ValueError(f"the loss did not fall below 1 nat/byte in {step + 1} steps: {loss:.3f}")
