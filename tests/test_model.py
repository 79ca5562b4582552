"""The single-file model against the float64 numpy reference, and its JIT, causality, dropout and kernel behaviour."""
from dataclasses import asdict

import numpy as np
import pytest
import reference as ref
from conftest import TINY
from tinygrad import Context, GlobalCounters, Tensor
from tinygrad.nn.state import get_parameters, get_state_dict

import ssmax_tiny as st

# float32 through 2 layers of O(1) activations: errors ~1e-6 measured (4e-7); 1e-5 is the parity bound
TOL = 1e-5


def _randomize_ssmax(model):
  # s away from its init (and a bias), so the reference check would notice a misplaced or missing scale
  for layer in model.ssmax_layers():
    layer.s.assign(Tensor.uniform(*layer.s.shape, low=0.3, high=2.0)).realize()
    if layer.bias is not None: layer.bias.assign(Tensor.uniform(*layer.bias.shape, low=-0.5, high=0.5)).realize()


VARIANTS = [dict(), dict(per_head=True, learn_bias=True), dict(n_mode="sequence"), dict(positional="rope"),
            dict(attention="softmax"), dict(output_mode="last"), dict(output_mode="mean"), dict(embed_dim=16)]


@pytest.mark.fast
@pytest.mark.parametrize("opts", VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_model_matches_float64_reference(opts):
  opts = {"embed_dim": 8, "output_mode": "all", **TINY, **opts}
  model = st.build(**opts)
  _randomize_ssmax(model)
  x = Tensor.randn(2, 6, opts["embed_dim"]).realize()
  params = {k: v.numpy() for k, v in get_state_dict(model).items()}
  expected = ref.model(x.numpy(), params, asdict(model.config))
  np.testing.assert_allclose(model.forward(x).numpy(), expected, atol=TOL)
  np.testing.assert_allclose(model.forward(x, fold_scale=False).numpy(), expected, atol=TOL)


def test_folded_equals_explicit_and_weights_match_reference():
  attn = st.build_ssmax_attention(16, 2, per_head=True, learn_bias=True)
  attn.ssmax.s.assign(Tensor([[[0.5]], [[1.7]]])).realize()
  x = Tensor.randn(3, 7, 16).realize()
  y_folded = attn(x).numpy()
  y_explicit, w = attn.explicit(x)
  np.testing.assert_allclose(y_folded, y_explicit.numpy(), atol=TOL)
  np.testing.assert_allclose(attn(x, fold_scale=False).numpy(), y_explicit.numpy(), atol=0)
  p = {f"a.{k}": v.numpy().astype(np.float64) for k, v in get_state_dict(attn).items()}
  _, w_ref = ref.attention(x.numpy().astype(np.float64), p, "a", dict(num_heads=2, per_head=True), return_weights=True)
  np.testing.assert_allclose(w.numpy(), w_ref, atol=TOL)
  assert w.shape == (3, 2, 7, 7)


def test_output_shapes_and_output_size():
  x = Tensor.randn(3, 5, 8)
  assert st.build(8, **TINY).forward(x).shape == (3, 16)
  assert st.build(8, **TINY, output_mode="all").forward(x).shape == (3, 5, 16)
  assert st.build(8, **TINY, output_mode="mean").forward(x).shape == (3, 16)
  assert st.output_size() == 256 and st.output_size(hidden_size=64, num_heads=4) == 64


def test_jit_replay_equals_eager_at_window_size_and_other_lengths():
  model = st.build(8, **TINY)
  xs = [Tensor.randn(2, 6, 8).realize() for _ in range(4)]
  outs = [model(x).numpy() for x in xs]               # call 0 eager, 1 capture, 2 and 3 replay
  assert 2 in model._jits, "the window-size call did not go through a TinyJit"
  for x, out in zip(xs, outs):
    np.testing.assert_allclose(out, model.forward(x).numpy(), atol=1e-6)
  assert np.abs(outs[3] - outs[2]).max() > 1e-3       # a replay with new input gives new output
  kept = model(xs[0])
  model(xs[1])
  np.testing.assert_allclose(kept.numpy(), outs[0], atol=1e-6)  # an earlier result is not overwritten by a replay
  other = Tensor.randn(2, 9, 8).realize()             # another T: correct, never a stale JIT result
  np.testing.assert_allclose(model(other).numpy(), model.forward(other).numpy(), atol=1e-6)
  one = Tensor.randn(1, 6, 8).realize()               # another batch size: its own JIT
  for _ in range(3): np.testing.assert_allclose(model(one).numpy(), model.forward(one).numpy(), atol=1e-6)


def test_jit_sees_weights_updated_in_place():
  model = st.build(8, **TINY)
  x = Tensor.randn(2, 6, 8).realize()
  for _ in range(3): model(x)
  model.ln_f.bias.assign(Tensor.ones(16)).realize()
  np.testing.assert_allclose(model(x).numpy(), model.forward(x).numpy(), atol=1e-6)


@pytest.mark.parametrize("opts", [dict(), dict(positional="rope", n_mode="row")])
def test_causality(opts):
  model = st.build(8, **TINY, output_mode="all", dropout=0.0, **opts)
  x = np.random.randn(2, 8, 8).astype(np.float32)
  t = 5
  y = np.random.randn(2, 8, 8).astype(np.float32); y[:, :t] = x[:, :t]   # same before t, different from t on
  a, b = model.forward(Tensor(x)).numpy(), model.forward(Tensor(y)).numpy()
  np.testing.assert_array_equal(a[:, :t], b[:, :t])
  assert np.abs(a[:, t:] - b[:, t:]).min() > 0


def _kernels(model, x, train=False):
  GlobalCounters.reset()
  if not train:
    model.forward(x).realize()
  else:
    with Context(TRAINING=1):
      loss = model.forward(x).square().mean()
      params = get_parameters(model)
      Tensor.realize(loss, *loss.gradient(*params))
  return GlobalCounters.kernel_count


def test_ssmax_adds_no_kernel_over_softmax_when_folded_into_q():
  x = Tensor.randn(2, 6, 8).realize()
  Tensor.manual_seed(1)
  softmax = st.build(8, **TINY, attention="softmax", dropout=0.0)
  Tensor.manual_seed(1)
  ssmax = st.build(8, **TINY, dropout=0.0)
  for m in (softmax, ssmax): Tensor.realize(*get_parameters(m))
  n_soft, n_ss = _kernels(softmax, x), _kernels(ssmax, x)
  assert n_soft > 0 and n_ss == n_soft, (n_ss, n_soft)


def test_dropout_only_in_training():
  model = st.build(8, **TINY, dropout=0.5)
  x = Tensor.randn(2, 6, 8).realize()
  a, b = model.forward(x).numpy(), model.forward(x).numpy()
  np.testing.assert_array_equal(a, b)
  with Context(TRAINING=1):
    c, d = model.forward(x).numpy(), model.forward(x).numpy()
  assert np.abs(c - a).max() > 1e-3 and np.abs(c - d).max() > 1e-3


def test_manual_seed_makes_builds_identical():
  Tensor.manual_seed(7)
  a = get_state_dict(st.build(8, **TINY, per_head=True))
  Tensor.manual_seed(7)
  b = get_state_dict(st.build(8, **TINY, per_head=True))
  assert a.keys() == b.keys()
  for k in a: np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())


def test_initialisation_is_as_documented():
  L = 6
  model = st.build(64, hidden_size=64, num_heads=4, num_layers=L)
  assert model.input_proj is None
  np.testing.assert_allclose(model.blocks[0].attn.q.weight.numpy().std(), 0.02, rtol=0.05)
  np.testing.assert_allclose(model.blocks[0].attn.out.weight.numpy().std(), 0.02 / np.sqrt(2 * L), rtol=0.05)
  np.testing.assert_allclose(model.blocks[0].ffn.down.weight.numpy().std(), 0.02 / np.sqrt(2 * L), rtol=0.05)
  assert model.learned_s() == [[1.0]] * L


def test_learn_s_false_keeps_s_out_of_the_optimizer():
  from tinygrad.nn.optim import SGD
  model = st.build(8, **TINY, learn_s=False, init_s=0.5)
  x = Tensor.randn(2, 6, 8).realize()
  opt = SGD(get_parameters(model), lr=0.1)
  assert not {id(layer.s) for layer in model.ssmax_layers()} & {id(p) for p in opt.params}
  with Context(TRAINING=1):
    opt.zero_grad()
    model.forward(x).square().mean().backward()
    opt.step()
  assert model.learned_s() == [[0.5], [0.5]]


def test_s_learns_when_trainable():
  from tinygrad.nn.optim import SGD
  model = st.build(8, **TINY, dropout=0.0)
  for block in model.blocks:   # scores of order 1 (GPT-2's N(0, 0.02) init makes them ~1e-3, and s's gradient with them)
    for lin in (block.attn.q, block.attn.k): lin.weight.assign(Tensor.normal(*lin.weight.shape, std=0.5)).realize()
  x = Tensor.randn(2, 6, 8).realize()
  opt = SGD(get_parameters(model), lr=1.0)
  with Context(TRAINING=1):
    opt.zero_grad()
    model.forward(x).square().mean().backward()
    grads = [layer.s.grad.numpy() for layer in model.ssmax_layers()]
    opt.step()
  assert all(np.isfinite(g).all() and (g != 0).all() for g in grads)
  assert all(abs(s[0] - 1.0) > 1e-6 for s in model.learned_s())


def test_kv_cache_decoding_equals_full_recompute():
  # n_mode="row" only: under "sequence" every row's n is the whole length, so a prefix computed earlier differs by design
  for opts in (dict(), dict(positional="rope", per_head=True, learn_bias=True)):
    model = st.build(8, **TINY, output_mode="all", **opts)
    _randomize_ssmax(model)
    x = Tensor.randn(2, 9, 8).realize()
    full = model.forward(x).numpy()
    dec = st.Decoder(model, batch_size=2, max_len=9)
    np.testing.assert_allclose(dec.prefill(x[:, :3].contiguous()).numpy(), full[:, :3], atol=TOL)  # a prompt of 3, eagerly
    for pos in range(3, 9):                                         # then one position at a time through the TinyJit
      np.testing.assert_allclose(dec.step(x[:, pos:pos + 1]).numpy(), full[:, pos], atol=TOL)
    with pytest.raises(ValueError, match="exceeds max_len=9"): dec.step(x[:, :1])


def test_state_dict_holds_only_parameters_after_jit_capture():
  model = st.build(8, **TINY)
  names = set(get_state_dict(model))
  x = Tensor.randn(2, 6, 8).realize()
  for _ in range(3): model(x)
  assert set(get_state_dict(model)) == names


@pytest.mark.slow
def test_default_edifice_configuration_matches_reference():
  # Edifice's defaults (hidden 256, 4 heads, 6 layers, window 60) at a small batch: the full-size model, through its JIT
  model = st.build(64)
  _randomize_ssmax(model)
  x = Tensor.randn(2, 60, 64).realize()
  params = {k: v.numpy() for k, v in get_state_dict(model).items()}
  expected = ref.model(x.numpy(), params, asdict(model.config))
  for _ in range(3): got = model(x).numpy()
  np.testing.assert_allclose(got, expected, atol=TOL)


@pytest.mark.fast
@pytest.mark.parametrize("T_q,T_k,causal", [(5, 5, True), (3, 7, False), (1, 4, False)])
def test_attend_matches_float64_attention(T_q, T_k, causal):
  q, k, v = np.random.randn(2, 3, T_q, 4), np.random.randn(2, 3, T_k, 4), np.random.randn(2, 3, T_k, 4)
  mask = np.tril(np.ones((T_q, T_k), bool)) if causal else np.random.rand(T_q, T_k) < 0.7
  mask[:, 0] = True                                                 # every row keeps a key
  want = ref.softmax(q @ k.swapaxes(-1, -2) / 2.0, mask) @ v        # sqrt(head_dim 4) = 2
  args = [Tensor(a.astype(np.float32)) for a in (q, k, v)]
  got = st.attend(*args, causal=True) if causal else st.attend(*args, Tensor(mask))
  np.testing.assert_allclose(got.numpy(), want, atol=TOL)
  if causal:  # and what tinygrad's own attention computes
    np.testing.assert_allclose(got.numpy(), args[0].scaled_dot_product_attention(args[1], args[2], is_causal=True).numpy(), atol=TOL)


def test_attend_combines_a_mask_with_causal():
  q, k, v = (np.random.randn(2, 3, 6, 4) for _ in range(3))
  mask = np.random.rand(6, 6) < 0.6
  mask[:, 0] = True                                                 # every row keeps a key
  want = ref.softmax(q @ k.swapaxes(-1, -2) / 2.0, mask & np.tril(np.ones((6, 6), bool))) @ v
  got = st.attend(*[Tensor(a.astype(np.float32)) for a in (q, k, v)], Tensor(mask), causal=True)
  np.testing.assert_allclose(got.numpy(), want, atol=TOL)


@pytest.mark.parametrize("d_in,d_out", [(16, 32), (256, 256)])  # below and at Linear.HAND_BACKWARD_MIN: autograd, hand-written
def test_linear_and_its_gradients_match_float64(d_in, d_out):
  from ssmax_tiny.model import Linear
  assert (d_in * d_out >= Linear.HAND_BACKWARD_MIN) == (d_out == 256)
  layer = Linear(d_in, d_out, std=0.1)
  layer.bias.assign(Tensor.randn(d_out)).realize()
  x, dy = Tensor.randn(2, 5, d_in).realize(), Tensor.randn(2, 5, d_out).realize()
  y = layer(x)
  gx, gw, gb = (y * dy).sum().gradient(x, layer.weight, layer.bias)
  X, W, b, DY = (t.numpy().astype(np.float64) for t in (x, layer.weight, layer.bias, dy))
  expected = {"y": X @ W.T + b, "dx": DY @ W, "dW": DY.reshape(-1, d_out).T @ X.reshape(-1, d_in), "db": DY.sum((0, 1))}
  for name, got in zip(expected, (y, gx, gw, gb)):
    want = expected[name]
    assert got.shape == want.shape, name
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5 * np.abs(want).max(), err_msg=name)
