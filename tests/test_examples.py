"""README's code runs as written: the examples it shows, and a training loop written the way tinygrad's own examples write
theirs (an optimizer over get_parameters, one TinyJit step) trains the models as they come from their constructors."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY
from tinygrad import Context, Tensor, TinyJit, nn

import ssmax_tiny as st

ROOT = Path(__file__).parent.parent


def _run(script: str, **env) -> str:
  out = subprocess.run([sys.executable, script], cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, **env})
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


@pytest.mark.fast
def test_quickstart_runs():
  out = _run("examples/quickstart.py")
  assert "output shape: (8, 64)" in out
  assert out.count("s = [1.0]") == 2


@pytest.mark.slow   # 25 s in a fresh process; make test trains the same loop in-process (below)
def test_train_loop_runs_and_learns():
  assert "final loss" in _run("examples/train_loop.py", STEPS="40")   # the script raises when the loss stays above 1


@pytest.mark.fast
@pytest.mark.loop
@pytest.mark.parametrize("which", ["build", "LanguageModel"])
def test_a_loop_written_as_tinygrads_examples_write_it_trains_our_models(which):
  # the batch drawn by tinygrad's RNG after the model is built: lazily drawn parameters once read the counter's newer
  # state and the optimizer's step failed ("cycle detected in assign graph"); model.drawn realises each parameter's draw
  if which == "build":
    model = st.build(8, **TINY, dropout=0.1)
    batch = lambda: (Tensor.randn(4, 6, 8), Tensor.randn(4, TINY["hidden_size"]))
    loss_of = lambda x, y: (model(x) - y).square().mean()
  else:
    model = st.LanguageModel(st.SSMaxConfig(embed_dim=16, **TINY, dropout=0.1, positional="rope"))
    batch = lambda: (Tensor.randint(4, 6, high=256), Tensor.randint(4, 6, high=256))
    loss_of = lambda x, y: model(x).sparse_categorical_crossentropy(y)
  opt = nn.optim.AdamW(nn.state.get_parameters(model), lr=1e-2)
  x, y = (t.realize() for t in batch())   # drawn and realised before anything reads the parameters, as a TinyJit's call does
  weights = [p.numpy().copy() for p in nn.state.get_parameters(model)]
  drawn = [w for w in weights if w.ndim == 2]   # the random matrices (biases start at 0, LayerNorms at 1)
  assert len({w.tobytes() for w in drawn}) == len(drawn), "two parameters drew the same numbers"

  @TinyJit
  def step(x: Tensor, y: Tensor) -> Tensor:
    with Context(TRAINING=1):
      opt.zero_grad()
      loss = loss_of(x, y).backward()
      opt.step()
      return loss.realize()

  losses = [step(x, y).item() for _ in range(4)]   # call 0 eager, 1 capture, 2 and 3 replay
  assert all(np.isfinite(losses)) and losses[-1] < losses[0]
  assert any((p.numpy() != w).any() for p, w in zip(nn.state.get_parameters(model), weights))


@pytest.mark.slow   # the loop trains 60 steps: 40 s
def test_readme_python_runs_as_written():
  import re
  code = "\n".join(re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S))   # in order: the first imports
  assert "TinyJit" in code and "build(" in code
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "(8, 64) [[1.0], [1.0]]" in out.stdout
