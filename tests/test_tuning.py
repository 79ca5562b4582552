"""Tuned kernels in everyday use (ssmax_tiny/pocl/tuning.py, part of the OpenCL-on-CPU kit): a step that `make tune`
searched is recognised and read back from tinygrad's cache without a new search; any other step keeps the heuristics and
never starts a search. The search itself runs on the CL device with the kit, in a fresh process."""
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest
from tinygrad import Device

from ssmax_tiny import demo, lm
from ssmax_tiny.model import SSMaxConfig
from ssmax_tiny.pocl import tuning, vectorize
from ssmax_tiny.text import TextTask
from ssmax_tiny.train import TrainConfig

ON_CL_CPU = Device.DEFAULT.split(":")[0] == "CL" and vectorize.on_cpu(Device.DEFAULT)
MODEL = SSMaxConfig(embed_dim=16, hidden_size=16, num_heads=2, num_layers=1, dropout=0.0, window_size=16, positional="rope")
TRAIN = TrainConfig(steps=3, batch_size=2, train_length=16, lr=3e-3, warmup=1)


def test_signature_keeps_what_changes_the_kernels_only():
  cells = lm.lm_cells(MODEL, TRAIN, task=TextTask(), attentions=("softmax", "ssmax"), positionals=("rope",), seeds=(0, 1))
  sigs = [lm.cell_signature(c) for c in cells]
  assert sigs[0] == sigs[1] and sigs[2] == sigs[3]          # seeds share a step
  assert sigs[0] != sigs[2]                                  # softmax and SSMax do not
  base = cells[0]
  for change in (dict(steps=99, lr=1e-3, warmup=7, seed=5),):  # schedule and seed: the same kernels
    assert lm.cell_signature(dict(base, train=dict(base["train"], **change))) == sigs[0]
  for change in (dict(batch_size=4), dict(train_length=32), dict(weight_decay=0.0), dict(clip=0.5)):
    assert lm.cell_signature(dict(base, train=dict(base["train"], **change))) != sigs[0], change
  demo_sig = demo.cell_signature(demo.demo_cells(replace(MODEL, positional="none"), TRAIN, seeds=(0,), lengths=(16,), positionals=("none",))[0])
  assert json.loads(demo_sig)["head"]["kind"] == "classifier"


SCRIPT = textwrap.dedent("""
  import json, sys
  import tinygrad.codegen.opt.search as search
  from ssmax_tiny import lm, pocl
  from ssmax_tiny.pocl import tuning
  pocl.install()
  from ssmax_tiny.model import SSMaxConfig
  from ssmax_tiny.text import TextTask
  from ssmax_tiny.train import TrainConfig
  model = SSMaxConfig(embed_dim=16, hidden_size=16, num_heads=2, num_layers=1, dropout=0.0, window_size=16, positional="rope")
  train = TrainConfig(steps=3, batch_size=2, train_length=16, lr=3e-3, warmup=1)
  grid = dict(attentions=("ssmax",), positionals=("rope",), seeds=(0,))
  cells = lm.lm_cells(model, train, task=TextTask(), **grid)
  timed = []
  original = search._time_program
  def counting(*args, **kwargs):
    timed.append(1)
    return original(*args, **kwargs)
  search._time_program = counting
  looked = []                                  # kernels lowered through BEAM (a cache hit, or a search)
  original_beam = search.beam_search
  def beam(*args, **kwargs):
    looked.append(1)
    return original_beam(*args, **kwargs)
  search.beam_search = beam
  guarded = []                                 # searched kernels whose BEAM choice was timed against the heuristics'
  original_guard = tuning.faster_of
  def guard(*args, **kwargs):
    guarded.append(1)
    return original_guard(*args, **{**kwargs, "rounds": 1})   # one round: what is tested is that it runs, not its timing
  tuning.faster_of = guard
  def plain():
    t = lm.cell_trainer(cells[0])
    losses = [t.train_step() for _ in range(3)]
    return dict(tuned=t.capture_notes["tuned"], summary=tuning.summary([tuning.trainer_signature(t)]), losses=losses, timed=len(timed),
                looked=len(looked), kernels=t.capture_notes)
  out = dict(before=plain())
  if sys.argv[1] == "search":
    tuning.SEARCH_MIN_WORK = 1 << 15           # this model's kernels are all small: search its few largest
    out["searched"] = lm.compare(model, train, task=TextTask(), tune=1, progress=False, **grid)["tuned"]
    out["timed"], out["guarded"] = len(timed), len(guarded)
  else:                                        # then the model's code changes: other kernels, the same signature
    from ssmax_tiny.model import Linear
    Linear.HAND_BACKWARD_MIN = 1
  out["after"] = plain()
  print(json.dumps(out))
""")


def run(tmp_path, what: str) -> dict:
  # a narrow, one-round search (no upcasts or local sizes past 1, stop after the first round) keeps the test short:
  # what is tested is that the searched kernels are found again, not how good they are
  env = {**os.environ, "DEV": "CL", "CACHEDB": str(tmp_path / "cache.db"), "BEAM_UPCAST_MAX": "2", "BEAM_LOCAL_MAX": "1",
         "BEAM_MIN_PROGRESS": "1e9"}
  env.pop("JITBEAM", None); env.pop("BEAM", None)
  proc = subprocess.run([sys.executable, "-c", SCRIPT, what], env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow   # a BEAM search: a minute
@pytest.mark.skipif(not ON_CL_CPU, reason="make tune is part of the OpenCL-on-CPU kit (DEV=CL on a CPU)")
def test_a_searched_step_is_used_without_searching_again(tmp_path):
  first = run(tmp_path, "search")
  plain = first["before"]                               # nothing recorded yet: heuristics, and no search
  assert plain["tuned"] is None and plain["looked"] == 0 and "heuristics" in plain["summary"]
  assert first["searched"] == 1 and first["timed"] > 0  # compare(tune=1): one step, its candidates timed
  assert first["guarded"] > 0                           # and each searched kernel's choice against the heuristics'
  assert first["after"]["tuned"] == 1 and "for 1 of 1" in first["after"]["summary"]
  later = run(tmp_path, "plain")
  again = later["before"]                               # a later run: the searched kernels read from the cache, no search
  assert again["tuned"] == 1 and again["looked"] > 0 and again["timed"] == 0 and again["kernels"]["hits"] > 0
  # the tuned kernels compute the same step (a kernel's loop order may move the last bits only)
  assert again["losses"] == pytest.approx(plain["losses"], rel=1e-5)
  edited = later["after"]                               # kernels the cache lacks get the heuristics, never a search
  assert edited["tuned"] == 1 and edited["timed"] == 0 and edited["kernels"]["misses"] > 0  # its new kernels, unsearched
  assert edited["losses"] == pytest.approx(plain["losses"], rel=1e-5)
  assert json.loads((tmp_path / "ssmax_tiny_tuned.json").read_text())[0]["beam"] == 1


def test_record_and_lookup(tmp_path, monkeypatch):
  monkeypatch.setattr(tuning, "CACHEDB", str(tmp_path / "cache.db"))
  assert tuning.tuned_beam("sig") is None                # no record
  tuning.record_tuned("sig", 2)
  assert tuning.tuned_beam("sig") is None                # a record without tinygrad's cache beside it is not used
  (tmp_path / "cache.db").write_bytes(b"")
  assert tuning.tuned_beam("sig") == 2 and tuning.tuned_beam("other") is None
  tuning.record_tuned("sig", 1)                          # searched again: replaced, not duplicated
  assert tuning.tuned_beam("sig") == 1 and len(json.loads(tuning.record_path().read_text())) == 1


def test_tuning_refuses_bad_widths_and_a_trainer_without_the_kit():
  with pytest.raises(ValueError, match="beam"): tuning.search(None, 0)
  trainer = lm.cell_trainer(lm.lm_cells(MODEL, TRAIN, task=TextTask(), attentions=("softmax",), positionals=("rope",), seeds=(0,))[0])
  if not ON_CL_CPU:
    with pytest.raises(ValueError, match="part of the OpenCL-on-CPU kit"): tuning.search(trainer, 1)


def test_the_faster_of_beams_choice_and_the_heuristics_is_kept(monkeypatch):
  # faster_of's decision with the compiler and the timer replaced: a "program" is the schedule, its time an attribute
  import tinygrad.codegen.opt.search as search

  class Schedule:
    def __init__(self, t, compiles=True): self.t, self.compiles = t, compiles
  timings = []
  monkeypatch.setattr(search, "_try_compile", lambda x: (x[0], (x[1], 0.0) if x[1].compiles else None))
  monkeypatch.setattr(search, "_ensure_buffer_alloc", lambda bufs: bufs)
  monkeypatch.setattr(search, "_time_program", lambda prg, *a, **k: timings.append(prg) or [prg.t, prg.t * 2, prg.t * 3])
  beam, heuristics = Schedule(2.0), Schedule(1.0)
  assert tuning.faster_of(beam, heuristics, [], {}, True) is heuristics
  assert timings[:2] == [beam, heuristics] and len(timings) == 10   # alternating, 5 rounds each
  assert tuning.faster_of(Schedule(1.0), slow := Schedule(1.5), [], {}, True) is not slow
  tie = Schedule(1.0)
  assert tuning.faster_of(tie, Schedule(1.0), [], {}, True) is tie               # BEAM's choice wins a tie
  assert tuning.faster_of(beam, Schedule(0.1, compiles=False), [], {}, True) is beam
  assert tuning.faster_of(Schedule(0.1, compiles=False), heuristics, [], {}, True) is heuristics
