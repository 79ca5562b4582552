"""Every bad input gets a ValueError that names the argument, the value and what is accepted."""
import numpy as np
import pytest
from conftest import TINY
from tinygrad import Tensor

import ssmax_tiny as st

pytestmark = pytest.mark.fast  # the edit-run loop: make test-fast


@pytest.mark.parametrize("opts, words", [
  (dict(hidden_size=250, num_heads=4), ["hidden_size=250", "num_heads=4", "divisible"]),
  (dict(hidden_size=0), ["hidden_size=0", ">= 1"]),
  (dict(num_heads=-2), ["num_heads=-2", ">= 1"]),
  (dict(num_layers=0), ["num_layers=0", ">= 1"]),
  (dict(window_size=0), ["window_size=0", ">= 1"]),
  (dict(hidden_size=2.5), ["hidden_size=2.5", "int"]),
  (dict(dropout=1.0), ["dropout=1.0", "[0, 1)"]),
  (dict(dropout=-0.1), ["dropout=-0.1", "[0, 1)"]),
  (dict(output_mode="first"), ["output_mode='first'", "'last'", "'all'", "'mean'"]),
  (dict(attention="linear"), ["attention='linear'", "'ssmax'", "'softmax'"]),
  (dict(n_mode="col"), ["n_mode='col'", "'row'", "'sequence'"]),
  (dict(seq_len_mode="window"), ["seq_len_mode", "accepted", "n_mode"]),
  (dict(dtype="float64"), ["dtype='float64'", "'float32'", "'bfloat16'", "'float16'"]),
  (dict(positional="alibi"), ["positional='alibi'", "'none'", "'rope'"]),
  (dict(hidden_size=12, num_heads=4, positional="rope"), ["rope", "head_dim", "3"]),
  (dict(per_head="yes"), ["per_head='yes'", "True or False"]),
  (dict(init_s=float("nan")), ["init_s=nan", "finite"]),
  (dict(hiden_size=64), ["hiden_size", "accepted", "hidden_size"]),
])
def test_bad_build_options(opts, words):
  with pytest.raises(ValueError) as e:
    st.build(8, **opts)
  for w in words: assert w in str(e.value), (w, str(e.value))


def test_bad_embed_dim_and_output_size_options():
  with pytest.raises(ValueError, match="embed_dim=0"): st.build(0)
  with pytest.raises(ValueError, match="unknown option"): st.output_size(heads=4)
  with pytest.raises(ValueError, match="hidden_size=250 must be divisible by num_heads=4"): st.output_size(hidden_size=250)


@pytest.mark.parametrize("shape, words", [((2, 6), ["rank 3", "(2, 6)"]), ((2, 6, 5), ["last dimension 5", "embed_dim=8"]),
                                          ((1, 2, 6, 8), ["rank 3"])])
def test_bad_model_input(shape, words):
  model = st.build(8, **TINY)
  for call in (model, model.forward):
    with pytest.raises(ValueError) as e:
      call(Tensor.zeros(*shape))
    for w in words: assert w in str(e.value), (w, str(e.value))
  with pytest.raises(ValueError, match="tinygrad Tensor"): model(np.zeros((2, 6, 8)))


@pytest.mark.parametrize("n", [0, -3, 2.5, True, "10"])
def test_bad_n(n):
  with pytest.raises(ValueError, match=f"n={n!r}"):
    st.compute(Tensor.zeros(2, 4), 1.0, n)
  with pytest.raises(ValueError, match=f"n={n!r}"):  # Edifice's name for it
    st.compute(Tensor.zeros(2, 4), 1.0, seq_len=n)


def test_bad_compute_arguments():
  with pytest.raises(ValueError, match="last dimension 1"): st.compute(Tensor.zeros(4, 4), 1.0, Tensor.ones(4, 4))
  with pytest.raises(ValueError, match="mask has dtype"): st.compute(Tensor.zeros(4, 4), 1.0, 4, mask=Tensor.ones(4, 4))
  with pytest.raises(ValueError, match="logits must be a tinygrad Tensor"): st.compute(np.zeros((4, 4)), 1.0, 4)


def test_bad_attention_and_ssmax_arguments():
  with pytest.raises(ValueError, match="hidden_size=10 must be divisible by num_heads=4"): st.build_ssmax_attention(10, 4)
  with pytest.raises(ValueError, match="attention='flash'"): st.build_ssmax_attention(16, 4, attention="flash")
  with pytest.raises(ValueError, match="num_heads=0"): st.layer(num_heads=0)
