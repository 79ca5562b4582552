"""Mixed precision (SSMaxConfig.dtype): projections and activations in bfloat16 or float16, weights, optimizer state,
LayerNorm, softmax and loss in float32, as PyTorch's autocast does it."""
from dataclasses import asdict, replace

import numpy as np
import pytest
import reference as ref
from conftest import TINY
from tinygrad import Context, Tensor, dtypes
from tinygrad.nn.state import get_parameters, get_state_dict

import ssmax_tiny as st
from ssmax_tiny.model import Linear
from ssmax_tiny.text import TextTask
from ssmax_tiny.train import TrainConfig, Trainer

U = 2.0 ** -8   # bfloat16's unit roundoff (8 significant bits)


def _bfloat16_builds() -> bool:
  try:
    (Tensor.ones(8, 8, dtype=dtypes.bfloat16).contiguous() @ Tensor.ones(8, 8, dtype=dtypes.bfloat16).contiguous()).realize()
    return True
  except Exception:  # noqa: BLE001 (the compiler's own error; the skip below says what to install)
    return False


# tinygrad's CPU device compiles with the C compiler in CC; Debian 12's clang 14 cannot build bfloat16 vectors ("__bf16 is
# not supported on this target"), clang 15 and later can: make's set-up installs clang-19 and passes CC=clang-19
pytestmark = pytest.mark.skipif(not _bfloat16_builds(), reason="this device's compiler cannot build bfloat16; on the CPU device "
                                "install clang 15 or later and set CC (Debian 12: apt-get install clang-19; CC=clang-19)")


def _lm(dtype: str, **opts) -> st.LanguageModel:
  Tensor.manual_seed(0)
  return st.LanguageModel(st.SSMaxConfig(embed_dim=16, **{**TINY, "window_size": 12}, dropout=0.0, positional="rope", dtype=dtype, **opts))


@pytest.mark.parametrize("opts", [dict(), dict(attention="scale_invariant"), dict(n_mode="sequence", learn_bias=True)],
                         ids=["ssmax", "scale_invariant", "sequence"])
def test_bfloat16_model_is_within_bfloat16s_rounding_of_float64(opts):
  model = _lm("bfloat16", **opts)
  tokens = Tensor(np.random.default_rng(0).integers(0, 256, (2, 12)).astype(np.int32))
  got = model.transformer.hidden(model.embed(tokens)).numpy()
  params = {k: v.numpy() for k, v in get_state_dict(model.transformer).items()}
  want = ref.model(model.embed(tokens).numpy(), params, {**asdict(model.config), "output_mode": "all"})
  # every value is rounded to bfloat16 about 8 times a layer (projections, RoPE, weights, GELU), each within U of its
  # value; with 2 layers and the final LayerNorm's rescaling, 16 U of the largest value bounds the sum of those errors
  err = np.abs(got - want).max() / np.abs(want).max()
  assert err <= 16 * U, err
  assert err > U / 16, f"{err}: no bfloat16 rounding: was the model run in float32?"
  assert got.dtype == np.float32   # the residual stream and the final LayerNorm: float32


def test_bfloat16_decoding_equals_a_bfloat16_recompute():
  model = _lm("bfloat16", per_head=True)
  prompt = np.random.default_rng(1).integers(0, 256, (2, 5)).astype(np.int32)
  new = np.stack(list(model.generate(prompt, 6, temperature=0)), 1)                 # prefill, then one step at a time
  tokens = Tensor(np.concatenate([prompt, new], 1))
  full = model(tokens).numpy()                                                       # the whole sequence at once
  dec = st.Decoder(model.transformer, 2, 11)
  h = [dec.prefill(model.embed(tokens[:, :5])).numpy()] + [dec.step(model.embed(tokens[:, t:t + 1])).numpy()[:, None] for t in range(5, 11)]
  cached = model.project(Tensor(np.concatenate(h, 1))).numpy()
  assert dec.cache.layers[0].dtype == dtypes.bfloat16                               # the cache holds bfloat16, half the memory
  # the same bfloat16 roundings on both paths; the scores' float32 sums run in another order, which can move a rounding
  # by one bfloat16 step (2 U) and carry it through the layer: 4 steps of the largest logit
  np.testing.assert_allclose(cached, full, rtol=0, atol=8 * U * np.abs(full).max())
  assert (new == full[:, 4:-1].argmax(-1)).all()                                    # greedy decoding saw the same logits


def test_bfloat16_training_keeps_float32_weights_and_state_and_learns():
  model = _lm("bfloat16")
  trainer = Trainer(model, TextTask(passkey_rate=0.0), TrainConfig(steps=8, batch_size=4, train_length=12, lr=1e-2, warmup=1))
  losses = trainer.train(progress=False)
  assert losses[-1] < losses[0] and all(np.isfinite(losses))
  assert all(p.dtype == dtypes.float32 for p in get_parameters(model))
  tensors, meta = trainer.state()
  assert all(t.dtype in (dtypes.float32, dtypes.uint32) for t in tensors.values()) and meta["model"]["dtype"] == "bfloat16"


def test_float16_trains_only_with_loss_scaling_so_it_is_refused_and_infers():
  model = _lm("float16")
  with pytest.raises(ValueError, match="dtype='float16' trains only with loss scaling.*bfloat16"):
    Trainer(model, TextTask(passkey_rate=0.0), TrainConfig(steps=2, batch_size=2, train_length=12))
  f32 = st.with_options(model, dtype="float32")
  tokens = Tensor(np.random.default_rng(2).integers(0, 256, (2, 12)).astype(np.int32))
  half, full = model(tokens).numpy(), f32(tokens).numpy()
  assert half.dtype == np.float32 and np.abs(half - full).max() <= 32 * 2.0 ** -11 * np.abs(full).max()   # float16: 11 bits


def test_linear_computes_in_its_dtype_from_float32_weights():
  lin = Linear(16, 32, dtype="bfloat16")
  x = Tensor.randn(4, 16)
  assert lin.weight.dtype == dtypes.float32 and lin(x).dtype == dtypes.bfloat16
  with Context(TRAINING=1):
    lin(x).float().sum().backward()
  assert lin.weight.grad.dtype == dtypes.float32
  np.testing.assert_allclose(lin(x).float().numpy(), replace_dtype(lin, "float32")(x).numpy(), rtol=0,
                             atol=4 * U * np.abs(replace_dtype(lin, "float32")(x).numpy()).max())


def replace_dtype(lin: Linear, dtype: str) -> Linear:
  other = Linear.__new__(Linear)
  other.weight, other.bias, other.dtype = lin.weight, lin.bias, dtype
  return other


def test_dtype_is_an_option_of_the_command_line_and_the_config():
  from ssmax_tiny.cli import build_parser, model_config
  args = build_parser().parse_args(["lm", "--out", "x", "--dtype", "bfloat16"])
  assert model_config(args, "ssmax").dtype == "bfloat16"
  assert replace(st.SSMaxConfig(embed_dim=8), dtype="bfloat16").to_dict()["dtype"] == "bfloat16"
  assert "dtype" not in st.SSMaxConfig(embed_dim=8).to_dict()   # at its default, left out of a sweep cell's name


def test_bfloat16_queries_in_blocks_equal_the_materialised_attention():
  model = _lm("bfloat16", per_head=True, learn_bias=True)
  blocked = st.with_options(model, query_block=5)                                # 12 queries in blocks of 5: not a divisor
  tokens = Tensor(np.random.default_rng(3).integers(0, 256, (2, 12)).astype(np.int32))
  want, got = model(tokens).numpy(), blocked(tokens).numpy()
  # the same roundings to bfloat16 on both paths; only the float32 sums' order differs, which can move a rounding by one
  # bfloat16 step (2 U) and carry it through the layer
  np.testing.assert_allclose(got, want, rtol=0, atol=8 * U * np.abs(want).max())
