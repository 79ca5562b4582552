"""Sweeps: a grid of independent training runs ("cells"), each run from its description alone, by one of three runners.

A cell is a JSON dict that says everything its run needs: {"kind": "demo" | "lm", "model": SSMaxConfig's fields,
"train": TrainConfig's fields (the seed among them), "task": the task's fields, and what to evaluate}. An experiment
(demo.run_cell, lm.run_cell) builds the task and the model from it, trains and evaluates; `run_cell` around it saves a
checkpoint in out/cells/<key> and returns the results:
the same cell gives the same numbers wherever it runs (training is deterministic from the seed: train.py). `key(cell)`
names a cell by a hash of its canonical JSON, so a cell is found again by what it is, not by where it sits in a grid.

Runners, with bit-identical results (tests/test_sweep.py):
- in this process, one cell after another (the default);
- a local pool (`jobs=N`): each cell in a Python process of its own (`python -m ssmax_tiny.sweep`), at most N at a time;
  tinygrad picks each one's device from the environment (DEV), as it does here;
- Ray (`ray="auto"`: a running cluster; an address; `"local"`: a local instance started on demand): each cell a Ray task
  in a fresh worker process (max_calls=1), asking for `cpus` CPUs and `gpus` GPUs. Ray is the optional extra 'ray'.

The driver (the process that calls `run_sweep`) writes out/sweep.json, atomically, after every cell that finishes: run
again with the same `out`, a sweep skips the cells that file holds and runs only the missing ones. A cell that fails
(a bad option, a device that does not open, a crash) fails alone: the others run, and the sweep reports it with its error
and does not store it, so the next run tries it again.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import resource
import socket
import subprocess
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from tqdm.auto import tqdm

from ssmax_tiny.checkpoint import atomic_write_text
from ssmax_tiny.checks import check_int, check_number

STATE = "sweep.json"


def key(cell: dict) -> str:
  """The cell's name: the first 16 hex digits of the SHA-256 of its canonical JSON (sorted keys, no spaces)."""
  return hashlib.sha256(json.dumps(cell, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def run_cell(experiment, cell: dict, out: str | os.PathLike, progress: bool = False) -> dict:
  """Run one cell from its description alone: `experiment(cell, progress)` (demo.run_cell, lm.run_cell) trains and
  measures, and returns (runs, trainer); here the trainer is checkpointed in out/cells/<key>. Returns {"runs": [...],
  "checkpoint": path, "device", "host", "seconds", "peak_rss_mib"}: what the experiment measured, then where and how
  long it ran (the peak memory is the process's: the cell's own in a pool or on Ray, where each cell has a process)."""
  from tinygrad import Device

  from ssmax_tiny.train import save_checkpoint
  t0 = time.perf_counter()
  runs, trainer = experiment(cell, progress)
  path = save_checkpoint(trainer, Path(out) / "cells" / key(cell))
  return dict(runs=runs, checkpoint=path, device=Device.DEFAULT, host=socket.gethostname(), seconds=round(time.perf_counter() - t0, 1),
              peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20 if sys.platform == "darwin" else 1 << 10)))


def checkpoints(out: str | os.PathLike) -> list[Path]:
  """The checkpoints of a sweep's finished cells (run_cell saves each in out/cells/<key>), in key order."""
  paths = sorted(Path(out).glob("cells/*/checkpoint.json"))
  if not paths: raise FileNotFoundError(f"no cell checkpoints under {Path(out) / 'cells'}: run the sweep (make passkey, make lm) first")
  return paths


def _name(experiment) -> str:
  """module:function, for a child process to import (an experiment is a module-level function)."""
  return f"{experiment.__module__}:{experiment.__qualname__}"


def _import(name: str):
  module, _, function = name.partition(":")
  return getattr(importlib.import_module(module), function)


def load_state(out: str | os.PathLike) -> dict[str, dict]:
  """The finished cells that out/sweep.json holds, by key: {"cell": ..., "result": ...}."""
  path = Path(out) / STATE
  if not path.exists(): return {}
  try:
    return json.loads(path.read_text())["cells"]
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{path} is not a sweep's state ({e}); move it away to start the sweep afresh") from e


# ---- runners: each yields (key, result or None, error or None) as cells finish
def _in_process(experiment, todo: dict[str, dict], out: Path, progress: bool):
  for k, cell in todo.items():
    try:
      yield k, run_cell(experiment, cell, out, progress=progress), None
    except Exception as e:  # noqa: BLE001 (a cell fails alone; Ctrl-C still stops the sweep)
      yield k, None, "".join(traceback.format_exception_only(type(e), e)).strip()


def _in_subprocess(experiment, k: str, cell: dict, out: Path) -> tuple[dict | None, str | None]:
  d = out / "cells" / k
  d.mkdir(parents=True, exist_ok=True)
  (d / "cell.json").write_text(json.dumps(cell, indent=1))
  (d / "result.json").unlink(missing_ok=True)
  with open(d / "log.txt", "w") as log:
    rc = subprocess.call([sys.executable, "-m", "ssmax_tiny.sweep", _name(experiment), str(d / "cell.json"), str(out), str(d / "result.json")],
                         stdout=log, stderr=subprocess.STDOUT)
  if rc == 0: return json.loads((d / "result.json").read_text()), None
  lines = [x for x in (d / "log.txt").read_text(errors="replace").splitlines() if x.strip()]
  return None, f"exit status {rc}: {lines[-1] if lines else 'no output'} (log: {d / 'log.txt'})"


def _pool(experiment, todo: dict[str, dict], out: Path, jobs: int):
  pool = ThreadPoolExecutor(max_workers=jobs)  # threads only wait: each cell runs in its own process
  try:
    running = {pool.submit(_in_subprocess, experiment, k, cell, out): k for k, cell in todo.items()}
    while running:
      finished, _ = wait(running, return_when=FIRST_COMPLETED)
      for f in finished:
        yield (running.pop(f), *f.result())
  finally:
    pool.shutdown(cancel_futures=True)  # interrupted: start no queued cell (the running ones got the same Ctrl-C)


def _ray_cell(experiment, cell: dict, out: str) -> dict:
  """A Ray task: the cell, then tinygrad's pool of compile workers shut down. Left open, that pool keeps a Ray worker
  from exiting after its one call, and the worker outlives the cluster as a stray ray::IDLE process."""
  from tinygrad.engine.worker import terminate_worker_pool

  from ssmax_tiny import pocl
  pocl.use()
  try:
    return run_cell(experiment, cell, out)
  finally:
    terminate_worker_pool()


def _ray(experiment, todo: dict[str, dict], out: Path, address: str, cpus: float, gpus: float):
  try:
    import ray
  except ImportError:
    raise ValueError("--ray needs Ray: pip install 'ssmax-tiny[ray]' (or pip install ray)") from None
  started = not ray.is_initialized()
  if started:
    # the device choice travels with each task (a cluster's workers start from `ray start`'s environment, not ours)
    env = {k: os.environ[k] for k in ("DEV", "BEAM", "JITBEAM", "SSMAX_TINY_POCL") if k in os.environ}
    ray.init(address=address, runtime_env={"env_vars": env} if env else None, log_to_driver=False,
             **({"include_dashboard": False} if address == "local" else {}))
  try:
    remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_calls=1, max_retries=0)(_ray_cell)  # a fresh process per cell
    pending = {remote.remote(experiment, cell, str(out)): k for k, cell in todo.items()}
    while pending:
      ready, _ = ray.wait(list(pending), num_returns=1)
      k = pending.pop(ready[0])
      try:
        yield k, ray.get(ready[0]), None
      except Exception as e:  # noqa: BLE001 (RayTaskError wraps the cell's own exception; its last line names it)
        cause = getattr(e, "cause", None) or e
        yield k, None, "".join(traceback.format_exception_only(type(cause), cause)).strip()
  finally:
    if started: ray.shutdown()


def run_sweep(experiment, cells: list[dict], out: str | os.PathLike, *, jobs: int = 1, ray: str | None = None, cpus: float = 1, gpus: float = 0,
              progress: bool = True, on_cell=None) -> dict:
  """Run `experiment` (demo.run_cell, lm.run_cell: (cell, progress) -> (runs, trainer)) on the cells not yet in
  out/sweep.json, with one runner (jobs=1 and ray=None: in this process; jobs=N: N processes; ray: Ray tasks), and write
  out/sweep.json after each. Returns {"results": [result or None, in the order of `cells`], "failed": {key: error},
  "ran": [keys run now]}. `on_cell(key, result, error)` is called as each finishes."""
  check_int("jobs", jobs, 1)
  check_number("cpus", cpus, 0)
  check_number("gpus", gpus, 0)
  if ray is not None and jobs != 1: raise ValueError(f"jobs={jobs} and ray={ray!r}: choose one runner (Ray schedules its own workers)")
  out = Path(out).absolute()  # a Ray worker's or a child's working directory need not be ours
  out.mkdir(parents=True, exist_ok=True)
  keys = [key(c) for c in cells]
  if len(set(keys)) != len(keys): raise ValueError("cells: the grid holds the same cell twice")
  state = load_state(out)
  todo = {k: c for k, c in zip(keys, cells) if k not in state}
  failed, ran = {}, []
  bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc="cells", disable=not progress, dynamic_ncols=True)
  if ray is not None: finished = _ray(experiment, todo, out, ray, cpus, gpus)
  elif jobs > 1: finished = _pool(experiment, todo, out, jobs)
  else: finished = _in_process(experiment, todo, out, progress)
  for k, result, error in finished:
    ran.append(k)
    if error is None:
      state[k] = dict(cell=todo[k], result=result)
      atomic_write_text(out / STATE, json.dumps(dict(cells=state)))
      bar.set_postfix_str(f"last: {result['seconds']:.0f} s on {result['device']}")
    else:
      failed[k] = error
      tqdm.write(f"cell {k} failed: {error}")
    bar.update(1)
    if on_cell is not None: on_cell(k, result, error)
  bar.close()
  return dict(results=[state[k]["result"] if k in state else None for k in keys], failed=failed, ran=ran)


def runner_name(jobs: int = 1, ray: str | None = None) -> str:
  return f"Ray ({ray})" if ray is not None else f"{jobs} processes" if jobs > 1 else "this process"


def run_grid(experiment, cells: list[dict], out: str | os.PathLike, **runner) -> tuple[list[dict], dict[str, str]]:
  """run_sweep, then gather: every cell's runs in grid order, each with its cell's device, seconds and peak memory, and
  {} for failures. When a cell failed, the failures are printed (stderr) and the runs are [] (nothing to report yet)."""
  sweep = run_sweep(experiment, cells, out, **runner)
  if sweep["failed"]:
    print(failure_report(cells, sweep, out), file=sys.stderr)
    return [], sweep["failed"]
  return [dict(run, device=r["device"], seconds=r["seconds"], peak_rss_mib=r["peak_rss_mib"]) for r in sweep["results"] for run in r["runs"]], {}


def failure_report(cells: list[dict], sweep: dict, out) -> str:
  """What failed, for the command line: one line per cell, then what to do."""
  lines = [f"{len(sweep['failed'])} of {len(cells)} cell(s) failed:"]
  for c in cells:
    k = key(c)
    if k in sweep["failed"]: lines.append(f"  {k} ({describe(c)}): {sweep['failed'][k]}")
  lines.append(f"the finished cells are kept in {Path(out) / STATE}; run the same command again to retry only the failed ones")
  return "\n".join(lines)


def describe(cell: dict) -> str:
  m = cell.get("model", {})
  return f"{cell.get('kind')} {m.get('attention')} positional={m.get('positional')} seed={cell.get('train', {}).get('seed')}"


def main(argv: list[str]) -> int:
  """A pool's child: python -m ssmax_tiny.sweep MODULE:FUNCTION CELL.json OUT RESULT.json."""
  from ssmax_tiny import pocl
  pocl.use()   # the kit, where the parent's switch (SSMAX_TINY_POCL=1, in the environment it passed down) asks for it
  experiment, cell_path, out, result_path = argv
  result = run_cell(_import(experiment), json.loads(Path(cell_path).read_text()), out)
  atomic_write_text(Path(result_path), json.dumps(result))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
