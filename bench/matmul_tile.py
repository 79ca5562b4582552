"""The Edifice default's matmuls, one kernel each, on CL: tinygrad's heuristics against cl_vectorize.matmul_tile.

  DEV=CL python bench/matmul_tile.py [--repeats 20] [--out bench/matmul_tile]

The six plain products of a Linear layer of the Edifice default (hidden 256, feed-forward 1024, B x T = 1920 tokens)
as model.affine computes them: the forward x W^T with W^T copied, dx = dy W, and dW = dy^T x with dy^T copied, for the
256 -> 1024 and 1024 -> 256 layers, and 256 -> 256. Each product is one jitted kernel, rendered twice: by
WideOpenCLRenderer (float8 loads and stores, tinygrad's heuristics: SSMAX_TINY_CL_TILE=0) and by TilingOpenCLRenderer
(the same, with matmul_tile's schedule); tinygrad keys compiled kernels by the renderer, so both live in one process.
The two alternate for --repeats rounds (paired); each is checked against numpy's float64 product first (the gamma_n
bound, K eps |a| |b|). numpy's float32 product of the same operands is timed too, as the machine's ceiling. Writes
OUT.json and OUT.md.
"""
import argparse
import json
import os
import statistics
import time
from pathlib import Path
from unittest import mock

import numpy as np
from tinygrad import Device, Tensor, TinyJit

from ssmax_tiny import cl_vectorize

N, D, F = 1920, 256, 1024
PRODUCTS = [("x W^T, 256 -> 1024", N, D, F), ("dx = dy W, 256 -> 1024", N, F, D), ("dW = dy^T x, 256 -> 1024", F, N, D),
            ("x W^T, 1024 -> 256", N, F, D), ("dx = dy W, 1024 -> 256", N, D, F), ("dW = dy^T x, 1024 -> 256", D, N, F),
            ("x W^T, 256 -> 256", N, D, D), ("dW = dy^T x, 256 -> 256", D, N, D)]
TILE = {"heuristics": "0", "tile": "1"}   # SSMAX_TINY_CL_TILE: WideOpenCLRenderer, TilingOpenCLRenderer


def timed(run) -> float:
  t0 = time.perf_counter(); run(); Device[Device.DEFAULT].synchronize()
  return time.perf_counter() - t0


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--repeats", type=int, default=20, help="alternating rounds per product (default 20)")
  p.add_argument("--out", type=Path, default=Path(__file__).parent / "matmul_tile", help="output stem (default bench/matmul_tile)")
  a = p.parse_args()
  if a.repeats < 2: p.error(f"--repeats {a.repeats} must be >= 2 (the paired ratios' quartiles need two pairs)")
  if Device.DEFAULT.split(":")[0] != "CL": raise SystemExit(f"bench/matmul_tile.py measures the CL device (DEV=CL); the default is {Device.DEFAULT}")
  if not (cl_vectorize.wide() and cl_vectorize.on_cpu(Device.DEFAULT)):
    raise SystemExit("the tile needs the float8 widths (unset SSMAX_TINY_CL_FLOAT8) and an OpenCL device that is a CPU")
  rng = np.random.default_rng(0)
  rows = []
  for name, m, k, n in PRODUCTS:
    an, bn = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    at, bt = Tensor(an).realize(), Tensor(bn).realize()
    exact = an.astype(np.float64) @ bn.astype(np.float64)
    bound = k * np.finfo(np.float32).eps * (np.abs(an).astype(np.float64) @ np.abs(bn))
    runs = {}
    for version, tile in TILE.items():
      with mock.patch.dict(os.environ, SSMAX_TINY_CL_TILE=tile): cl_vectorize.install()
      jit = TinyJit(lambda a, b: (a @ b).realize())
      for _ in range(3): out = jit(at, bt)   # eager, captured, replayed
      assert (np.abs(out.numpy() - exact) <= bound).all(), f"{name}, {version}: outside float32's bound"
      runs[version] = lambda jit=jit: jit(at, bt)
    runs["numpy"] = lambda: an @ bn
    times = {v: [] for v in runs}
    for _ in range(a.repeats):
      for v, run in runs.items(): times[v].append(timed(run))
    ratios = [t / h for t, h in zip(times["tile"], times["heuristics"])]
    q = statistics.quantiles(ratios, n=4)
    gflop = 2 * m * n * k / 1e9
    rows.append(dict(product=name, shape=[m, k, n], **{f"{v}_gflops": gflop / statistics.median(t) for v, t in times.items()},
                     ratio=statistics.median(ratios), q1=q[0], q3=q[2]))
    print(json.dumps(rows[-1]), flush=True)
  cl_vectorize.install()
  Path(f"{a.out}.json").write_text(json.dumps(rows, indent=1))
  lines = [f"The Edifice default's products, one kernel each on {Device.DEFAULT}, float8 widths, {a.repeats} alternating rounds: "
           "GFLOP/s (median), and the paired ratio of times, tile / heuristics.", "",
           "| product | [M, K] x [K, N] | heuristics GFLOP/s | tile GFLOP/s | numpy float32 GFLOP/s | tile / heuristics (quartiles) |",
           "|---|---|---:|---:|---:|---|"]
  lines += [f"| {r['product']} | [{r['shape'][0]}, {r['shape'][1]}] x [{r['shape'][1]}, {r['shape'][2]}] | {r['heuristics_gflops']:.0f} | "
            f"{r['tile_gflops']:.0f} | {r['numpy_gflops']:.0f} | x{r['ratio']:.3f} ({r['q1']:.3f} to {r['q3']:.3f}) |" for r in rows]
  Path(f"{a.out}.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
