"""TokenModel.generate: greedy decoding through the KV cache equals greedy decoding by full recomputation."""
import numpy as np
import pytest
from conftest import TINY
from tinygrad import Tensor

from ssmax_tiny.model import SSMaxConfig, TokenModel
from ssmax_tiny.tasks import make_task

TOL = 1e-5


def _next_token_model(positional="none", per_head=False):
  vocab = 11
  model = TokenModel(vocab, vocab, SSMaxConfig(embed_dim=8, dropout=0.0, positional=positional, per_head=per_head, **TINY))
  # wide logits, so that the greedy choice is not decided by rounding, and an s away from 1 so that n matters
  model.head.weight = (Tensor.randn(*model.head.weight.shape) * 3).contiguous().realize()
  model.embed.weight = Tensor.randn(*model.embed.weight.shape).contiguous().realize()
  for m in model.transformer.ssmax_layers(): m.s.assign(Tensor.uniform(*m.s.shape, low=0.5, high=2.0)).realize()
  return model


def _greedy_by_recompute(model, prompt, steps):
  seq, new, logits = prompt.copy(), [], []
  for _ in range(steps):
    out = model(Tensor(seq)).numpy()          # the whole sequence again, the output read at its last position
    new.append(out.argmax(-1).astype(np.int32)); logits.append(out)
    seq = np.concatenate([seq, new[-1][:, None]], axis=1).astype(np.int32)
  return np.stack(new, 1), np.stack(logits, 1)


@pytest.mark.slow   # make test: LanguageModel.generate in test_lm.py, the Decoder against a recompute in test_model.py
@pytest.mark.parametrize("positional,per_head", [("none", False), ("rope", True)])
def test_generate_with_cache_equals_recompute(positional, per_head):
  model = _next_token_model(positional, per_head)
  prompt = np.random.randint(0, 11, size=(2, 4)).astype(np.int32)
  tokens, logits = model.generate(prompt, 7, return_logits=True)
  want_tokens, want_logits = _greedy_by_recompute(model, prompt, 7)
  assert tokens.shape == (2, 7) and tokens.dtype == np.int32
  np.testing.assert_allclose(logits, want_logits, atol=TOL)  # every position, including those past window_size
  np.testing.assert_array_equal(tokens, want_tokens)
  assert len(set(tokens.ravel().tolist())) > 1               # the check would be weak if one token repeated throughout


def test_generate_classifier_needs_a_token_map():
  task = make_task("needle")
  model = TokenModel(task.vocab_size, task.num_classes, SSMaxConfig(embed_dim=8, **TINY))
  prompt, _ = task.batch(np.random.default_rng(0), 2, 6)
  with pytest.raises(ValueError, match="16 classes, not the 33 tokens.*token_of_class"): model.generate(prompt, 2)
  tokens = model.generate(prompt, 3, token_of_class=lambda c: task.pair_token(0, c))
  assert tokens.shape == (2, 3) and ((tokens >= task.pair_token(0, 0)) & (tokens <= task.pair_token(0, 15))).all()
  with pytest.raises(ValueError, match=r"outside \[0, 33\)"): model.generate(prompt, 2, token_of_class=lambda c: c + 100)


@pytest.mark.parametrize("tokens,steps,match", [(np.zeros(3, np.int32), 1, "shape"), (np.zeros((1, 0), np.int32), 1, "shape"),
                                                (np.zeros((1, 2)), 1, "dtype float64"), (np.zeros((1, 2), np.int32), 0, "max_new_tokens=0")])
def test_generate_bad_input(tokens, steps, match):
  model = TokenModel(11, 11, SSMaxConfig(embed_dim=8, **TINY))
  with pytest.raises(ValueError, match=match): model.generate(tokens, steps)
