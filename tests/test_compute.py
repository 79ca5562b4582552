"""compute() and SSMax against the float64 numpy reference (tests/reference.py), and the paper's claims."""
import math

import numpy as np
import pytest
import reference as ref
from tinygrad import Tensor

from ssmax_tiny import SSMax, compute

pytestmark = pytest.mark.fast  # the edit-run loop: make test-fast

# float32 softmax of O(1..10) logits: relative error a few ulp of exp and of the sum, ~1e-6; 1e-5 leaves margin
TOL = 1e-5


def test_scalar_n_matches_reference():
  z = np.random.randn(3, 4, 7)
  got = compute(Tensor(z.astype(np.float32)), 0.8, 50).numpy()
  np.testing.assert_allclose(got, ref.ssmax(z, 0.8, 50), atol=TOL)


def test_per_row_n_per_head_s_bias_and_mask_match_reference():
  B, H, T = 2, 3, 5
  z = np.random.randn(B, H, T, T) * 3
  s = np.array([0.5, 1.0, 2.0]).reshape(H, 1, 1)
  bias = np.array([0.1, -0.2, 0.3]).reshape(H, 1, 1)
  n = np.arange(1, T + 1).reshape(T, 1)
  mask = np.tril(np.ones((T, T), bool))
  got = compute(Tensor(z.astype(np.float32)), Tensor(s.astype(np.float32)), Tensor(n), bias=Tensor(bias.astype(np.float32)),
                mask=Tensor(mask)).numpy()
  np.testing.assert_allclose(got, ref.ssmax(z, s, n, bias, mask), atol=TOL)
  assert (got[..., ~mask] == 0).all()


def test_s_log_n_equal_one_is_softmax():
  n = 37
  z = np.random.randn(4, n) * 2
  got = compute(Tensor(z.astype(np.float32)), 1 / math.log(n), n).numpy()
  np.testing.assert_allclose(got, ref.softmax(z), atol=TOL)


def test_ours_differs_from_softmax_and_edifice_formula_is_softmax():
  n, s = 100, 1.0  # s log n = 4.6
  z = np.random.randn(2, n)
  ours = compute(Tensor(z.astype(np.float32)), s, n).numpy()
  edifice = ref.edifice_ssmax(z, s, n)
  np.testing.assert_allclose(edifice, ref.softmax(z), atol=1e-12)  # Edifice's shift cancels: it is softmax
  assert np.abs(ours - ref.softmax(z)).max() > 0.05                  # the paper's SSMax is not
  assert ours.max() > ref.softmax(z).max()                          # and it is sharper when s log n > 1


def test_paper_figure_1_attention_fading():
  # arXiv:2501.19399 Figure 1: every logit -2 but the last, +3; s = 0.43
  ssmax_max, softmax_max = [], []
  for n in (10, 100, 1000, 10_000):
    z = np.full((1, n), -2.0, np.float32); z[0, -1] = 3.0
    w = compute(Tensor(z), 0.43, n).numpy()
    ssmax_max.append(w[0, -1])
    softmax_max.append(compute(Tensor(z), 1 / math.log(n), n).numpy()[0, -1])
  assert min(ssmax_max) > 0.94, ssmax_max
  assert softmax_max[0] > 0.6 and 0.01 < softmax_max[-1] < 0.02, softmax_max  # e^3 / (e^3 + 9999 e^-2) = 0.0146


def _fd_grad_s(z, s, n, target, eps=1e-6):
  f = lambda s_: float((ref.ssmax(z, s_, n) * target).sum())
  return (f(s + eps) - f(s - eps)) / (2 * eps)


@pytest.mark.parametrize("s", [1.0, 0.3, -0.5])
def test_gradient_of_s_matches_float64_finite_difference(s):
  n = 20
  z = np.random.randn(3, n)
  target = np.random.randn(3, n)
  st = Tensor([s], dtype="float32")
  loss = (compute(Tensor(z.astype(np.float32)), st, n) * Tensor(target.astype(np.float32))).sum()
  (g,) = loss.gradient(st)
  fd = _fd_grad_s(z, s, n, target)
  assert abs(fd) > 1e-3, "the finite difference is itself near 0: the test would prove nothing"
  np.testing.assert_allclose(g.numpy()[0], fd, rtol=1e-4, atol=1e-5)


def test_edifice_formula_gives_s_no_gradient_ours_does():
  n, z, target = 20, np.random.randn(3, 20), np.random.randn(3, 20)
  edifice_fd = (float((ref.edifice_ssmax(z, 1 + 1e-6, n) * target).sum()) - float((ref.edifice_ssmax(z, 1 - 1e-6, n) * target).sum())) / 2e-6
  assert abs(edifice_fd) < 1e-8
  assert abs(_fd_grad_s(z, 1.0, n, target)) > 1e-3


@pytest.mark.parametrize("s", [0.0, -1.0, -3.0])
def test_causal_mask_with_zero_and_negative_s_gives_no_nan_and_no_masked_weight(s):
  T = 6
  z = np.random.randn(2, T, T).astype(np.float32) * 5
  mask = np.tril(np.ones((T, T), bool))
  n = np.arange(1, T + 1).reshape(T, 1)
  w = compute(Tensor(z), s, Tensor(n), mask=Tensor(mask)).numpy()
  assert np.isfinite(w).all()
  assert (w[:, ~mask] == 0).all()
  np.testing.assert_allclose(w.sum(-1), 1, atol=TOL)
  np.testing.assert_allclose(w, ref.ssmax(z.astype(np.float64), s, n, 0.0, mask), atol=TOL)


def test_zero_s_without_mask_is_uniform():
  w = compute(Tensor(np.random.randn(3, 9).astype(np.float32) * 100), 0.0, 9).numpy()
  np.testing.assert_allclose(w, 1 / 9, atol=1e-7)


def test_stable_for_large_logits_and_large_n():
  n = 1_000_000
  z = np.random.uniform(-1e4, 1e4, size=(2, 64)).astype(np.float32)
  w = compute(Tensor(z), 1.0, n).numpy()
  assert np.isfinite(w).all()
  np.testing.assert_allclose(w.sum(-1), 1, atol=TOL)
  np.testing.assert_allclose(w, ref.ssmax(z.astype(np.float64), 1.0, n), atol=TOL)


def test_ssmax_module_matches_compute_and_freezes():
  z = Tensor(np.random.randn(2, 3, 4, 4).astype(np.float32))
  m = SSMax(init_s=0.7, num_heads=3, per_head=True, learn_bias=True)
  assert m.s.shape == (3, 1, 1) and m.bias.shape == (3, 1, 1)
  np.testing.assert_allclose(m(z, 4).numpy(), compute(z, 0.7, 4).numpy(), atol=1e-7)
  (g,) = m(z, 4).max(-1).sum().gradient(m.s)
  assert np.abs(g.numpy()).max() > 0
  m.freeze()
  assert not m.s.is_param and not m.bias.is_param
  (g,) = m(z, 4).max(-1).sum().gradient(m.s)  # detached: s no longer reaches the loss
  assert (g.numpy() == 0).all()


@pytest.mark.parametrize("training", [0, 1])
def test_masked_softmax_backward_is_the_softmax_jacobian_in_float64(training):
  """masked_softmax's hand-written backward (d z = w * (g - sum(g w)), from the weights) against the softmax Jacobian
  applied to g in float64, written out as diag(w) - w w^T per row; in and out of training (where exp(z - max) is
  realised), a row with no allowed key included (zero weights, zero gradient)."""
  from tinygrad import Context

  from ssmax_tiny.model import masked_softmax
  rng = np.random.default_rng(0)
  z, g = rng.standard_normal((2, 5, 7)) * 3, rng.standard_normal((2, 5, 7))
  mask = np.tril(np.ones((5, 7), bool), 2)
  mask[3] = False
  zt = Tensor(z.astype(np.float32))
  with Context(TRAINING=training):
    w = masked_softmax(zt, Tensor(mask))
    (got,) = (w * Tensor(g.astype(np.float32))).sum().gradient(zt)
    got = got.numpy()
  top = np.where(mask, z, -np.inf).max(-1, keepdims=True)
  e = np.where(mask, np.exp(z - np.where(np.isfinite(top), top, 0.0)), 0.0)
  want_w = e / np.maximum(e.sum(-1, keepdims=True), 1e-300)                                  # the empty row stays 0
  jacobian = np.einsum("bij,jk->bijk", want_w, np.eye(7)) - np.einsum("bij,bik->bijk", want_w, want_w)   # d w_ij / d z_ik
  want = np.einsum("bij,bijk->bik", g, jacobian)
  assert np.abs(want).max() > 0.1 and (want[:, 3] == 0).all()
  np.testing.assert_allclose(w.numpy(), want_w, atol=TOL)
  np.testing.assert_allclose(got, want, atol=TOL)
