"""Two levers on `make lm`'s training step, paired in one process: RoPE's cos and sin tables realised, and masked_softmax's
hand-written backward, each against the code before it.

  python bench/transcendentals.py [--repeats 30] [--tuned] [--out bench/transcendentals]

Before these levers, RoPE's tables (T, Hd) were lazy, so every kernel over [B, H, T, Hd] that read them (forward and
backward) computed sin and cos per element, and autograd's backward of exp(z - max) / sum recomputed exp over the
[B, H, T, T] scores; on CL (PoCL) sin and exp run at 1 to 5 GFLOP/s. The earlier versions are written out below and
patched into ssmax_tiny.model while their step is built and captured (TinyJit keeps what it captured). Three Trainers
(SSMax + RoPE, the same weights and batches): "before" (both earlier versions), "+ RoPE tables" (the tables realised,
the earlier softmax) and "+ softmax backward" (the model as it is). Their steps alternate; each ratio is the median
over the repeats of a step's time over the step beside it. With --tuned the steps use make tune's kernels where
tinygrad's cache has them (it keeps the kernels searched before the change too); by default tinygrad's heuristics.
Writes OUT.json and OUT.md.
"""
import argparse
import json
import math
import os
import statistics
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

from lm_step import alternate, config_and_train, paired
from tinygrad import Device, Tensor

from ssmax_tiny import model
from ssmax_tiny.lm import build_lm
from ssmax_tiny.text import TextTask
from ssmax_tiny.train import Trainer


def lazy_rope_tables(positions, d, base=10000.0, fraction=1.0, device=None):
  """model.rope_tables as it was: the same tables, left lazy."""
  r = 2 * round(fraction * d / 2)
  if r == 0: return None
  half = r // 2
  inv_freq = [base ** (-2.0 * (i % half) / d) for i in range(r)] + [0.0] * (d - r)
  angle = positions.cast("float32").reshape(-1, 1) * Tensor(inv_freq, device=device).reshape(1, d)
  rotate = [[0.0] * d for _ in range(d)]
  for i in range(half): rotate[i + half][i], rotate[i][i + half] = -1.0, 1.0
  return angle.cos(), angle.sin(), Tensor(rotate, device=device)


def autograd_masked_softmax(scores, mask=None):
  """model.masked_softmax as it was: autograd's backward, exp(z - max) lazy."""
  if mask is None: return scores.softmax(-1)
  z = mask.where(scores, -math.inf)
  top = z.max(-1, keepdim=True).detach()
  e = (z - (top == -math.inf).where(0.0, top)).exp()
  total = e.sum(-1, keepdim=True)
  return e / (total == 0).where(1.0, total)


VARIANTS = {"before": dict(rope_tables=lazy_rope_tables, masked_softmax=autograd_masked_softmax),
            "+ RoPE tables": dict(masked_softmax=autograd_masked_softmax),
            "+ softmax backward": {}}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--repeats", type=int, default=30, help="paired rounds (default 30)")
  p.add_argument("--tuned", action="store_true", help="use make tune's kernels where tinygrad's cache has them")
  p.add_argument("--out", type=Path, default=Path(__file__).parent / "transcendentals")
  a = p.parse_args()
  if a.repeats < 2: p.error(f"--repeats {a.repeats} must be >= 2")
  if not a.tuned: os.environ["SSMAX_TINY_TUNED"] = "0"
  template, lm_config, train = config_and_train()
  task, trainers, first = TextTask(), {}, {}
  for name, patches in VARIANTS.items():
    with ExitStack() as stack:
      for attr, fn in patches.items(): stack.enter_context(mock.patch.object(model, attr, fn))
      trainers[name] = Trainer(build_lm(lm_config(template, "ssmax", "rope", train.train_length), 0), task, train)
      first[name] = [trainers[name].train_step() for _ in range(3)]  # capture and warm-up, with the patches in place
  times, kernels = alternate(trainers, a.repeats)
  names = list(trainers)
  ratios = {f"{names[i]} / {names[i - 1]}": paired(times[names[i]], times[names[i - 1]]) for i in range(1, len(names))}
  ratios[f"{names[-1]} / {names[0]}"] = paired(times[names[-1]], times[names[0]])
  out = dict(device=Device.DEFAULT, tuned=bool(trainers[names[-1]].tuned), repeats=a.repeats, first_losses=first,
             kernels=kernels, median_ms={k: 1e3 * statistics.median(v) for k, v in times.items()}, paired=ratios)
  lines = [f"make lm's SSMax + RoPE step on {out['device']} ({'make tune kernels' if out['tuned'] else 'heuristics'}), "
           f"{a.repeats} rounds, the three steps alternating.", "",
           "| step | kernels | median ms | first 3 losses |", "|---|---:|---:|---|"]
  lines += [f"| {k} | {kernels[k]} | {out['median_ms'][k]:.1f} | {', '.join(f'{x:.6f}' for x in first[k])} |" for k in names]
  lines += ["", "| paired | median | quartiles |", "|---|---:|---|"]
  lines += [f"| {k} | x{v['median']:.3f} | x{v['q1']:.3f} to x{v['q3']:.3f} |" for k, v in ratios.items()]
  a.out.with_suffix(".json").write_text(json.dumps(out, indent=1))
  a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
