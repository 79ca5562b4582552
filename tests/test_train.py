"""Training: learning, determinism, checkpoints that round-trip and resume exactly, and damaged checkpoints."""
import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tinygrad import Context, Tensor
from tinygrad.nn.state import get_state_dict

from ssmax_tiny import checkpoint, cli
from ssmax_tiny.model import SSMaxConfig
from ssmax_tiny.tasks import batch_rng, make_task
from ssmax_tiny.train import TrainConfig, Trainer, build_token_model, load_token_model, load_trainer, save_checkpoint

ROOT = Path(__file__).parent.parent
TASK = make_task("needle", num_keys=4, num_values=4, num_filler=4)


def _trainer(seed=0, steps=6, dropout=0.1, cls=Trainer, **model):
  mc = SSMaxConfig(embed_dim=16, hidden_size=16, num_heads=2, num_layers=1, dropout=dropout, window_size=12, **model)
  tc = TrainConfig(steps=steps, batch_size=8, train_length=12, lr=1e-2, warmup=2, seed=seed)
  return cls(build_token_model(TASK, mc, seed), TASK, tc)


class _InputsAnew(Trainer):
  """Each step's inputs as new Tensors from numpy, as before a Trainer kept its input buffers (Trainer._input)."""
  def _input(self, name, array, axis): return Tensor(array)


def _params(trainer):
  return {k: v.numpy().copy() for k, v in get_state_dict(trainer.model).items()}


def test_loss_falls_when_overfitting_one_batch():
  trainer = _trainer(steps=40, dropout=0.0)
  fixed = trainer.next_batch()
  trainer.next_batch = lambda: fixed
  losses = trainer.train(progress=False)
  assert losses[-1] < 0.2 * losses[0], losses


def test_training_is_deterministic_to_the_bit():
  # b makes its inputs anew each step; a writes each batch into buffers kept from its first step, which its TinyJit
  # must read anew: the same losses and weights to the bit
  a, b = _trainer(seed=3), _trainer(seed=3, cls=_InputsAnew)
  la, lb = a.train(progress=False), b.train(progress=False)
  assert la == lb
  (tokens, targets), again = a.next_batch(), a.next_batch()
  assert tokens is again[0] and targets is again[1] and a.lr_input() is a.lr_input()   # one buffer each, rewritten
  want = TASK.batch(batch_rng(3, a.step), 8, 12)
  np.testing.assert_array_equal(tokens.numpy(), want[0]); np.testing.assert_array_equal(targets.numpy(), want[1])
  assert a.lr_input().item() == np.float32(a.config.lr_at(a.step))
  pa, pb = _params(a), _params(b)
  for k in pa: np.testing.assert_array_equal(pa[k], pb[k])
  assert _trainer(seed=4).train(progress=False) != la


def test_s_gets_gradient_and_moves_in_training():
  trainer = _trainer(steps=5, per_head=True, learn_bias=True)
  trainer.train(progress=False)
  s = trainer.model.transformer.learned_s()
  assert all(abs(v - 1.0) > 1e-4 for layer in s for v in layer), s


def test_lr_warmup_is_applied():
  config = TrainConfig(steps=100, warmup=10, lr=1.0, min_lr_ratio=0.1)
  assert config.lr_at(0) == pytest.approx(0.1) and config.lr_at(9) == pytest.approx(1.0)
  assert config.lr_at(99) == pytest.approx(0.1, abs=1e-3) and config.lr_at(10) == pytest.approx(1.0)


def test_checkpoint_round_trips_exactly(tmp_path):
  trainer = _trainer()
  trainer.train(until=3, progress=False)
  path = save_checkpoint(trainer, tmp_path / "run")
  tensors, meta = checkpoint.load(tmp_path / "run")
  own, _ = trainer.state()
  assert set(tensors) == set(own)
  for k in own: np.testing.assert_array_equal(tensors[k].numpy(), own[k].numpy())
  assert meta["step"] == 3 and meta["losses"] == trainer.losses
  model, task, _ = load_token_model(path)
  x = Tensor(TASK.batch(np.random.default_rng(0), 4, 12)[0])
  np.testing.assert_array_equal(model(x).numpy(), trainer.model(x).numpy())


def test_checkpoint_files_get_the_ordinary_file_mode(tmp_path):
  old = os.umask(0o022)
  try:
    jp = Path(save_checkpoint(_trainer(), tmp_path / "run"))
  finally:
    os.umask(old)
  weights = jp.parent / json.loads(jp.read_text())["weights"]
  assert stat.S_IMODE(jp.stat().st_mode) == 0o644 and stat.S_IMODE(weights.stat().st_mode) == 0o644


def test_resume_equals_an_uninterrupted_run(tmp_path):
  straight = _trainer(seed=1)
  straight.train(progress=False)
  first = _trainer(seed=1)
  first.train(until=3, progress=False)
  save_checkpoint(first, tmp_path / "run")
  Tensor.manual_seed(12345)          # disturb the RNG: resume must restore it
  with Context(TRAINING=1): Tensor.rand(7).realize()
  resumed = load_trainer(tmp_path / "run")
  assert resumed.step == 3
  resumed.train(progress=False)
  assert resumed.losses == straight.losses
  ps, pr = _params(straight), _params(resumed)
  for k in ps: np.testing.assert_array_equal(ps[k], pr[k])


def _files(d: Path) -> dict:
  return {p.name: p.read_bytes() for p in d.iterdir()}


@pytest.mark.parametrize("damage", ["truncate", "flip", "json", "missing"])
def test_damaged_checkpoint_gives_a_clear_error_and_changes_nothing(tmp_path, damage):
  trainer = _trainer()
  trainer.train(until=2, progress=False)
  jp = Path(save_checkpoint(trainer, tmp_path / "run"))
  weights = jp.parent / json.loads(jp.read_text())["weights"]
  if damage == "truncate": weights.write_bytes(weights.read_bytes()[:-100])
  if damage == "flip":
    data = bytearray(weights.read_bytes()); data[-5] ^= 0xFF; weights.write_bytes(bytes(data))
  if damage == "json": jp.write_text(jp.read_text()[:40])
  if damage == "missing": weights.unlink()
  before = _files(tmp_path / "run")
  words = {"truncate": "truncated", "flip": "corrupted", "json": "not valid JSON", "missing": "missing"}[damage]
  with pytest.raises(checkpoint.CheckpointError, match=words): load_trainer(tmp_path / "run")
  assert _files(tmp_path / "run") == before


def test_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
  trainer = _trainer()
  trainer.train(until=2, progress=False)
  save_checkpoint(trainer, tmp_path / "run")
  before = _files(tmp_path / "run")
  trainer.train(until=3, progress=False)

  def disk_full(tensors, fn, metadata=None):  # writes part of the file, then fails as a full disk does
    Path(fn).write_bytes(b"partial")
    raise OSError(errno.ENOSPC, "No space left on device")
  monkeypatch.setattr(checkpoint, "safe_save", disk_full)
  with pytest.raises(checkpoint.CheckpointError, match="No space left on device.*previous checkpoint is untouched"):
    save_checkpoint(trainer, tmp_path / "run")
  assert _files(tmp_path / "run") == before, "a temporary file was left, or the previous checkpoint changed"
  assert load_trainer(tmp_path / "run").step == 2


def test_unwritable_checkpoint_path_gives_a_clear_error(tmp_path):
  (tmp_path / "file").write_text("not a directory")
  with pytest.raises(checkpoint.CheckpointError, match="cannot create the checkpoint directory"):
    save_checkpoint(_trainer(), tmp_path / "file" / "run")


def test_loading_a_checkpoint_into_another_model_names_the_mismatch(tmp_path):
  trainer = _trainer()
  save_checkpoint(trainer, tmp_path / "run")
  tensors, meta = checkpoint.load(tmp_path / "run")
  other = _trainer(per_head=True)
  with pytest.raises(ValueError, match=r"model.transformer.blocks.0.attn.ssmax.s: expected \(2, 1, 1\)"):
    other.load_state(tensors, meta)
  del tensors["model.head.bias"]
  with pytest.raises(ValueError, match="missing: model.head.bias"): trainer.load_state(tensors, meta)


def _cli(*args, cwd):
  return subprocess.run([sys.executable, "-m", "ssmax_tiny", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


SMALL = ["--hidden", "16", "--heads", "2", "--layers", "1", "--train-length", "12", "--batch-size", "8", "--no-progress"]


def _in_process(capsys):
  def run(*args) -> tuple[int, str, str]:  # in this process: its kernels are compiled once
    try: rc = cli.main(list(args))
    except SystemExit as e: rc = e.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err
  return run


def test_cli_train_eval_resume_smoke(tmp_path, capsys):  # the demo command: tests/test_sweep.py
  out = _cli("train", "--steps", "4", "--ckpt-every", "2", "--out", str(tmp_path / "r"), *SMALL, cwd=ROOT)  # as a user runs it
  assert out.returncode == 0, out.stderr
  assert "checkpoint" in out.stdout and (tmp_path / "r" / "checkpoint.json").exists()

  run = _in_process(capsys)  # the rest in this process
  rc, _, err = run("train", "--steps", "4", "--out", str(tmp_path / "r"), *SMALL)
  assert rc != 0 and "--resume" in str(rc) + err
  rc, stdout, err = run("train", "--steps", "6", "--resume", "--out", str(tmp_path / "r"), *SMALL)
  assert rc == 0 and "resumed" in stdout and "step 6" in stdout, err
  rc, stdout, err = run("eval", "--checkpoint", str(tmp_path / "r"), "--lengths", "12,24", "--samples", "8", "--json", str(tmp_path / "e.json"))
  assert rc == 0 and "length    24" in stdout, err
  assert set(json.loads((tmp_path / "e.json").read_text())["accuracy"]) == {"12", "24"}
  rc, _, err = run("eval", "--checkpoint", str(tmp_path / "nothing"))
  assert rc == 2 and "no checkpoint at" in err


@pytest.mark.slow   # 30 s; make test runs train, eval and resume through the command line (above)
def test_cli_lm_smoke(tmp_path, capsys):
  run = _in_process(capsys)
  rc, stdout, err = run("lm", "--steps", "2", "--batch-size", "2", "--train-length", "72", "--factor", "2", "--hidden", "16", "--heads", "2",
                        "--sample", "8", "--no-progress", "--out", str(tmp_path / "lm"))
  assert rc == 0 and "degradation" in stdout and "sample (temperature 0.8): The pass key is" in stdout, err
  assert set(json.loads((tmp_path / "lm" / "eval.json").read_text())["buckets"]) == {"[0,36)", "[36,72)", "[72,144)"}


@pytest.mark.slow   # 30 s; make test runs the demo's grid through the command line (test_sweep.py)
def test_cli_lm_compare_smoke(tmp_path, capsys):
  run = _in_process(capsys)
  rc, stdout, err = run("lm-compare", "--attentions", "ssmax", "--positionals", "none", "--seeds", "0", "--steps", "2", "--batch-size", "2",
                        "--train-length", "72", "--factor", "2", "--windows", "2", "--samples", "1", "--hidden", "16", "--heads", "2",
                        "--no-progress", "--out", str(tmp_path / "cmp"))
  assert rc == 0 and "| none | ssmax |" in stdout, err
  runs = json.loads((tmp_path / "cmp" / "results.json").read_text())["runs"]
  assert [(r["attention"], r["seed"]) for r in runs] == [("ssmax", 0)] and (tmp_path / "cmp" / "sweep.json").exists()
  assert all((tmp_path / "cmp" / f).exists() for f in ("loss_by_position.png", "passkey.png", "attention_on_key.png", "learned_s.png"))
