"""cl_graph.CLGraph: a TinyJit replayed through the CL graph gives the bits of one replayed kernel by kernel.

The graph makes the same OpenCL calls as tinygrad's own path, in the same order on the same queue, so equality is to the
bit, not to a tolerance. Runs on the OpenCL device only (make test's DEV=CL run); one layer keeps the captures short."""
import numpy as np
import pytest
from conftest import TINY
from tinygrad import Context, Device, Tensor, TinyJit
from tinygrad.nn.optim import SGD
from tinygrad.nn.state import get_parameters, get_state_dict

import ssmax_tiny as st
from ssmax_tiny import cl_graph

ONE_LAYER = {**TINY, "num_layers": 1}
pytestmark = pytest.mark.skipif(Device.DEFAULT.split(":")[0] != "CL", reason="the CL graph runs on tinygrad's OpenCL device (DEV=CL)")


def _train(graph: bool, xs: list[Tensor]):
  Tensor.manual_seed(0)
  model = st.build(8, **ONE_LAYER, dropout=0.0)
  opt = SGD(get_parameters(model), lr=0.5)

  def step(x: Tensor) -> Tensor:
    opt.zero_grad()
    loss = model.forward(x).square().mean()
    loss.backward()
    Tensor.realize(loss, *opt.schedule_step())
    return loss

  with cl_graph.disabled() if not graph else Context():
    cl_graph.install()
    jit = TinyJit(step)
    with Context(TRAINING=1): losses = [jit(x).item() for x in xs]   # a new input each call: the graph rebinds it
  return jit, losses, {k: v.numpy() for k, v in get_state_dict(model).items()}


def test_training_steps_through_the_graph_equal_kernel_by_kernel_to_the_bit():
  xs = [Tensor.randn(2, 6, 8).realize() for _ in range(4)]   # call 0 runs eagerly, 1 captures, 2 and 3 replay
  (plain_jit, plain, plain_w), (graph_jit, graph, graph_w) = _train(False, xs), _train(True, xs)
  assert cl_graph.uncounted(plain_jit) == 0
  assert cl_graph.uncounted(graph_jit) > 0, "the step was not captured into CL graph batches: the test would compare nothing"
  assert plain == graph
  for k in plain_w: np.testing.assert_array_equal(plain_w[k], graph_w[k], err_msg=k)
  assert len(set(plain)) == len(plain)   # each call saw its own input and moved the weights


def test_decoding_through_the_graph_equals_kernel_by_kernel(monkeypatch):
  # the decoder's TinyJit binds its position as a Variable: the graph fills it in, and what depends on it, per call
  replays, run = [], cl_graph.CLGraph.__call__
  monkeypatch.setattr(cl_graph.CLGraph, "__call__", lambda self, *a, **k: replays.append(self) or run(self, *a, **k))
  model = st.build(8, **ONE_LAYER, output_mode="all", positional="rope", per_head=True, learn_bias=True)
  x = Tensor.randn(2, 9, 8).realize()
  steps = {}
  for graph in (False, True):
    with cl_graph.disabled() if not graph else Context():
      cl_graph.install()
      dec = st.Decoder(model, batch_size=2, max_len=9)
      dec.prefill(x[:, :3].contiguous())
      steps[graph] = [dec.step(x[:, pos:pos + 1]).numpy() for pos in range(3, 9)]
  assert any(g.vars for g in replays), "no decoding step replayed through the graph with its position bound"
  for a, b in zip(steps[False], steps[True]): np.testing.assert_array_equal(a, b)


def test_the_graph_can_be_turned_off(monkeypatch):
  with cl_graph.disabled():
    assert Device[Device.DEFAULT].graph is None
    cl_graph.install()                        # a step captured here launches its kernels one by one
    assert Device[Device.DEFAULT].graph is None
  monkeypatch.setenv("SSMAX_TINY_CL_GRAPH", "0")
  saved, Device[Device.DEFAULT].graph = Device[Device.DEFAULT].graph, None
  try:
    cl_graph.install()
    assert Device[Device.DEFAULT].graph is None
  finally: Device[Device.DEFAULT].graph = saved
