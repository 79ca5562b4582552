"""Real text for the language model, byte-level (vocabulary 256), nothing downloaded; and the pass key hidden in it.

- The default corpus is the documentation that ships inside every CPython: `pydoc_data.topics` (the text `help()` shows,
  about 0.46 MB of English prose with code examples, 79 topics), joined in the order of its topic names. It is present
  wherever Python and so this package installs.
- `--data PATH` reads the user's files instead: PATH is a file, a folder (its files, recursively) or a glob; each file is
  read memory-mapped (numpy.memmap), never copied whole.
- The split is by a fixed tail: the last `holdout` (10%) of every document's bytes is held out for evaluation, the rest
  is for training. Deterministic, and a window never spans two documents.
- Training windows are drawn from (seed, step) alone (tasks.batch_rng), so a resumed run reads the same batches.
- Pass key retrieval in text (the paper's Section 4 and the "needle in a haystack" of the field): a key sentence with a
  random 5-digit value at a chosen depth of real text, and at the end the question whose answer is the value. A fixed
  share of each training batch carries one (so the model learns the format at the training length); at evaluation only
  the length is new.
"""
from __future__ import annotations

import glob
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ssmax_tiny.checks import check_int, check_number

KEY = b" The pass key is {}. "                                   # hidden in the haystack
QUESTION = b" What is the pass key? The pass key is {}"            # at the end; the model must produce the digits
DIGITS = 5


class DataError(ValueError):
  """Text that cannot be used, with the path and the reason."""


def default_documents() -> list[tuple[str, np.ndarray]]:
  from pydoc_data.topics import topics
  text = "\n\n".join(topics[k] for k in sorted(topics)).encode("utf-8")
  return [("pydoc_data.topics", np.frombuffer(text, dtype=np.uint8))]


def read_documents(path: str) -> list[tuple[str, np.ndarray]]:
  """The files named by path (a file, a folder searched recursively, or a glob), sorted, each memory-mapped."""
  p = Path(path)
  if p.is_dir(): names = sorted(str(f) for f in p.rglob("*") if f.is_file())
  else: names = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
  if not names: raise DataError(f"data={path!r}: no file there (a text file, a folder of them, or a glob like 'books/*.txt')")
  docs = []
  for name in names:
    if os.path.getsize(name) == 0: raise DataError(f"data file {name!r} is empty")
    data = np.memmap(name, dtype=np.uint8, mode="r")
    if (data[:65536] == 0).any(): raise DataError(f"data file {name!r} looks binary (it has NUL bytes); text files only")
    docs.append((name, data))
  return docs


@dataclass(frozen=True)
class TextTask:
  """Next-byte prediction on a corpus (default: Python's own documentation), with pass keys mixed into training."""
  name: str = "text"
  data: str | None = None          # None: the default corpus; else a file, folder or glob of text files
  holdout: float = 0.1             # the tail of each document held out for evaluation
  passkey_rate: float = 0.25       # share of each training batch that carries a pass key
  answer_weight: float = 0.0       # extra weight on the pass keys' answer digits in the training loss (`loss`)

  def __post_init__(self):
    if self.name != "text": raise ValueError(f"name={self.name!r}: a TextTask is 'text'")
    check_number("holdout", self.holdout, 0, 1, low_open=True, high_open=True)
    check_number("passkey_rate", self.passkey_rate, 0, 1)
    check_number("answer_weight", self.answer_weight, 0)
    docs = default_documents() if self.data is None else read_documents(self.data)
    cut = [len(d) - int(len(d) * self.holdout) for _, d in docs]
    object.__setattr__(self, "_train", [(n, d[:c]) for (n, d), c in zip(docs, cut)])
    object.__setattr__(self, "_heldout", [(n, d[c:]) for (n, d), c in zip(docs, cut)])

  vocab_size = 256
  num_classes = 256

  def to_dict(self) -> dict: return asdict(self)

  @property
  def source(self) -> str: return "pydoc_data.topics (Python's documentation)" if self.data is None else self.data

  def sizes(self) -> tuple[int, int]:
    return sum(len(d) for _, d in self._train), sum(len(d) for _, d in self._heldout)

  def _windows(self, docs, rng: np.random.Generator, count: int, length: int, what: str) -> np.ndarray:
    """count windows of length bytes, each inside one document, documents chosen in proportion to their size."""
    fits = [d for _, d in docs if len(d) >= length]
    if not fits:
      longest = max(len(d) for _, d in docs)
      raise DataError(f"data {self.source!r}: no document's {what} part holds one window of {length} bytes (the longest has "
                      f"{longest}); use longer texts, a smaller length, or a smaller holdout")
    weights = np.array([len(d) - length + 1 for d in fits], dtype=np.float64)
    which = rng.choice(len(fits), size=count, p=weights / weights.sum())
    starts = (rng.random(count) * weights[which]).astype(np.int64)
    return np.stack([np.asarray(fits[w][s:s + length]) for w, s in zip(which, starts)]).astype(np.int32)

  def check_length(self, length: int) -> None:
    self._windows(self._train, np.random.default_rng(0), 1, length + 1, "training")

  def batch(self, rng: np.random.Generator, batch_size: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """tokens [B, length] and their next bytes [B, length]; the first round(B * passkey_rate) rows carry a pass key."""
    check_int("batch_size", batch_size)
    keyed = round(batch_size * self.passkey_rate)
    check_int("length", length, len(KEY) + len(QUESTION) + 2 * DIGITS - 3 if keyed else 1)  # room for the key and the question
    seq = self._windows(self._train, rng, batch_size, length + 1, "training")
    for row in range(keyed):
      seq[row], _, _ = passkey(seq[row], rng.integers(0, 10 ** DIGITS), rng.random())
    return seq[:, :-1], seq[:, 1:]

  def loss(self, logits, targets):
    """The training loss of a batch from `batch` (logits [B, T, 256], targets [B, T], tinygrad Tensors): the mean next-byte
    cross-entropy, plus answer_weight times the mean cross-entropy of the keyed rows' answer digits (their last DIGITS
    targets). Without the extra term a small model does not learn to retrieve in any budget we could run here: the five
    answer bytes are 1% of a keyed window's loss (README, Language model)."""
    loss = logits.sparse_categorical_crossentropy(targets)
    keyed = round(logits.shape[0] * self.passkey_rate)
    if self.answer_weight == 0 or keyed == 0: return loss
    answer = logits[:keyed, -DIGITS:].sparse_categorical_crossentropy(targets[:keyed, -DIGITS:])   # (keyed, DIGITS) answer bytes
    return loss + self.answer_weight * answer

  def heldout(self, rng: np.random.Generator, count: int, length: int) -> np.ndarray:
    """count held-out windows of length bytes (for the loss by position, and as pass key haystacks)."""
    return self._windows(self._heldout, rng, count, length, "held-out")


def passkey(text: np.ndarray, value: int, depth: float) -> tuple[np.ndarray, int, int]:
  """text (bytes as ints) rewritten to the same length: a haystack from its start, the key sentence at `depth` (0: the
  start, 1: the end of the haystack), then the question and the answer's digits as its last DIGITS bytes. Returns the
  sequence, the position of the key's first digit in the haystack and that of the answer's first digit."""
  digits = f"{int(value):0{DIGITS}d}".encode()
  key, question = np.frombuffer(KEY.replace(b"{}", digits), np.uint8), np.frombuffer(QUESTION.replace(b"{}", digits), np.uint8)
  hay = len(text) - len(key) - len(question)
  if hay < 0: raise ValueError(f"a pass key needs at least {len(key) + len(question)} bytes, got {len(text)}")
  at = int(round(depth * hay))
  out = np.concatenate([text[:at], key, text[at:hay], question]).astype(np.int32)
  return out, at + KEY.index(b"{}"), len(out) - DIGITS
