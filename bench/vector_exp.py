"""exp2 on whole vectors in the OpenCL kernels (ssmax_tiny/cl_vector_exp.py) against the per-lane calls tinygrad writes.

  DEV=CL python bench/vector_exp.py [--repeats 40] [--tuned] [--out bench/vector_exp]

Two measurements in one process, each paired (the two versions alternate, so a slow spell of the machine reaches both):
  - exp over make lm's attention scores' shape ([16, 4, 128, 128], float32) as one jitted kernel, with the per-lane
    calls and with the rule, and their largest difference in ulps against each other and against numpy's float64 exp;
  - make lm's SSMax + RoPE training step (train.Trainer, as bench/lm_step.py runs it), captured before and after
    `cl_vector_exp.install()`, with the heuristics (default) or make tune's kernels (--tuned).
Writes OUT.json and OUT.md.
"""
import argparse
import contextlib
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
  p.add_argument("--out", type=Path, default=None, help="output stem (default bench/vector_exp, or bench/vector_exp_tuned)")
  a = p.parse_args()
  if a.repeats < 2: p.error(f"--repeats {a.repeats} must be >= 2 (the paired ratios' quartiles need two pairs)")
  out_stem = a.out or Path(__file__).parent / ("vector_exp_tuned" if a.tuned else "vector_exp")
  os.environ["SSMAX_TINY_CL_VECTOR_EXP"] = "0"   # the Trainers install it only when asked, below
  if not a.tuned: os.environ["SSMAX_TINY_TUNED"] = "0"
  from lm_step import alternate, config_and_train, paired
  from tinygrad import Device, Tensor, TinyJit

  from ssmax_tiny import cl_vector_exp
  from ssmax_tiny.lm import build_lm
  from ssmax_tiny.text import TextTask
  from ssmax_tiny.train import Trainer
  if Device.DEFAULT.split(":")[0] != "CL": raise SystemExit(f"bench/vector_exp.py measures the CL device (DEV=CL); the default is {Device.DEFAULT}")

  def turn_on():
    os.environ["SSMAX_TINY_CL_VECTOR_EXP"] = "1"
    cl_vector_exp.install()

  # the exp kernel alone: the same kernel, rendered by tinygrad's renderer and by cl_vector_exp's
  rng = np.random.default_rng(0)
  scores = Tensor(rng.standard_normal((16, 4, 128, 128), dtype=np.float32) * 4).realize()
  kernels = {}
  for name in ("per lane", "vector"):
    if name == "vector": turn_on()
    kernels[name] = TinyJit(lambda: (scores * 1.0).exp().realize())
    for _ in range(3): kernels[name]()
  os.environ["SSMAX_TINY_CL_VECTOR_EXP"] = "0"
  cl_vector_exp.uninstall()
  ktimes = {n: [] for n in kernels}
  for _ in range(a.repeats):
    for n, k in kernels.items():
      t0 = time.perf_counter(); k(); Device[Device.DEFAULT].synchronize(); ktimes[n].append(time.perf_counter() - t0)
  # both compute exp2(float32(x * float32(1 / ln 2))) (tinygrad's exp): errors are taken against that in float64, and
  # between the two (the float32 argument itself is off by up to about |x| ulps from x / ln 2, in both alike)
  vals = {n: k().numpy() for n, k in kernels.items()}
  ref = np.exp2((scores.numpy() * np.float32(1 / np.log(2))).astype(np.float64))
  ulp = {n: float(np.max(np.abs(v - ref) / np.spacing(ref.astype(np.float32)))) for n, v in vals.items()}
  ulp["between"] = float(np.max(np.abs(vals["vector"] - vals["per lane"]) / np.spacing(vals["per lane"])))
  ulp["differing"] = float(np.mean(vals["vector"] != vals["per lane"]))

  # make lm's step
  template, lm_config, train = config_and_train()
  task, trainers, losses = TextTask(), {}, {}
  for name in ("per lane", "vector"):
    if name == "vector": turn_on()
    t = trainers[name] = Trainer(build_lm(lm_config(template, "ssmax", "rope", train.train_length), 0), task, train)
    losses[name] = [t.train_step() for _ in range(3)]
  times, counts = alternate(trainers, a.repeats)

  out = dict(device=Device.DEFAULT, tuned=bool(trainers["per lane"].tuned), repeats=a.repeats,
             kernel=dict(ms={n: 1e3 * statistics.median(v) for n, v in ktimes.items()}, ratio=paired(ktimes["vector"], ktimes["per lane"]),
                         max_ulp_vs_float64=ulp),
             step=dict(ms={n: 1e3 * statistics.median(v) for n, v in times.items()}, ratio=paired(times["vector"], times["per lane"]),
                       kernels=counts, first_losses=losses))
  k, s = out["kernel"], out["step"]
  lines = [f"exp2 on whole vectors against per-lane calls, on {out['device']} "
           f"({'make tune' if out['tuned'] else 'heuristics'}), {a.repeats} alternating rounds; paired ratios, vector over per lane (quartiles).", "",
           "| measured | per lane ms | vector ms | paired ratio | notes |", "|---|---:|---:|---|---|",
           f"| exp over [16, 4, 128, 128] | {k['ms']['per lane']:.3f} | {k['ms']['vector']:.3f} | **x{k['ratio']['median']:.3f}** "
           f"({k['ratio']['q1']:.3f} to {k['ratio']['q3']:.3f}) | largest error: {ulp['per lane']:.2f} and {ulp['vector']:.2f} ulp; "
           f"{100 * ulp['differing']:.1f}% of values differ between the two, by at most {ulp['between']:.0f} ulp |",
           f"| make lm's SSMax step | {s['ms']['per lane']:.1f} | {s['ms']['vector']:.1f} | **x{s['ratio']['median']:.3f}** "
           f"({s['ratio']['q1']:.3f} to {s['ratio']['q3']:.3f}) | first losses {', '.join(f'{v:.6f}' for v in losses['per lane'])} "
           f"and {', '.join(f'{v:.6f}' for v in losses['vector'])} |"]
  out_stem.with_suffix(".json").write_text(json.dumps(out, indent=1))
  out_stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  with contextlib.suppress(KeyboardInterrupt): main()
