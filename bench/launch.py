"""Launch costs of make lm's step on CL: the learning rate as a step input, the CL graph and kept input buffers, each
against the one before.

  python bench/launch.py [--repeats 40] [--attention ssmax] [--tuned]

Four versions of `make lm`'s training step (train.Trainer, as bench/lm_step.py runs it) in one process:
  before     the learning rate assigned before each step, outside the TinyJit (a schedule of its own; written out
             below), and the kernels launched one by one by tinygrad's JIT;
  lr input   the learning rate an input of the jitted step, kernels launched one by one;
  CL graph   that, with the kernels launched from ssmax_tiny/cl_graph.py's loop;
  inputs kept  that, with the step's inputs written into buffers kept from the first step (Trainer._input), where the
             three versions above make them anew from numpy each step, each realised on its own (what a Trainer now does).
Their steps alternate, so that a slow spell of the machine reaches all of them, and each ratio is the median over
repeats of one version's step over the step of the version before it, beside it (paired). The first three losses of
each are printed: they agree to the bit. Writes bench/launch.json and bench/launch.md.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--repeats", type=int, default=40, help="alternating rounds (default 40)")
  p.add_argument("--attention", choices=["ssmax", "softmax"], default="ssmax")
  p.add_argument("--tuned", action="store_true", help="with make tune's kernels (run make tune first)")
  p.add_argument("--out", type=Path, default=HERE / "launch")
  a = p.parse_args()
  if a.repeats < 2: p.error(f"--repeats {a.repeats} must be >= 2 (the paired ratios' quartiles need two pairs)")
  if not a.tuned: os.environ["SSMAX_TINY_TUNED"] = "0"
  from lm_step import alternate, config_and_train, paired
  from tinygrad import Context, Device, Tensor

  from ssmax_tiny import cl_graph, tuning
  from ssmax_tiny.lm import build_lm
  from ssmax_tiny.text import TextTask
  from ssmax_tiny.train import Trainer
  if Device.DEFAULT.split(":")[0] != "CL": raise SystemExit(f"bench/launch.py measures the CL device (DEV=CL); the default is {Device.DEFAULT}")

  class InputsAnew(Trainer):
    """Each step's inputs made anew from numpy, realised by the TinyJit's call, as before input buffers were kept."""
    def _input(self, name, array, axis): return self._to_devices(Tensor(array), axis)

  class LRBeforeStep(InputsAnew):
    """The step as this change found it: each step assigned the learning rate first, outside the TinyJit."""
    def train_step(self) -> float:
      for opt in self.optimizer.optimizers: opt.lr.assign(Tensor([self.config.lr_at(self.step)], dtype=opt.lr.dtype)).realize()
      tokens, targets = self.next_batch()
      tuned = tuning.cached_beam(self.tuned) if self.tuned and self._jit.cnt == 1 else contextlib.nullcontext()
      with Context(TRAINING=1), self.rng, tuned:
        loss, _ = self._jit(tokens, targets, self.optimizer.optimizers[0].lr)   # assigning lr its own value: no kernel
      self.losses.append(float(loss.item()))
      self.step += 1
      return self.losses[-1]

  template, lm_config, train = config_and_train()
  task, trainers, losses = TextTask(), {}, {}
  versions = (("before", LRBeforeStep, False), ("lr input", InputsAnew, False), ("CL graph", InputsAnew, True), ("inputs kept", Trainer, True))
  for name, cls, graph in versions:
    with contextlib.nullcontext() if graph else cl_graph.disabled():
      t = trainers[name] = cls(build_lm(lm_config(template, a.attention, "rope", train.train_length), 0), task, train)
      losses[name] = [t.train_step() for _ in range(3)]   # capture (and, tuned, read the searched kernels back)
  times, kernels = alternate(trainers, a.repeats)
  names = list(trainers)
  rows = []
  for i, name in enumerate(names):
    row = dict(version=name, step_ms=1e3 * statistics.median(times[name]), kernels=kernels[name], losses=losses[name],
               tuned=bool(trainers[name].tuned))
    if i: row.update(paired(times[name], times[names[i - 1]]))
    rows.append(row)
  out = dict(device=Device.DEFAULT, attention=a.attention, repeats=a.repeats, rows=rows, overall=paired(times[names[-1]], times[names[0]]))
  Path(f"{a.out}.json").write_text(json.dumps(out, indent=1))
  lines = [f"make lm's {a.attention} step on {out['device']} ({'make tune' if rows[0]['tuned'] else 'heuristics'}), "
           f"{a.repeats} alternating rounds; ratios paired, each against the row above (quartiles).", "",
           "| version | step ms | kernels | paired ratio | first 3 losses |", "|---|---:|---:|---|---|"]
  for row in rows:
    ratio = f"x{row['median']:.3f} ({row['q1']:.3f} to {row['q3']:.3f})" if "median" in row else "-"
    lines.append(f"| {row['version']} | {row['step_ms']:.1f} | {row['kernels']} | {ratio} | {', '.join(f'{v:.6f}' for v in row['losses'])} |")
  o = out["overall"]
  lines.append(f"| all, against before | | | **x{o['median']:.3f}** ({o['q1']:.3f} to {o['q3']:.3f}) | |")
  Path(f"{a.out}.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
