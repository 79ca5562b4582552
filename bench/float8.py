"""float8 loads and stores (ssmax_tiny/cl_vectorize.py WideOpenCLRenderer) against float4 ones, on the Edifice default's
training step, paired: the two steps alternate in one process.

  DEV=CL python bench/float8.py [--tuned] [--repeats 10] [--out bench/float8]

Both steps are bench.py's (the Edifice default, hidden 256, 6 layers, B = 32, T = 60, softmax, AdamW), from the same
weights and batch. One is captured with VectorizingOpenCLRenderer (float arithmetic on vectors, tinygrad's widths:
SSMAX_TINY_CL_FLOAT8=0), the other with WideOpenCLRenderer (float8 too); with --tuned both read make tune's kernel
choices from tinygrad's cache (`python bench/tune.py --devices CL` searches them), so the schedules are the
same and only the widths differ. Reports the first losses of both, the median step of each and the median of the
paired ratios (float8 over float4, with quartiles). Writes OUT.json and OUT.md.
"""
import argparse
import json
import os
import statistics
import time
from pathlib import Path

from lm_step import paired
from tinygrad import Context, Device, Tensor, TinyJit
from tinygrad.nn.state import get_parameters

import ssmax_tiny
from bench import CONFIG, batch_for, train_step_fn
from ssmax_tiny import cl_vectorize, tuning


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--tuned", action="store_true", help="with the kernels bench/tune.py searched (from tinygrad's cache)")
  p.add_argument("--repeats", type=int, default=10, help="paired steps (default 10)")
  p.add_argument("--out", type=Path, default=None, help="output stem (default bench/float8, or bench/float8_tuned)")
  a = p.parse_args()
  if a.repeats < 2: p.error(f"--repeats {a.repeats} must be >= 2 (the paired ratios' quartiles need two pairs)")
  if Device.DEFAULT.split(":")[0] != "CL": raise SystemExit(f"bench/float8.py measures the CL device (DEV=CL); the default is {Device.DEFAULT}")
  out_stem = a.out or Path(__file__).parent / ("float8_tuned" if a.tuned else "float8")
  T = 60
  B = batch_for(T)
  steps, inputs, losses = {}, {}, {}
  for name, wide in (("float4", "0"), ("float8", "1")):
    os.environ["SSMAX_TINY_CL_FLOAT8"] = wide   # read by install()
    cl_vectorize.install()
    Tensor.manual_seed(0)
    m = ssmax_tiny.build(**CONFIG, window_size=T, attention="softmax")
    Tensor.realize(*get_parameters(m))
    Tensor.manual_seed(1)
    inputs[name] = Tensor.randn(B, T, CONFIG["embed_dim"]).realize(), Tensor.randn(B, CONFIG["hidden_size"]).realize()
    steps[name] = TinyJit(train_step_fn(m))
    with Context(TRAINING=1), (tuning.cached_beam(1) if a.tuned else Context()):
      losses[name] = [steps[name](*inputs[name]).item() for _ in range(3)]   # eager, captured, replayed
  times = {name: [] for name in steps}
  with Context(TRAINING=1):
    for _ in range(a.repeats):
      for name, step in steps.items():
        t0 = time.perf_counter(); step(*inputs[name]).item(); times[name].append(time.perf_counter() - t0)
  ratio = paired(times["float8"], times["float4"])
  results = dict(device=Device.DEFAULT, tuned=a.tuned, repeats=a.repeats, losses=losses, times=times, ratio=ratio)
  Path(f"{out_stem}.json").write_text(json.dumps(results, indent=1))
  kernels = "make tune's kernels (bench/tune.py's search, from the cache)" if a.tuned else "the heuristics"
  md = "\n".join([
    f"float8 against float4 loads and stores, the Edifice default's training step (B {B}, T {T}, softmax) on {Device.DEFAULT}, "
    f"{kernels}, {a.repeats} alternating rounds.", "",
    "| | float4 s | float8 s | paired ratio, float8 / float4 (quartiles) |", "|---|---:|---:|---|",
    f"| training step | {statistics.median(times['float4']):.3f} | {statistics.median(times['float8']):.3f} | "
    f"**x{ratio['median']:.3f}** ({ratio['q1']:.3f} to {ratio['q3']:.3f}) |", "",
    "First losses: " + "; ".join(f"{n} " + ", ".join(f"{v:.6f}" for v in ls) for n, ls in losses.items()), ""])
  Path(f"{out_stem}.md").write_text(md)
  print(md)


if __name__ == "__main__":
  main()
