"""Tuned kernels in everyday use: `make tune` searches a training step's kernels once, and later runs of that step use them.

tinygrad's BEAM search (tinygrad/codegen/opt/search.py `beam_search`) times candidate schedules for each kernel and
keeps the fastest in tinygrad's cache (cache.db, `CACHEDB`), keyed by kernel, device and search width. A later run reads
them back only under BEAM=n or JITBEAM=n, and then searches any kernel the cache lacks, for minutes on a CPU.

Here `make tune` (`--tune-kernels` of `lm-compare` and `demo`: `tune_cells`) searches the large kernels of each distinct
training step of a grid and records beside tinygrad's cache the step's signature (device, tinygrad's version, model
config and head, batch shape, optimizer constants) and the width. With the kit installed, a Trainer whose step has a
recorded signature captures its TinyJit under BEAM=n, as JITBEAM=n would (`capturing`); a kernel missing from the cache
(the model was edited since) gets tinygrad's heuristics, never a search (`lowering`). Each searched kernel's choice is
timed against the heuristics' and the faster kept (`faster_of`), since BEAM starts from the bare kernel and never tries
the heuristics' combination. This reaches tinygrad's private search functions, which is why it lives in the kit.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from importlib.metadata import version
from pathlib import Path

from tinygrad import Context, Device
from tinygrad.helpers import CACHEDB, CACHELEVEL, diskcache_get, diskcache_put, prod
from tinygrad.uop.ops import Ops
from tqdm.auto import tqdm

from ssmax_tiny.checkpoint import atomic_write_text
from ssmax_tiny.checks import check_int
from ssmax_tiny.pocl.vectorize import RENDERERS

# what changes a training step's kernels; the learning rate is an input of each step (its schedule: lr, warmup,
# min_lr_ratio, steps), and the seed changes no kernel
STEP_FIELDS = ("batch_size", "train_length", "betas", "weight_decay", "clip", "checkpoint")


def record_path() -> Path:
  """The record lives beside tinygrad's cache (removing one removes the other's use)."""
  return Path(CACHEDB).with_name("ssmax_tiny_tuned.json")


def step_signature(config, head: dict, train_config, device: str) -> str:
  """The canonical JSON of what a training step's kernels depend on: the model's SSMaxConfig (but its initial s) and
  head options (`head_options()`), the TrainConfig's STEP_FIELDS, the device and tinygrad's version."""
  train = {f: getattr(train_config, f) for f in STEP_FIELDS}
  train["betas"] = list(train["betas"])
  model = {k: v for k, v in config.to_dict().items() if k != "init_s"}  # a starting value, not a kernel
  sig = dict(device=device, tinygrad=version("tinygrad"), model=model, head=head, train=train)
  return json.dumps(sig, sort_keys=True)


def _load() -> list[dict]:
  try: return json.loads(record_path().read_text())
  except (OSError, ValueError): return []


def tuned_beam(signature: str) -> int | None:
  """The BEAM width `make tune` searched this step with, or None (not searched, or tinygrad's cache gone or off)."""
  if CACHELEVEL < 1 or not os.path.exists(CACHEDB): return None
  for entry in _load():
    if entry.get("signature") == signature: return int(entry["beam"])
  return None


# `make tune` searches only kernels of at least this many loop iterations (the product of the kernel's full shape): the
# matmuls, attention and their gradients. Elementwise kernels and the optimizer's updates keep the heuristics: on this
# machine a search takes about half a minute per kernel, and a step has hundreds of small ones with little to gain.
SEARCH_MIN_WORK = 1 << 20


@contextlib.contextmanager
def cached_beam(beam: int, search_min_work: int | None = None):
  """BEAM=beam for the kernels compiled inside (a TinyJit's capture), lowered as `lowering` says."""
  with lowering(search_min_work) as counts, Context(BEAM=beam): yield counts


@contextlib.contextmanager
def lowering(search_min_work: int | None = None):
  """How kernels compiled inside under BEAM >= 1 (or a TinyJit's capture under JITBEAM) are lowered. With
  search_min_work=None a kernel's searched choice is read from tinygrad's cache, and a kernel not there gets tinygrad's
  heuristics instead of a search; with a number, kernels of at least that much work are searched (or read from the
  cache) and then timed against the heuristics' choice, the faster kept in the cache (faster_of); the others get the
  heuristics. Yields counts {"hits", "misses", "searched", "heuristics": searched kernels where the heuristics won}.

  tinygrad lowers a kernel with `beam_search` when BEAM >= 1 (tinygrad/codegen/opt/postrange.py `apply_opts`), which
  returns the cached choice or searches; the wrapper asks the cache first, with beam_search's own key
  (tinygrad/codegen/opt/search.py), and calls `hand_coded_optimizations` where apply_opts would without BEAM.

  Why the heuristics are timed too: beam_search starts from the bare kernel and grows it one choice a round, keeping
  the `beam` best; the heuristics' choice (several upcasts, an unroll and local sizes at once) is not among its
  candidates. With BEAM=1 and 2 on this machine it settled on matmul schedules slower than the heuristics' (a
  [2048, 64] x [64, 64] product: 0.65 ms by the search's clock, 1.0 to 1.3 ms in the step, 0.51 ms for the heuristics'),
  and make lm's tuned step had 7 such kernels."""
  import tinygrad.codegen.opt.search as search
  from tinygrad.codegen.opt.heuristic import hand_coded_optimizations
  original, counts = search.beam_search, {"hits": 0, "misses": 0, "searched": 0, "heuristics": 0}

  def heuristics(s):
    return s if any(u.op is Ops.STAGE for u in s.ast.backward_slice) else hand_coded_optimizations(s)

  def lower(s, rawbufs, var_vals, amt, allow_test_size=True, disable_cache=False):
    key = {"ast": s.ast.key, "amt": amt, "allow_test_size": allow_test_size, "device": s.ren.target.device, "suffix": s.ren.suffix}
    searching = search_min_work is not None and prod(s.full_shape) >= search_min_work
    if diskcache_get("beam_search", key) is not None: counts["hits"] += 1
    elif searching: counts["searched"] += 1
    else:
      counts["misses"] += 1
      return heuristics(s)
    found = original(s, rawbufs, var_vals, amt, allow_test_size)
    if not searching: return found
    # BEAM starts from the bare kernel and never times the heuristics' choice; keep that where it is faster (faster_of)
    h = heuristics(s.copy())
    kept = found if h.applied_opts == found.applied_opts else faster_of(found, h, rawbufs, var_vals, allow_test_size)
    if kept is not found:
      counts["heuristics"] += 1
      diskcache_put("beam_search", key, list(kept.applied_opts))
    return kept

  search.beam_search = lower
  try: yield counts
  finally: search.beam_search = original


def faster_of(a, b, rawbufs, var_vals, allow_test_size: bool, rounds: int = 5):
  """Of two schedules of one kernel (tinygrad Schedulers), the faster, timed as beam_search times its candidates
  (search.py `_time_program`: the same buffers and test size), in alternating rounds so that a slow spell of the machine
  reaches both; a round's time is the best of 3 runs, and the median round decides. `a` wins ties and the cases where
  `b` does not compile."""
  import tinygrad.codegen.opt.search as search
  progs = [search._try_compile((0, k))[1] for k in (a, b)]
  if progs[1] is None: return a
  if progs[0] is None: return b
  rawbufs = search._ensure_buffer_alloc(rawbufs)
  times: list[list[float]] = [[], []]
  for _ in range(rounds):
    for i, (prg, _) in enumerate(progs):
      times[i].append(min(search._time_program(prg, var_vals, rawbufs, allow_test_size=allow_test_size, cnt=3)))
  return b if sorted(times[1])[rounds // 2] < sorted(times[0])[rounds // 2] else a


def summary(signatures: list[str]) -> str:
  """One line for the screen: how many of these training steps run kernels that `make tune` searched."""
  beams = [tuned_beam(s) for s in signatures]
  tuned = [b for b in beams if b]
  if not tuned: return "tinygrad's heuristics for every training step (`make tune` searches faster kernels once)"
  return f"make tune's kernels (BEAM={max(tuned)}) for {len(tuned)} of {len(beams)} training steps"


def record_tuned(signature: str, beam: int) -> Path:
  """Note that this step's kernels were searched with BEAM=beam and are in tinygrad's cache (written atomically)."""
  entries = [e for e in _load() if e.get("signature") != signature]
  entries.append(dict(signature=signature, beam=int(beam), when=time.strftime("%Y-%m-%d %H:%M:%S")))
  path = record_path()
  path.parent.mkdir(parents=True, exist_ok=True)
  atomic_write_text(path, json.dumps(entries, indent=1))
  return path


def trainer_signature(trainer) -> str:
  return step_signature(trainer.model.config, trainer.model.head_options(), trainer.config,
                        ",".join(trainer.devices) if trainer.devices else Device.DEFAULT)


_searching: tuple[int, int] | None = None   # inside search(): (beam, the least work a kernel must have to be searched)


@contextlib.contextmanager
def capturing(trainer):
  """Around a Trainer's TinyJit capture: BEAM=n with kernels read from tinygrad's cache where make tune searched this step
  (inside `search`, searched), else nothing. Yields {"tuned": n or None, and `lowering`'s counts}."""
  beam, min_work = _searching if _searching is not None else (tuned_beam(trainer_signature(trainer)), None)
  if not beam or trainer.config.checkpoint:
    yield {"tuned": None}
    return
  notes = {"tuned": beam}
  with cached_beam(beam, min_work) as counts:
    notes.update(counts)
    yield notes
  notes.update(counts)


def search(trainer, beam: int) -> dict:
  """BEAM-search the kernels of `trainer`'s training step and record it. Two steps run: a TinyJit's first call runs
  eagerly, its second captures under BEAM=beam, searching each kernel of at least SEARCH_MIN_WORK iterations not yet in
  tinygrad's cache. The trainer's weights move by two steps: use a throwaway one. Returns `capturing`'s notes."""
  global _searching
  check_int("beam", beam)
  if CACHELEVEL < 1: raise RuntimeError("tinygrad's cache is off (CACHELEVEL=0): searched kernels would not be kept")
  if trainer.config.checkpoint: raise ValueError("checkpoint=True steps run eagerly, without a TinyJit: nothing to tune")
  if not all(Device[n].renderers[0] in RENDERERS for n in trainer.devices or (Device.DEFAULT,)):
    raise ValueError("make tune is part of the OpenCL-on-CPU kit: run it with SSMAX_TINY_POCL=1 on DEV=CL (a CPU)")
  # PoCL runs a work-group on one core: candidates with large ones took minutes each; a kernel's search ends when a round
  # gains under 10 us (BEAM_MIN_PROGRESS), so tiny kernels are not searched at length
  os.environ.setdefault("BEAM_LOCAL_MAX", "16")
  os.environ.setdefault("BEAM_MIN_PROGRESS", "10")
  _searching = (beam, SEARCH_MIN_WORK)
  try:
    for _ in range(2): trainer.train_step()
  finally: _searching = None
  record_tuned(trainer_signature(trainer), beam)
  return trainer.capture_notes


def tune_cells(cells: list[dict], signature_of, trainer_of, beam: int, progress: bool = True) -> int:
  """Search each distinct training step of a grid (cells that differ only in seed share one); returns how many. A step
  recorded before is searched again: its kernels still in tinygrad's cache are read back in seconds, and those the code
  changed since (a record names the configuration, not the kernels) are searched."""
  steps: dict[str, dict] = {}
  for cell in cells: steps.setdefault(signature_of(cell), cell)
  recorded = sum(tuned_beam(sig) == beam for sig in steps)
  print(f"{len(steps)} distinct training steps ({recorded} recorded with BEAM={beam} before: their kernels still in the cache are "
        f"read back, not searched); minutes per new kernel on a CPU (the cache is at {CACHEDB})")
  for cell in tqdm(steps.values(), desc=f"BEAM={beam} search", disable=not progress):
    counts = search(trainer_of(cell), beam)
    tqdm.write(f"  kernels: {counts['searched']} searched, {counts['hits']} already in the cache, {counts['misses']} too small "
               f"to search (heuristics); the heuristics' choice timed faster than BEAM's for {counts['heuristics']} (kept)")
  return len(steps)
