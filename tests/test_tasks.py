"""The synthetic retrieval tasks: lengths, answers within the vocabulary, the answer is really in the sequence, seeds."""
import numpy as np
import pytest

from ssmax_tiny.tasks import RetrievalTask, batch_rng, make_task


@pytest.mark.parametrize("name", ["needle", "recall"])
@pytest.mark.parametrize("length", [9, 64, 300])
def test_batch_shapes_vocab_and_answer(name, length):
  task = make_task(name)
  tokens, targets = task.batch(batch_rng(0, 0), 16, length)
  assert tokens.shape == (16, length) and targets.shape == (16,)
  assert tokens.dtype == np.int32 and targets.dtype == np.int32
  assert tokens.min() >= 0 and tokens.max() < task.vocab_size
  assert targets.min() >= 0 and targets.max() < task.num_classes
  F, K, V = task.num_filler, task.num_keys, task.num_values
  for row, target in zip(tokens, targets):
    q = row[-1] - F - K * V
    assert 0 <= q < K, "the last token is a query"
    body = row[:-1]
    pairs = body[(body >= F) & (body < F + K * V)] - F
    assert len(pairs) == task.num_pairs
    assert len(set(pairs // V)) == task.num_pairs, "keys in a sequence are distinct"
    assert [p % V for p in pairs if p // V == q] == [target], "exactly one pair holds the queried key, with the target"


def test_reproducible_by_seed_and_different_across_seeds():
  task = make_task("recall")
  a = task.batch(batch_rng(3, 7), 8, 64)
  b = task.batch(batch_rng(3, 7), 8, 64)
  c = task.batch(batch_rng(4, 7), 8, 64)
  np.testing.assert_array_equal(a[0], b[0]); np.testing.assert_array_equal(a[1], b[1])
  assert (a[0] != c[0]).any()


def test_targets_cover_the_values():
  task = make_task("needle")
  _, targets = task.batch(batch_rng(0, 0), 2000, 16)
  counts = np.bincount(targets, minlength=task.num_values)
  assert counts.min() > 2000 / task.num_values / 2   # roughly uniform: no value is starved


@pytest.mark.parametrize("kwargs, words", [(dict(name="x"), "name='x'"), (dict(num_keys=0), "num_keys=0"),
                                           (dict(num_pairs=5, num_keys=4), "num_pairs=5")])
def test_bad_task_options(kwargs, words):
  with pytest.raises(ValueError, match=words): RetrievalTask(**kwargs)


def test_bad_lengths():
  with pytest.raises(ValueError, match="length=4 must be an int >= 5"): make_task("recall").batch(batch_rng(0, 0), 2, 4)
  with pytest.raises(ValueError, match="batch_size=0"): make_task("needle").batch(batch_rng(0, 0), 0, 8)
  with pytest.raises(ValueError, match="task='copy'"): make_task("copy")
