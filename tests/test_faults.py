"""Fault safety: runs killed mid-way, and bad input everywhere (command line, checkpoint files and configs)."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ssmax_tiny import checkpoint

# one worker runs the module (make test: --dist loadgroup), so the trained fixture is trained once
pytestmark = pytest.mark.xdist_group("faults")

ROOT = Path(__file__).parent.parent
SMALL = ["--hidden", "16", "--heads", "2", "--layers", "1", "--train-length", "12", "--batch-size", "8", "--no-progress"]


def _cli(*args, timeout=600):
  return subprocess.run([sys.executable, "-m", "ssmax_tiny", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _files(d: Path) -> dict:
  return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def _step(run: Path) -> int:
  try:
    return json.loads((run / "checkpoint.json").read_text())["step"]
  except (FileNotFoundError, json.JSONDecodeError, KeyError):
    return -1


@pytest.mark.slow   # 30 s each; make test keeps the atomic-save tests (test_train.py)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_leaves_a_loadable_checkpoint_and_resumes(tmp_path, sig):
  run = tmp_path / "run"
  proc = subprocess.Popen([sys.executable, "-m", "ssmax_tiny", "train", "--steps", "100000", "--ckpt-every", "1", "--out", str(run), *SMALL],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 300
    while _step(run) < 5 and time.time() < deadline and proc.poll() is None: time.sleep(0.05)
    assert _step(run) >= 5, "the run did not reach step 5"
    proc.send_signal(sig)          # checkpoints are written every step, so this often lands inside a save
    _, err = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None: proc.kill()
  if sig == signal.SIGINT: assert proc.returncode == 130 and "--resume" in err, err
  step = _step(run)
  _, meta = checkpoint.load(run)   # loadable: weights whole and matching their hash
  assert meta["step"] == step >= 5
  leftovers = [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
  weights = [p.name for p in run.iterdir() if p.suffix == ".safetensors"]
  assert len(weights) <= 2 and len(leftovers) <= 1   # at most the file being written when the kill came
  out = _cli("train", "--steps", str(step + 2), "--resume", "--out", str(run), *SMALL)
  assert out.returncode == 0, out.stderr
  assert f"resumed {run} at step {step}" in out.stdout and f"step {step + 2}:" in out.stdout
  assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")], "the next save removes what the killed one left"
  assert len([p for p in run.iterdir() if p.suffix == ".safetensors"]) == 1


BAD_CLI = [
  (["train", "--steps", "-1"], "must be >= 1"),
  (["train", "--steps", "ten"], "'ten' is not an integer"),
  (["train", "--hidden", "0"], "must be >= 1"),
  (["train", "--hidden", "18", "--heads", "4"], "hidden_size=18 must be divisible by num_heads=4"),
  (["train", "--dropout", "1.5"], "dropout=1.5 must be a finite number in [0, 1)"),
  (["train", "--lr", "-0.1"], "lr=-0.1 must be a finite number > 0"),
  (["train", "--lr", "nan"], "lr=nan must be a finite number > 0"),
  (["train", "--task", "copy"], "invalid choice: 'copy'"),
  (["train", "--attention", "linear"], "invalid choice: 'linear'"),
  (["eval", "--lengths", "64,abc"], "is not a comma-separated list of integers"),
  (["eval", "--lengths", "0"], "every value must be an integer >= 1"),
  (["demo", "--positionals", "none,alibi"], "--positionals: 'none,alibi': entry 'alibi' is not one of none, rope"),
  (["demo", "--seeds", "-1"], "every value must be an integer >= 0"),
  (["fading", "--max-n", "0"], "must be >= 1"),
  (["bogus"], "invalid choice: 'bogus'"),
]


@pytest.mark.parametrize("args, words", BAD_CLI, ids=[" ".join(a) for a, _ in BAD_CLI])
def test_bad_command_line_values_give_a_clear_error_and_write_nothing(tmp_path, args, words):
  if args[0] in ("train", "demo", "fading"): args = [*args, "--out", str(tmp_path / "out")]
  if args[0] == "eval": args = [*args, "--checkpoint", str(tmp_path / "nothing")]
  out = _cli(*args, timeout=120)
  assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
  assert words in out.stderr, out.stderr
  assert "Traceback" not in out.stderr
  assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  run = tmp_path_factory.mktemp("ckpt") / "run"
  out = _cli("train", "--steps", "2", "--out", str(run), *SMALL)
  assert out.returncode == 0, out.stderr
  return run


def _damage_config(jp: Path, edit):
  record = json.loads(jp.read_text())
  edit(record)
  jp.write_text(json.dumps(record))


BAD_CONFIGS = [
  (lambda r: r["model"].update(foo=1), "unknown option(s) foo"),
  (lambda r: r["model"].update(hidden_size="16"), "hidden_size='16' must be an int >= 1"),
  (lambda r: r["model"].update(num_layers=-1), "num_layers=-1 must be an int >= 1"),
  (lambda r: r["model"].update(attention="flash"), "attention='flash'"),
  (lambda r: r["task"].update(num_keys=0), "num_keys=0"),
  (lambda r: r["train"].update(bogus=True), "unknown training option(s) bogus"),
  (lambda r: r.pop("model"), "lacks the field 'model'"),
  (lambda r: r.update(format="other"), "is not an ssmax_tiny checkpoint"),
  (lambda r: r.update(size=1), "truncated"),
  (lambda r: r["model"].update(hidden_size=32), "does not match the model"),
]


@pytest.mark.parametrize("edit, words", BAD_CONFIGS, ids=[w for _, w in BAD_CONFIGS])
def test_bad_checkpoint_configs_give_a_clear_error_and_overwrite_nothing(trained, tmp_path, edit, words):
  run = tmp_path / "run"
  run.mkdir()
  for p in trained.iterdir(): (run / p.name).write_bytes(p.read_bytes())
  _damage_config(run / "checkpoint.json", edit)
  before = _files(run)
  for args in (["eval", "--checkpoint", str(run), "--lengths", "12", "--samples", "4"], ["train", "--resume", "--out", str(run), *SMALL]):
    out = _cli(*args, timeout=300)
    assert out.returncode == 2 and words in out.stderr, (args, out.stderr)
    assert "Traceback" not in out.stderr
  assert _files(run) == before


@pytest.mark.parametrize("cut", [0, 8, 100, -1])
def test_truncated_weights_files(trained, tmp_path, cut):
  run = tmp_path / "run"
  run.mkdir()
  for p in trained.iterdir(): (run / p.name).write_bytes(p.read_bytes())
  weights = next(run.glob("*.safetensors"))
  data = weights.read_bytes()
  weights.write_bytes(data[:cut] if cut >= 0 else data + b"junk")
  with pytest.raises(checkpoint.CheckpointError, match="truncated"):
    checkpoint.load(run)


def test_safetensors_that_pass_the_hash_but_are_not_safetensors(tmp_path):
  run = tmp_path / "run"; run.mkdir()
  garbage = b"\xff" * 64
  (run / "w.safetensors").write_bytes(garbage)
  import hashlib
  (run / "checkpoint.json").write_text(json.dumps(dict(format=checkpoint.FORMAT, weights="w.safetensors", size=64,
                                                        sha256=hashlib.sha256(garbage).hexdigest(), model={})))
  with pytest.raises(checkpoint.CheckpointError, match="not a readable safetensors file"):
    checkpoint.load(run)
