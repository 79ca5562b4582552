"""The next-token language model: float64 reference of its per-position loss, padded batches, generation through the KV
cache against recomputation, sampling, with_options, the text data (split, errors), and train -> resume."""
from dataclasses import asdict

import numpy as np
import pytest
import reference as ref
from conftest import TINY, as_numpy
from tinygrad import Context, Tensor
from tinygrad.nn.state import get_state_dict

import ssmax_tiny as st
from ssmax_tiny.cli import main
from ssmax_tiny.lm import buckets, build_lm, lm_config, partial_rope_fraction, passkey_batch
from ssmax_tiny.model import rope
from ssmax_tiny.text import DIGITS, KEY, DataError, TextTask, passkey
from ssmax_tiny.train import TrainConfig, Trainer, load_trainer, save_checkpoint

TOL = 1e-5
LM = dict(embed_dim=16, **TINY, dropout=0.0, train_length=8)


def _lm(**opts):
  model = build_lm(st.SSMaxConfig(**{**LM, "positional": "rope", **opts}), seed=1)
  for m in model.transformer.ssmax_layers(): m.s.assign(Tensor.uniform(*m.s.shape, low=0.3, high=2.0)).realize()
  return model


@pytest.mark.parametrize("opts", [dict(), dict(attention="scale_invariant", positional="none")], ids=["ssmax-rope", "scale_invariant"])
def test_token_losses_match_float64_reference(opts):
  model = _lm(**opts)
  tokens = np.random.randint(0, 256, size=(2, 11))
  targets = np.random.randint(0, 256, size=(2, 11))
  params = {k: v.numpy() for k, v in get_state_dict(model).items()}
  want = ref.lm_token_losses(tokens, targets, params, asdict(model.config))
  np.testing.assert_allclose(model.token_losses(Tensor(tokens), Tensor(targets)).numpy(), want, atol=TOL)
  np.testing.assert_allclose(model.loss(Tensor(tokens), Tensor(targets)).item(), want.mean(), atol=TOL)


def test_padded_batch_equals_the_sequences_one_by_one():
  """Right padding as an input: the loss and every gradient of a padded batch are finite and equal to those of the
  unpadded sequences run one by one (the padded rows attend to nothing, so no NaN reaches the backward pass)."""
  model = _lm()
  state = get_state_dict(model)  # gradients of a parameter of each kind, at each depth (all of them: slower, no stronger)
  params = [state[k] for k in ("embed.weight", "transformer.blocks.0.attn.q.weight", "transformer.blocks.0.attn.ssmax.s",
                               "transformer.blocks.1.attn.v.weight", "transformer.blocks.1.ffn.up.weight", "transformer.ln_f.weight")]
  lengths = [6, 3]
  tokens = np.random.randint(0, 256, size=(2, 6)); targets = np.random.randint(0, 256, size=(2, 6))
  with Context(TRAINING=1):
    loss = model.loss(Tensor(tokens), Tensor(targets), lengths=lengths)
    padded = as_numpy(loss.gradient(*params))
    loss = loss.item()
    # the same objective from the unpadded sequences: the sum of their token losses over the number of real tokens
    alone = [model.token_losses(Tensor(tokens[i:i + 1, :n]), Tensor(targets[i:i + 1, :n])).sum() / sum(lengths) for i, n in enumerate(lengths)]
    want = [sum(g) for g in zip(*[as_numpy(part.gradient(*params)) for part in alone])]  # before realising the parts
    want_loss = sum(part.item() for part in alone)
  assert np.isfinite(loss) and all(np.isfinite(g).all() for g in padded)
  assert loss == pytest.approx(want_loss, abs=TOL)
  for g, h in zip(padded, want): np.testing.assert_allclose(g, h, atol=1e-6)
  # and the real positions of the padded batch equal the float64 reference with the same padding
  x = Tensor.randn(2, 6, 16).realize()
  ref_params = {k[len("transformer."):]: v.numpy() for k, v in get_state_dict(model).items() if k.startswith("transformer.")}
  want = ref.model(x.numpy(), ref_params, {**asdict(model.config), "output_mode": "all"}, lengths=lengths)
  got = model.transformer.hidden(x, lengths=lengths).numpy()
  for i, n in enumerate(lengths): np.testing.assert_allclose(got[i, :n], want[i, :n], atol=TOL)


def test_greedy_generation_equals_recomputation_past_the_training_length():
  model = _lm()
  prompt = np.random.randint(0, 256, size=(2, 5))
  steps = 9   # to 14 positions, past train_length = 8
  new = np.stack(list(model.generate(prompt, steps, temperature=0)), 1)
  seq = np.concatenate([prompt, new], 1)
  full = model(Tensor(seq[:, :-1])).numpy()[:, prompt.shape[1] - 1:]          # recomputed: the logits of every new token
  assert (full.argmax(-1) == new).all()
  cached = np.stack([lg for _, lg in st.model.decode(model, prompt.astype(np.int32), steps, lambda lg: lg.argmax(-1))], 1)
  np.testing.assert_allclose(cached, full, atol=TOL)


def test_sampling_is_seeded_and_top_k_1_is_greedy():
  model = _lm()
  prompt = np.random.randint(0, 256, size=(1, 4))
  a = np.stack(list(model.generate(prompt, 6, temperature=1.0, seed=3)), 1)
  b = np.stack(list(model.generate(prompt, 6, temperature=1.0, seed=3)), 1)
  c = np.stack(list(model.generate(prompt, 6, temperature=1.0, seed=4)), 1)
  assert (a == b).all() and not (a == c).all()
  greedy = np.stack(list(model.generate(prompt, 6, temperature=0)), 1)
  assert (np.stack(list(model.generate(prompt, 6, temperature=2.0, top_k=1, seed=5)), 1) == greedy).all()
  with pytest.raises(ValueError, match="temperature=-1 must be"): next(model.generate(prompt, 2, temperature=-1))
  with pytest.raises(ValueError, match="top_k=300 must be"): next(model.generate(prompt, 2, top_k=300))


def test_with_options_keeps_weights_and_qwen_logn_acts_only_past_the_training_length():
  model = _lm(attention="softmax")
  for b in model.transformer.blocks: b.attn.q.weight.assign(b.attn.q.weight * 8).realize()  # logits large enough to matter
  qwen = st.with_options(model, attention="qwen_logn")
  x = Tensor.randn(1, 20, 16).realize()
  a, b = (m.transformer.blocks[0].attn.explicit(x).weights.numpy() for m in (model, qwen))   # (1, H, 20, 20)
  np.testing.assert_allclose(a[:, :, :8], b[:, :, :8], atol=TOL)     # n <= L = 8: max(1, log_L n) = 1
  assert np.abs(a[:, :, 8:] - b[:, :, 8:]).max(-1).min() > 1e-4        # every later row sharpened
  with pytest.raises(ValueError, match="changes the model's parameters"): st.with_options(model, attention="ssmax")


def test_tied_head_needs_equal_widths_and_shares_the_embedding():
  with pytest.raises(ValueError, match="tie_weights=True needs embed_dim == hidden_size; got embed_dim=8, hidden_size=16"):
    st.LanguageModel(st.SSMaxConfig(**{**LM, "embed_dim": 8}))
  assert "head.weight" not in get_state_dict(_lm())
  assert "head.weight" in get_state_dict(st.LanguageModel(st.SSMaxConfig(**{**LM, "embed_dim": 8}), tie_weights=False))


@pytest.mark.slow   # make test keeps the token model's (test_train.py)
def test_lm_overfits_one_batch():
  model = build_lm(st.SSMaxConfig(**LM), seed=0)
  task = TextTask(passkey_rate=0.0)
  trainer = Trainer(model, task, TrainConfig(steps=80, batch_size=4, train_length=16, lr=3e-2, warmup=5, weight_decay=0.0))
  tokens, targets = trainer.next_batch()
  trainer.next_batch = lambda: (tokens, targets)   # the same batch every step
  losses = trainer.train(progress=False)
  assert losses[0] > 5.0 and losses[-1] < 0.5, (losses[0], losses[-1])  # ln 256 = 5.5 at the start


def test_text_split_is_disjoint_deterministic_and_batches_are_keyed_by_seed_and_step(tmp_path):
  for i in range(3): (tmp_path / f"doc{i}.txt").write_bytes(bytes(range(32, 127)) * (10 + i))
  task = TextTask(data=str(tmp_path), holdout=0.2)
  for (_, tr), (_, ho), i in zip(task._train, task._heldout, range(3)):
    n = 95 * (10 + i)
    assert len(tr) + len(ho) == n and len(ho) == int(n * 0.2)
    assert np.shares_memory(tr, tr) and not np.shares_memory(tr, ho)    # head and tail of one memmap, no overlap
  a = task.batch(np.random.default_rng([0, 0, 5]), 4, 100)
  b = task.batch(np.random.default_rng([0, 0, 5]), 4, 100)
  assert all((x == y).all() for x, y in zip(a, b)) and (a[0][:, 1:] == a[1][:, :-1]).all()
  default = TextTask()
  tr, ho = default.sizes()
  assert tr > 300_000 and ho == int((tr + ho) * 0.1)


def test_bad_data_paths_give_clear_errors(tmp_path):
  with pytest.raises(DataError, match="no file there"): TextTask(data=str(tmp_path / "missing"))
  (tmp_path / "empty.txt").write_bytes(b"")
  with pytest.raises(DataError, match="empty.txt' is empty"): TextTask(data=str(tmp_path / "empty.txt"))
  (tmp_path / "bin.dat").write_bytes(b"ab\x00cd" * 10)
  with pytest.raises(DataError, match="bin.dat' looks binary"): TextTask(data=str(tmp_path / "bin.dat"))
  (tmp_path / "short.txt").write_bytes(b"hello world " * 5)
  with pytest.raises(DataError, match="no document's training part holds one window of 129 bytes"):
    TextTask(data=str(tmp_path / "short.txt")).check_length(128)


def test_passkey_layout():
  text = np.frombuffer(b"x" * 200, np.uint8).astype(np.int32)
  seq, key_at, answer = passkey(text, 4711, 0.5)
  assert len(seq) == 200 and bytes(seq[answer:].astype(np.uint8)) == b"04711" and bytes(seq[key_at:key_at + DIGITS].astype(np.uint8)) == b"04711"
  assert bytes(seq[key_at - KEY.index(b"{}"):key_at].astype(np.uint8)) == KEY[:KEY.index(b"{}")]
  seqs, key_at, first = passkey_batch(TextTask(), np.random.default_rng(0), 3, 300, 0.0)
  assert seqs.shape == (3, 300) and first == 295
  assert buckets(np.arange(64.0), 8) == {"[0,4)": 1.5, "[4,8)": 5.5, "[8,16)": 11.5, "[16,32)": 23.5, "[32,64)": 47.5}


def test_answer_weight_adds_the_keyed_rows_answer_loss():
  """TextTask.loss = mean cross-entropy + answer_weight x the mean cross-entropy of the keyed rows' last DIGITS targets,
  against numpy in float64; with answer_weight 0 it is the plain mean."""
  rng = np.random.default_rng(0)
  logits, targets = rng.normal(size=(4, 12, 256)) * 3, rng.integers(0, 256, size=(4, 12))
  ce = np.log(np.exp(logits).sum(-1)) - np.take_along_axis(logits, targets[..., None], -1)[..., 0]       # (B, T) in float64
  for rate, weight, want in [(0.5, 3.0, ce.mean() + 3.0 * ce[:2, -DIGITS:].mean()), (0.25, 3.0, ce.mean() + 3.0 * ce[:1, -DIGITS:].mean()),
                             (0.5, 0.0, ce.mean()), (0.0, 3.0, ce.mean())]:
    got = TextTask(passkey_rate=rate, answer_weight=weight).loss(Tensor(logits.astype(np.float32)), Tensor(targets)).item()
    np.testing.assert_allclose(got, want, rtol=1e-5)
  with pytest.raises(ValueError, match="answer_weight"): TextTask(answer_weight=-1.0)


def test_partial_rope_fraction_rotates_the_frequencies_that_turn_within_the_training_length(capsys):
  """p-rope's rule (lm.partial_rope_fraction): rotate RoPE's frequencies whose period 2 pi base^(2i/d) is at most L.
  The count from numpy in float64; rope() then moves exactly those dimensions. lm-compare's --rope-fraction without
  p-rope in the grid is an error."""
  for d, L, base in [(16, 128, 1e4), (64, 4096, 1e4), (16, 64, 500.0), (16, 6, 1e4)]:
    periods = 2 * np.pi * base ** (2 * np.arange(d // 2) / d)
    k = max(int((periods <= L).sum()), 1)
    got = partial_rope_fraction(d, L, base)
    assert got == k / (d // 2), (d, L, base, got)
    x = np.ones((1, d), np.float32)
    moved = np.abs(rope(Tensor(x), Tensor([3]), base, got).numpy() - x)[0] > 1e-6
    assert moved[:2 * k].all() and not moved[2 * k:].any(), (d, L, moved)
    assert lm_config(st.SSMaxConfig(hidden_size=d, embed_dim=d, num_heads=1), "softmax", "p-rope", L).rope_fraction == got
  assert main(["lm-compare", "--rope-fraction", "0.5", "--positionals", "rope,none"]) == 2
  assert "--rope-fraction 0.5 sets the p-rope cells' fraction" in capsys.readouterr().err


@pytest.mark.slow   # make test keeps the token model's (test_train.py)
def test_lm_resume_equals_an_uninterrupted_run(tmp_path):
  config, train = st.SSMaxConfig(**{**LM, "dropout": 0.1}), TrainConfig(steps=6, batch_size=2, train_length=16, warmup=2)
  task = TextTask()
  whole = Trainer(build_lm(config, 0), task, train)
  whole.train(progress=False)
  first = Trainer(build_lm(config, 0), task, train)
  first.train(until=3, progress=False)
  save_checkpoint(first, tmp_path / "run")
  resumed = load_trainer(tmp_path / "run")
  assert isinstance(resumed.model, st.LanguageModel) and resumed.task == task
  resumed.train(progress=False)
  assert resumed.losses == whole.losses
  for (k, a), b in zip(get_state_dict(whole.model).items(), get_state_dict(resumed.model).values()): assert (a.numpy() == b.numpy()).all(), k
