"""The field's length-dependent attentions (log-n scaling, Qwen's log-n, Llama 4's temperature, scale-invariant attention)
and what interacts with them (partial RoPE, a raised RoPE base, QK-norm), each against its float64 formula in
tests/reference.py, in every path: folded, explicit, in blocks of queries, and decoding with the KV cache."""
from dataclasses import asdict

import numpy as np
import pytest
import reference as ref
from conftest import TINY
from tinygrad import Tensor
from tinygrad.nn.state import get_state_dict

import ssmax_tiny as st
from ssmax_tiny.model import Decoder, llama4_scale, qwen_logn_scale, scale_invariant_logits

TOL = 1e-5  # float32 through 2 layers of O(1) activations, as in test_model.py
L = 4       # the training length the variants are told: T = 13 reaches past 3L, where qwen_logn and llama4 act

VARIANTS = [dict(attention="logn", positional="none"), dict(attention="qwen_logn"), dict(attention="llama4", n_mode="sequence", positional="none"),
            dict(attention="scale_invariant", rope_fraction=0.25, qk_norm=True), dict(attention="ssmax", rope_fraction=0.5),
            dict(attention="softmax", qk_norm=True, rope_base=500.0)]


def _id(o): return ",".join(f"{k}={v}" for k, v in o.items())


def _model(**opts):
  Tensor.manual_seed(5)
  model = st.build(8, **{**TINY, "window_size": 64}, output_mode="all", train_length=L, **{"positional": "rope", **opts})
  for m in model.ssmax_layers(): m.s.assign(Tensor.uniform(*m.s.shape, low=0.3, high=2.0)).realize()
  for b in model.blocks:  # QK-norm's gains away from 1, so that a missing or misplaced norm would show
    if b.attn.q_norm is not None:
      for n in (b.attn.q_norm, b.attn.k_norm): n.weight.assign(Tensor.uniform(*n.weight.shape, low=0.5, high=1.5)).realize()
  return model


def _expected(opts):
  model = _model(**opts)
  x = Tensor.randn(2, 13, 8).realize()
  params = {k: v.numpy() for k, v in get_state_dict(model).items()}
  return model, x, params, ref.model(x.numpy(), params, asdict(model.config))


@pytest.mark.fast
@pytest.mark.parametrize("opts", VARIANTS, ids=_id)
def test_variant_matches_its_float64_formula(opts):
  model, x, _, expected = _expected(opts)
  np.testing.assert_allclose(model.forward(x).numpy(), expected, atol=TOL)                   # folded into q
  np.testing.assert_allclose(model.forward(x, fold_scale=False).numpy(), expected, atol=TOL)  # explicit weights


@pytest.mark.parametrize("opts", VARIANTS, ids=_id)
def test_variant_matches_its_float64_formula_in_blocks_and_decoding(opts):
  model, x, params, expected = _expected(opts)
  blocked = _model(query_block=5, **opts)  # 13 queries in blocks of 5 (not a divisor), each block with its own keys
  for k, t in get_state_dict(blocked).items(): t.assign(Tensor(params[k])).realize()
  np.testing.assert_allclose(blocked.forward(x).numpy(), expected, atol=TOL)
  # the KV cache: a prefill of 6 positions, then one at a time; n and positions continue from the cache
  decoder = Decoder(model, 2, 13)
  got = [decoder.prefill(x[:, :6]).numpy()] + [decoder.step(x[:, t:t + 1]).numpy()[:, None] for t in range(6, 13)]
  np.testing.assert_allclose(np.concatenate(got, 1), expected, atol=TOL)


@pytest.mark.fast
def test_variant_scales_against_their_formulas():
  n = np.arange(1, 40)
  np.testing.assert_allclose(qwen_logn_scale(Tensor(n.reshape(-1, 1)), 8).numpy().ravel(), ref.qwen_logn(n, 8), rtol=1e-6)
  assert qwen_logn_scale(8, 8) == 1.0 and qwen_logn_scale(64, 8) == pytest.approx(2.0)
  pos = np.arange(0, 40)
  np.testing.assert_allclose(llama4_scale(Tensor(pos.reshape(-1, 1)), 8).numpy().ravel(), ref.llama4(pos, 8), rtol=1e-6)
  assert llama4_scale(6, 8) == 1.0 and llama4_scale(7, 8) == pytest.approx(1 + 0.1 * np.log(2))  # (7 + 1) / 8 = 1
  S, t = np.random.randn(5, 9), np.arange(9)[None, :] - np.arange(5)[:, None] + 4
  got = scale_invariant_logits(Tensor(S.astype(np.float32)), Tensor(np.arange(5)[:, None] + 4), Tensor(np.arange(9)[None, :]))
  np.testing.assert_allclose(got.numpy(), ref.scale_invariant(S, -t + 8), atol=1e-5)  # t = q_pos - k_pos


@pytest.mark.fast
def test_variant_options_are_checked():
  with pytest.raises(ValueError, match="attention='qwen_logn' needs train_length"): st.build(8, **TINY, attention="qwen_logn")
  with pytest.raises(ValueError, match=r"rope_fraction=0 must be a finite number in \(0, 1\]"): st.build(8, **TINY, rope_fraction=0)
  with pytest.raises(ValueError, match="rope_base=1.0 must be"): st.build(8, **TINY, rope_base=1.0)
  with pytest.raises(ValueError, match="attention='flash' is not one of 'ssmax', 'softmax', 'logn'"): st.build(8, **TINY, attention="flash")
