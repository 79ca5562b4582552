"""Float arithmetic on whole vectors in the OpenCL kernels (ssmax_tiny/cl_vectorize.py) against tinygrad's per-lane code.

  DEV=CL python bench/vectorize.py [--repeats 40] [--tuned] [--out bench/vectorize]

Three measurements in one process, each paired (the two versions alternate, so a slow spell of the machine reaches both):
  - exp over make lm's attention scores' shape ([16, 4, 128, 128], float32) as one jitted kernel, rendered per lane and
    on vectors, and their largest errors in ulps against the exact exp2 of the same float32 argument;
  - the exact GELU over make lm's feed-forward shape ([2048, 256]), both ways, and their largest difference;
  - make lm's SSMax + RoPE training step (train.Trainer, as bench/lm_step.py runs it), captured before and after
    `cl_vectorize.install()`, with the heuristics (default) or make tune's kernels (--tuned).
Writes OUT.json and OUT.md.
"""
import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--repeats", type=int, default=40, help="alternating rounds (default 40)")
  p.add_argument("--tuned", action="store_true", help="with make tune's kernels (run make tune first)")
  p.add_argument("--out", type=Path, default=None, help="output stem (default bench/vectorize, or bench/vectorize_tuned)")
  a = p.parse_args()
  if a.repeats < 2: p.error(f"--repeats {a.repeats} must be >= 2 (the paired ratios' quartiles need two pairs)")
  out_stem = a.out or Path(__file__).parent / ("vectorize_tuned" if a.tuned else "vectorize")
  os.environ["SSMAX_TINY_CL_VECTORIZE"] = "0"   # the Trainers install it only when asked, below
  if not a.tuned: os.environ["SSMAX_TINY_TUNED"] = "0"
  from lm_step import alternate, config_and_train, paired
  from tinygrad import Device, Tensor, TinyJit

  from ssmax_tiny import cl_vectorize
  from ssmax_tiny.lm import build_lm
  from ssmax_tiny.text import TextTask
  from ssmax_tiny.train import Trainer
  if Device.DEFAULT.split(":")[0] != "CL": raise SystemExit(f"bench/vectorize.py measures the CL device (DEV=CL); the default is {Device.DEFAULT}")

  def turn_on():
    os.environ["SSMAX_TINY_CL_VECTORIZE"] = "1"
    cl_vectorize.install()

  # the exp and GELU kernels alone: the same kernels, rendered by tinygrad's renderer and by cl_vectorize's
  rng = np.random.default_rng(0)
  scores = Tensor(rng.standard_normal((16, 4, 128, 128), dtype=np.float32) * 4).realize()
  hidden = Tensor(rng.standard_normal((2048, 256), dtype=np.float32) * 2).realize()
  kernels = {}
  for name in ("per lane", "vector"):
    if name == "vector": turn_on()
    kernels[f"exp {name}"] = TinyJit(lambda: (scores * 1.0).exp().realize())
    kernels[f"gelu {name}"] = TinyJit(lambda: (hidden * 1.0).gelu(approximate="none").realize())
    for k in ("exp", "gelu"):
      for _ in range(3): kernels[f"{k} {name}"]()
  os.environ["SSMAX_TINY_CL_VECTORIZE"] = "0"
  cl_vectorize.uninstall()
  ktimes = {n: [] for n in kernels}
  for _ in range(a.repeats):
    for n, k in kernels.items():
      t0 = time.perf_counter(); k(); Device[Device.DEFAULT].synchronize(); ktimes[n].append(time.perf_counter() - t0)
  # both compute exp2(float32(x * float32(1 / ln 2))) (tinygrad's exp): errors are taken against that in float64, and
  # between the two (the float32 argument itself is off by up to about |x| ulps from x / ln 2, in both alike)
  vals = {n: k().numpy() for n, k in kernels.items()}
  ref = np.exp2((scores.numpy() * np.float32(1 / np.log(2))).astype(np.float64))
  ulp = {n: float(np.max(np.abs(vals[f"exp {n}"] - ref) / np.spacing(ref.astype(np.float32)))) for n in ("per lane", "vector")}
  ulp["between"] = float(np.max(np.abs(vals["exp vector"] - vals["exp per lane"]) / np.spacing(vals["exp per lane"])))
  ulp["differing"] = float(np.mean(vals["exp vector"] != vals["exp per lane"]))
  gelu_diff = float(np.max(np.abs(vals["gelu vector"] - vals["gelu per lane"])))

  # make lm's step
  template, lm_config, train = config_and_train()
  task, trainers, losses = TextTask(), {}, {}
  for name in ("per lane", "vector"):
    if name == "vector": turn_on()
    t = trainers[name] = Trainer(build_lm(lm_config(template, "ssmax", "rope", train.train_length), 0), task, train)
    losses[name] = [t.train_step() for _ in range(3)]
  times, counts = alternate(trainers, a.repeats)

  def ms(n): return 1e3 * statistics.median(ktimes[n])
  out = dict(device=Device.DEFAULT, tuned=bool(trainers["per lane"].tuned), repeats=a.repeats,
             exp=dict(ms={n: ms(f"exp {n}") for n in ("per lane", "vector")}, ratio=paired(ktimes["exp vector"], ktimes["exp per lane"]),
                      ulp=ulp),
             gelu=dict(ms={n: ms(f"gelu {n}") for n in ("per lane", "vector")}, ratio=paired(ktimes["gelu vector"], ktimes["gelu per lane"]),
                       max_abs_difference=gelu_diff),
             step=dict(ms={n: 1e3 * statistics.median(v) for n, v in times.items()}, ratio=paired(times["vector"], times["per lane"]),
                       kernels=counts, first_losses=losses))

  def row(what, r, fmt, notes):
    return (f"| {what} | {r['ms']['per lane']:{fmt}} | {r['ms']['vector']:{fmt}} | **x{r['ratio']['median']:.3f}** "
            f"({r['ratio']['q1']:.3f} to {r['ratio']['q3']:.3f}) | {notes} |")
  lines = [f"Float arithmetic on vectors against per lane, on {out['device']} ({'make tune' if out['tuned'] else 'heuristics'}), "
           f"{a.repeats} alternating rounds; paired ratios, vector over per lane (quartiles).", "",
           "| measured | per lane ms | vector ms | paired ratio | notes |", "|---|---:|---:|---|---|",
           row("exp over [16, 4, 128, 128]", out["exp"], ".3f",
               f"largest error: {ulp['per lane']:.2f} and {ulp['vector']:.2f} ulp; {100 * ulp['differing']:.1f}% of values differ "
               f"between the two, by at most {ulp['between']:.0f} ulp"),
           row("exact GELU over [2048, 256]", out["gelu"], ".3f", f"largest difference between the two: {gelu_diff:.1e}"),
           row("make lm's SSMax step", out["step"], ".1f",
               f"first losses {', '.join(f'{v:.6f}' for v in losses['per lane'])} and {', '.join(f'{v:.6f}' for v in losses['vector'])}")]
  out_stem.with_suffix(".json").write_text(json.dumps(out, indent=1))
  out_stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
