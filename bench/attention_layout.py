"""One causal attention, forward and backward, through tinygrad's scaled_dot_product_attention and through ssmax_tiny's
`attend` (the same formula with the weights made contiguous before they meet v), in one run.

  DEV=CL python bench/attention_layout.py [--lengths 60,256,1024] [--repeats 3]

B = 32 at T <= 64, else 8; 4 heads of 64 (the default Edifice model's attention). Prints a table and JSON lines:
time of each, the ratio, kernels and tinygrad's operation count. The outputs and gradients agree to 1e-4 (checked).
"""
import argparse
import json
import time

import numpy as np
from tinygrad import Device, GlobalCounters, Tensor, TinyJit

from ssmax_tiny.model import attend


def measure(T: int, repeats: int) -> dict:
  B, H, D = (32 if T <= 64 else 8), 4, 64
  q, k, v, g = (Tensor.randn(B, H, T, D).realize() for _ in range(4))
  mask = Tensor.ones(T, T, dtype="bool").tril()
  variants = {"tinygrad sdpa": lambda q, k, v: q.scaled_dot_product_attention(k, v, is_causal=True),
              "ssmax_tiny attend": lambda q, k, v: attend(q, k, v, mask)}

  def jit(f):
    def step(q, k, v):
      q, k, v = (t.detach().contiguous() for t in (q, k, v))
      out = f(q, k, v)
      return Tensor.realize(out, *(out * g).sum().gradient(q, k, v))
    return TinyJit(step)

  row, outs = dict(T=T, B=B, device=Device.DEFAULT), {}
  for name, f in variants.items():
    step = jit(f)
    GlobalCounters.reset()
    outs[name] = [t.numpy() for t in step(q, k, v)]
    row[f"{name} kernels"], row[f"{name} GFLOP"] = GlobalCounters.kernel_count, GlobalCounters.global_ops / 1e9
    for _ in range(2): [t.numpy() for t in step(q, k, v)]
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter(); [t.numpy() for t in step(q, k, v)]; times.append(time.perf_counter() - t0)
    row[f"{name} s"] = float(np.median(times))
  row["max abs diff"] = max(float(np.abs(a - b).max()) for a, b in zip(*outs.values()))
  assert row["max abs diff"] < 1e-4, row
  row["sdpa / attend"] = row["tinygrad sdpa s"] / row["ssmax_tiny attend s"]
  return row


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--lengths", default="60,256,1024", help="lengths T (default 60,256,1024)")
  p.add_argument("--repeats", type=int, default=3, help="timed repeats after warm-up (default 3)")
  a = p.parse_args()
  print("| device | T | B | sdpa s | attend s | sdpa / attend | kernels (sdpa / attend) | GFLOP (sdpa / attend) |")
  print("|---|---|---|---|---|---|---|---|")
  for T in (int(t) for t in a.lengths.split(",")):
    r = measure(T, a.repeats)
    print(f"| {r['device']} | {T} | {r['B']} | {r['tinygrad sdpa s']:.3f} | {r['ssmax_tiny attend s']:.3f} | {r['sdpa / attend']:.2f}x | "
          f"{r['tinygrad sdpa kernels']} / {r['ssmax_tiny attend kernels']} | {r['tinygrad sdpa GFLOP']:.1f} / {r['ssmax_tiny attend GFLOP']:.1f} |",
          flush=True)
    print(json.dumps(r), flush=True)


if __name__ == "__main__":
  main()
