"""Tensor cores in tinygrad's Python emulator (tinygrad/runtime/ops_python.py): a micro model's forward and one training
step on CUDA's (sm_80), Metal's and AMD RDNA3's (gfx1100) tensor cores equal the CPU device's, with the tensor-core path
taken (the kernels' WMMA operations counted, not assumed). The emulator runs every lane in Python: minutes per case, so
`make test-emulated`, not make test. float16 is not emulated under Python < 3.12 (ops_python.py refuses it): bfloat16 on
all three, and float32 on Metal, whose tensor cores take float32."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from tinygrad import dtypes

pytestmark = pytest.mark.emulated

RUN = textwrap.dedent("""
  import json, sys
  import numpy as np
  import tinygrad.codegen
  from tinygrad import Context, Tensor, TinyJit, nn
  from tinygrad.uop.ops import Ops
  import ssmax_tiny as st
  dtype = sys.argv[1]
  Tensor.manual_seed(0)
  model = st.LanguageModel(st.SSMaxConfig(embed_dim=32, hidden_size=32, num_heads=2, num_layers=1, dropout=0.0, window_size=16,
                                          positional="rope", dtype=dtype))
  rng = np.random.default_rng(0)
  tokens, targets = (Tensor(rng.integers(0, 256, (2, 16)).astype(np.int32)) for _ in range(2))
  logits = model(tokens).numpy()
  opt = nn.optim.SGD(nn.state.get_parameters(model), lr=0.1)
  with Context(TRAINING=1):
    opt.zero_grad()
    loss = model(tokens).sparse_categorical_crossentropy(targets).backward()
    grad = model.transformer.blocks[0].attn.q.weight.grad
    Tensor.realize(loss, grad)
    loss, grad = loss.item(), grad.numpy()
    opt.step()
  wmma = [{u.arg[1].name for u in p.src[1].src if u.op is Ops.WMMA} for p in tinygrad.codegen.to_program_cache.values() if p.src[1] is not None]
  print(json.dumps(dict(logits=logits.tolist(), loss=loss, grad=grad.tolist(), after=model.embed.weight.numpy()[:4].tolist(),
                        wmma=sorted({d for w in wmma for d in w}), tensor_core_kernels=sum(1 for w in wmma if w))))
""")


def _run(dev: str, dtype: str) -> dict:
  env = {**os.environ, "DEV": dev}
  env.pop("SSMAX_TINY_POCL", None)
  out = subprocess.run([sys.executable, "-c", RUN, dtype], capture_output=True, text=True, timeout=3000, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("dev,dtype", [("PYTHON::sm_80", "bfloat16"), ("PYTHON::METAL", "bfloat16"), ("PYTHON::METAL", "float32"),
                                       ("PYTHON::gfx1100", "bfloat16")])
def test_emulated_tensor_cores_equal_the_cpu_device(dev, dtype):
  emulated, cpu = _run(dev, dtype), _run("CPU", dtype)
  assert emulated["tensor_core_kernels"] > 0 and getattr(dtypes, dtype).name in emulated["wmma"], emulated["wmma"]   # the dtype's own
  assert cpu["tensor_core_kernels"] == 0                     # the CPU device has none: the comparison is of two different paths
  # bfloat16: the products and activations round to 8 bits either way, and the sums in float32 accumulate in another order
  # on tensor cores, so an activation may land one bfloat16 step (2^-8 relative) apart and carry it through the layer; float32:
  # a few float32 ulps through a layer and the loss. Near zero, differences scale with the terms summed, not the result:
  # the absolute tolerance is the relative one times the largest value of the same quantity
  rtol = 2 ** -6 if dtype == "bfloat16" else 1e-5
  for name in ("logits", "grad", "after"):
    want = np.asarray(cpu[name])
    np.testing.assert_allclose(emulated[name], want, rtol=rtol, atol=rtol * np.abs(want).max(), err_msg=name)
  assert emulated["loss"] == pytest.approx(cpu["loss"], rel=rtol)
