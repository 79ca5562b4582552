"""Synthetic long-context retrieval tasks, made with numpy from a seed, parameterized by length. Nothing is downloaded.

Both tasks hide key-value pairs among filler tokens and put a query key at the last position; the target is the value
stored under that key, read by a linear head on the model's last-position output (Edifice's [batch, hidden] output).

- "needle" (passkey retrieval): one pair among filler. The query must find one token among n.
- "recall" (multi-query associative recall, after Arora et al. 2023 "Zoology"): `num_pairs` pairs with distinct keys
  among filler; each sequence queries one of them (different sequences query different keys), so the other pairs are
  distractors that look like the answer.

A pair is written as one token, pair(k, v). That makes retrieval a single attention hop (query -> pair), which a model
without position information (positional="none", Edifice's default) can learn: the question SSMax answers is whether
attention still finds that one token as the number of filler tokens n grows. Longer evaluation lengths add filler only:
the number of pairs and the vocabulary stay as in training.

Vocabulary: [0, F) filler, [F, F + K*V) pair(k, v) = F + k*V + v, [F + K*V, F + K*V + K) query(k).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ssmax_tiny.checks import check_choice, check_int

TASKS = ("needle", "recall")


@dataclass(frozen=True)
class RetrievalTask:
  name: str = "needle"
  num_keys: int = 16
  num_values: int = 16
  num_filler: int = 16
  num_pairs: int = 1

  def __post_init__(self):
    check_choice("task name", self.name, TASKS)
    for f in ("num_keys", "num_values", "num_filler", "num_pairs"): check_int(f, getattr(self, f))
    if self.num_pairs > self.num_keys:
      raise ValueError(f"num_pairs={self.num_pairs} must be <= num_keys={self.num_keys} (keys in a sequence are distinct)")

  @property
  def vocab_size(self) -> int: return self.num_filler + self.num_keys * self.num_values + self.num_keys

  @property
  def num_classes(self) -> int: return self.num_values

  @property
  def min_length(self) -> int: return self.num_pairs + 1  # the pairs, then the query

  def pair_token(self, k, v): return self.num_filler + k * self.num_values + v
  def query_token(self, k): return self.num_filler + self.num_keys * self.num_values + k

  def batch(self, rng: np.random.Generator, batch_size: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """tokens [batch_size, length] int32 and targets [batch_size] int32 (the queried value, in [0, num_values))."""
    length = check_int("length", length, self.min_length)  # the pairs and the query
    B, P = check_int("batch_size", batch_size), self.num_pairs
    tokens = rng.integers(0, self.num_filler, size=(B, length))
    keys = np.argsort(rng.random((B, self.num_keys)), axis=1)[:, :P]           # P distinct keys per row
    values = rng.integers(0, self.num_values, size=(B, P))
    slots = np.argsort(rng.random((B, length - 1)), axis=1)[:, :P]             # P distinct positions before the query
    rows = np.arange(B)[:, None]
    tokens[rows, slots] = self.pair_token(keys, values)
    asked = rng.integers(0, P, size=B)
    tokens[:, -1] = self.query_token(keys[np.arange(B), asked])
    return tokens.astype(np.int32), values[np.arange(B), asked].astype(np.int32)

  def loss(self, logits, targets):
    """The training loss of a batch (logits [B, num_classes], targets [B], tinygrad Tensors): the mean cross-entropy."""
    return logits.sparse_categorical_crossentropy(targets)

  def to_dict(self) -> dict: return asdict(self)


def make_task(name: str, **overrides) -> RetrievalTask:
  """The two tasks with their default difficulty. needle: one key (a passkey: "what is the value?"), 16 values;
  recall: 4 pairs of 8 keys and 8 values. 16 filler tokens in both."""
  check_choice("task", name, TASKS)
  defaults = dict(num_keys=1, num_values=16, num_pairs=1) if name == "needle" else dict(num_keys=8, num_values=8, num_pairs=4)
  return RetrievalTask(name=name, **{**defaults, **overrides})


def batch_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
  """The generator for one batch: a function of (seed, step), so a resumed run draws exactly the same data."""
  return np.random.default_rng([seed, stream, step])
