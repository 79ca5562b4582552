"""Sweeps (ssmax_tiny/sweep.py): every runner gives the same numbers, a killed sweep finishes without running a cell
twice, a failing cell fails alone. The grid is the demo's, tiny: compiling, not training, is most of each cell's time."""
import functools
import json
import tempfile
import time
from pathlib import Path

import pytest

from ssmax_tiny import cli, demo
from ssmax_tiny.model import SSMaxConfig
from ssmax_tiny.sweep import STATE, key, load_state, run_sweep
from ssmax_tiny.train import TrainConfig, load_token_model

# one worker runs the module (make test: --dist loadgroup), so the in-process results are computed once there
pytestmark = pytest.mark.xdist_group("sweep")

MODEL = SSMaxConfig(embed_dim=16, hidden_size=16, num_heads=2, num_layers=1, dropout=0.1, window_size=12)  # dropout: its RNG too
TRAIN = TrainConfig(steps=3, batch_size=4, train_length=12, warmup=1)


def grid(seeds=(0,)) -> list[dict]:
  return demo.demo_cells(MODEL, TRAIN, seeds=seeds, lengths=(12,), samples=8, positionals=("none",))


def bad_cell() -> dict:
  cell = grid()[0]
  return dict(cell, model=dict(cell["model"], num_heads=3))  # 16 is not divisible by 3: the cell's own model refuses it


def measured(sweep: dict) -> list:
  """What a cell measured (accuracy, losses, learned s): everything but where and how long it ran."""
  return [r["runs"] if r is not None else None for r in sweep["results"]]


@functools.cache  # not a module fixture: pytest tears those down whenever another module's test runs in between
def _in_process() -> tuple[Path, dict]:
  out = Path(tempfile.mkdtemp(prefix="sweep-"))
  return out, run_sweep(demo.run_cell, grid(), out, progress=False)


@pytest.fixture
def in_process(): return _in_process()


def ray_processes() -> set[int]:
  """Processes named ray::... (Ray's workers, ray::IDLE when between tasks)."""
  pids = set()
  for d in Path("/proc").glob("[0-9]*"):
    try:
      if (d / "cmdline").read_bytes().startswith(b"ray::"): pids.add(int(d.name))
    except OSError: pass
  return pids


def test_in_process_sweep_records_each_cell(in_process):
  out, sweep = in_process
  assert sweep["failed"] == {} and len(sweep["ran"]) == 2
  softmax, ssmax = (r["runs"][0] for r in sweep["results"])
  assert (softmax["model"], ssmax["model"]) == ("softmax", "ssmax") and softmax["learned_s"] == [] and len(ssmax["learned_s"]) == 1
  assert softmax["final_loss"] != ssmax["final_loss"]  # two models, not one result twice
  for cell, r in zip(grid(), sweep["results"]):
    assert r["device"] and r["seconds"] > 0
    model, _, meta = load_token_model(r["checkpoint"])  # the checkpoint is the cell's trained model
    assert meta["step"] == TRAIN.steps and model.config.attention == cell["model"]["attention"]
  assert {k: v["result"] for k, v in load_state(out).items()} == {key(c): r for c, r in zip(grid(), sweep["results"])}


@pytest.mark.slow   # each cell a fresh process: 20 s; make test keeps the in-process runner
def test_a_pool_of_processes_gives_identical_results_and_a_failing_cell_fails_alone(in_process, tmp_path):
  sweep = run_sweep(demo.run_cell, grid() + [bad_cell()], tmp_path, jobs=2, progress=False)
  assert measured(sweep)[:2] == measured(in_process[1])
  assert sweep["results"][2] is None and list(sweep["failed"]) == [key(bad_cell())]
  assert "exit status 1" in sweep["failed"][key(bad_cell())] and "num_heads=3" in sweep["failed"][key(bad_cell())]
  assert set(load_state(tmp_path)) == {key(c) for c in grid()}  # the failed cell is not stored: the next run tries it again


@pytest.mark.slow   # a local Ray instance: 70 s
def test_ray_gives_identical_results_and_a_failing_cell_fails_alone(in_process, tmp_path):
  pytest.importorskip("ray", reason="Ray is the optional extra 'ray' (make test installs it)")
  before = ray_processes()
  sweep = run_sweep(demo.run_cell, grid() + [bad_cell()], tmp_path, ray="local", progress=False)  # starts a local Ray instance, then stops it
  assert measured(sweep)[:2] == measured(in_process[1])
  assert sweep["results"][2] is None and "num_heads=3" in sweep["failed"][key(bad_cell())]
  for _ in range(20):  # Ray's workers exit within moments of the shutdown; none may stay behind
    if not ray_processes() - before: break
    time.sleep(0.5)
  assert not ray_processes() - before


def test_a_killed_sweep_runs_only_the_missing_cells_and_ends_as_an_uninterrupted_one(in_process, tmp_path):
  def kill_after_first(k, result, error): raise KeyboardInterrupt  # the driver dies between two cells
  with pytest.raises(KeyboardInterrupt): run_sweep(demo.run_cell, grid(), tmp_path, progress=False, on_cell=kill_after_first)
  assert list(load_state(tmp_path)) == [key(grid()[0])]  # sweep.json is whole: the first cell, nothing else
  again = run_sweep(demo.run_cell, grid(), tmp_path, progress=False)
  assert again["ran"] == [key(grid()[1])] and measured(again) == measured(in_process[1])
  assert run_sweep(demo.run_cell, grid(), tmp_path, progress=False)["ran"] == []


CLI = ["demo", "--steps", "3", "--batch-size", "4", "--warmup", "1", "--lengths", "12", "--samples", "8", "--positionals", "none",
       "--hidden", "16", "--heads", "2", "--layers", "1", "--dropout", "0.1", "--train-length", "12", "--no-progress"]


def test_the_demo_command_runs_the_grid_as_the_library_does(in_process, tmp_path, capsys):
  assert cli.main([*CLI, "--seeds", "0", "--finetune", "2", "--out", str(tmp_path)]) == 0
  stdout = capsys.readouterr().out
  assert "| none | softmax |" in stdout and "| none | ssmax |" in stdout and "softmax -> ssmax (+2 steps)" in stdout
  results = json.loads((tmp_path / "results.json").read_text())
  assert [r["model"] for r in results["runs"]] == ["softmax", "ssmax", "softmax -> ssmax (+2 steps)"]
  assert [{k: v for k, v in r.items() if k not in ("device", "seconds", "peak_rss_mib")} for r in results["runs"][:2]] == \
      [run for runs in measured(in_process[1]) for run in runs]
  assert (tmp_path / "fading.json").exists() and len(load_state(tmp_path)) == 3


def test_the_command_line_reports_failed_cells_and_exits_non_zero(tmp_path, monkeypatch, capsys):
  def broken(cell, progress=False): raise RuntimeError(f"device FOO cannot open (seed {cell['train']['seed']})")
  monkeypatch.setattr(demo, "run_cell", broken)
  assert cli.main([*CLI, "--seeds", "7", "--out", str(tmp_path)]) == 1
  err = capsys.readouterr().err
  assert "2 of 2 cell(s) failed" in err and "RuntimeError: device FOO cannot open (seed 7)" in err and "run the same command again" in err
  assert load_state(tmp_path) == {} and not (tmp_path / "results.json").exists()


def test_runner_options_are_checked(tmp_path):
  with pytest.raises(ValueError, match="jobs=0 must be an int >= 1"): run_sweep(demo.run_cell, grid(), tmp_path, jobs=0)
  with pytest.raises(ValueError, match="choose one runner"): run_sweep(demo.run_cell, grid(), tmp_path, jobs=2, ray="local")
  with pytest.raises(ValueError, match="the same cell twice"): run_sweep(demo.run_cell, grid() * 2, tmp_path)
  (tmp_path / STATE).write_text("{not json")
  with pytest.raises(ValueError, match="is not a sweep's state"): run_sweep(demo.run_cell, grid(), tmp_path)


def test_a_cell_is_named_by_what_it_is():
  cell = grid()[0]
  assert key(cell) == key(json.loads(json.dumps(cell, sort_keys=True)))  # the order of keys does not matter
  assert key(cell) != key(dict(cell, train=dict(cell["train"], seed=1)))
