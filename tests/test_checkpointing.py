"""Activation checkpointing (TrainConfig.checkpoint): the same loss and gradients as the ordinary backward pass, dropout
included (its draws are replayed), for the classifier and the language model; and the same training run."""
import numpy as np
import pytest
from conftest import TINY, as_numpy
from tinygrad import Context, Tensor

import ssmax_tiny as st
from ssmax_tiny.lm import build_lm
from ssmax_tiny.tasks import make_task
from ssmax_tiny.text import TextTask
from ssmax_tiny.train import DropoutRNG, TrainConfig, Trainer, build_token_model, checkpointed_gradients


def _models():
  config = st.SSMaxConfig(embed_dim=8, **TINY, dropout=0.2, positional="rope")
  yield "classifier", build_token_model(make_task("needle"), config, 0), make_task("needle")
  yield "lm", build_lm(st.SSMaxConfig(**{**{**config.__dict__, "embed_dim": 16}, "output_mode": "all"}), 0), TextTask(passkey_rate=0.0)


@pytest.mark.parametrize("kind,answer_weight", [pytest.param("classifier", 0.0, marks=pytest.mark.slow), ("lm", 0.0),
                                                       pytest.param("lm", 2.0, marks=pytest.mark.slow)])
def test_checkpointed_gradients_equal_the_ordinary_backward(kind, answer_weight):
  _, model, task = next(m for m in _models() if m[0] == kind)
  tokens, targets = (Tensor(a) for a in task.batch(np.random.default_rng(0), 2, 12))
  params = [p for p in model.configure_optimizers(1e-3, (0.9, 0.95), 0.1).params]
  # with an answer weight, TextTask.loss reads only the batch's shape: row 0 as keyed, its last 5 targets as the answer
  objective = TextTask(passkey_rate=0.5, answer_weight=answer_weight).loss if answer_weight else task.loss
  with Context(TRAINING=1):
    with (rng := DropoutRNG(0, (tokens.device,))):
      loss = objective(model(tokens), targets)
      want = as_numpy(loss.gradient(*params))
      want_loss, after = loss.item(), rng.counters[tokens.device].numpy()
    with (rng := DropoutRNG(0, (tokens.device,))):
      got_loss, got = checkpointed_gradients(model, tokens, targets, params, rng, objective)
      got = as_numpy(got)
      assert (rng.counters[tokens.device].numpy() == after).all()   # the RNG ends where an ordinary step leaves it
  assert got_loss.item() == pytest.approx(want_loss, abs=1e-6) and len(got) == len(want) == len(params)
  # float32, summed in another order: an element that is a small sum of large terms (a gradient of 0.14 among terms of 28)
  # carries rounding of the terms' size, so the absolute tolerance is 4 float32 ulps of the array's largest element
  for g, w in zip(got, want): np.testing.assert_allclose(g, w, rtol=1e-5, atol=max(1e-6, 2 ** -21 * np.abs(w).max()))


@pytest.mark.slow
def test_checkpointed_training_run_matches_the_ordinary_run():
  task = make_task("needle")
  config = st.SSMaxConfig(embed_dim=8, **TINY, dropout=0.1)
  runs = []
  for checkpoint in (False, True):
    trainer = Trainer(build_token_model(task, config, 0), task, TrainConfig(steps=4, batch_size=4, train_length=16, warmup=1, checkpoint=checkpoint))
    runs.append(trainer.train(progress=False))
  np.testing.assert_allclose(runs[0], runs[1], rtol=1e-5)
