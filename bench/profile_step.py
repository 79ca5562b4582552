"""Which kernels dominate: per-kernel time of one jitted training step (or forward) of the default Edifice model.

  DEV=CL python bench/profile_step.py [--mode train|forward] [--length 60] [--attention ssmax] [--top 15]

Runs bench/bench.py's step (TinyJit, AdamW, B = 32 at T <= 64, else 8; SSMAX_TINY_POCL=1: with the OpenCL-on-CPU kit),
then replays it once with tinygrad's DEBUG=2, which times every kernel, and sums the times by kernel name. Kernel
names are tinygrad's: r_ is a reduction (a matmul, a sum), E_ elementwise; the numbers are the loop sizes. GFLOP/s is
tinygrad's own count over the kernel time.
"""
import argparse
import collections
import contextlib
import io
import re
import time

from tinygrad import Context, Device, Tensor, TinyJit
from tinygrad.nn.state import get_parameters

import ssmax_tiny
from bench import CONFIG, batch_for, train_step_fn

LINE = re.compile(r"\*\*\* \S+\s+\d+ (\S+).*?tm\s+([\d.]+)(us|ms|s)/.*?\(\s*(\d+) GFLOPS")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--mode", choices=["train", "forward"], default="train", help="training step or forward (default train)")
  p.add_argument("--length", type=int, default=60, help="T (default 60; B = 32 at T <= 64, else 8)")
  p.add_argument("--attention", choices=["ssmax", "softmax"], default="ssmax")
  p.add_argument("--top", type=int, default=15, help="kernels to list (default 15)")
  a = p.parse_args()
  T = a.length
  B = batch_for(T)
  from ssmax_tiny import pocl
  pocl.use()   # SSMAX_TINY_POCL=1: the kernels the OpenCL-on-CPU kit renders
  Tensor.manual_seed(0)
  m = ssmax_tiny.build(**CONFIG, window_size=T, attention=a.attention)
  Tensor.realize(*get_parameters(m))
  x, target = Tensor.randn(B, T, CONFIG["embed_dim"]).realize(), Tensor.randn(B, CONFIG["hidden_size"]).realize()
  step = TinyJit(train_step_fn(m)) if a.mode == "train" else TinyJit(lambda v, t: m.forward(v).contiguous().realize())
  with Context(TRAINING=int(a.mode == "train")):
    for _ in range(3): step(x, target).numpy()
    t0 = time.perf_counter()
    for _ in range(3): step(x, target).numpy()
    wall = (time.perf_counter() - t0) / 3
    per = kernel_times(lambda: step(x, target).numpy())
  print(f"{Device.DEFAULT} {a.mode} T={T} B={B} {a.attention}: {wall:.3f} s per step")
  print(kernel_table(per, a.top))


def step_kernel_times(make_trainer) -> dict[str, list]:
  """kernel_times of a train.Trainer's step. The trainer is made and its step captured without the CL graph
  (ssmax_tiny/pocl/graph.py), whose batches DEBUG=2 would time as one; the kernels are the same."""
  from ssmax_tiny.pocl import graph
  with graph.disabled():
    trainer = make_trainer()
    for _ in range(3): trainer.train_step()
  tokens, targets, lr = *trainer.next_batch(), trainer.lr_input()
  with Context(TRAINING=1), trainer.rng:
    return kernel_times(lambda: trainer._jit(tokens, targets, lr)[0].item())


def kernel_times(run) -> dict[str, list]:
  """Run `run` (one warm, jitted step) under tinygrad's DEBUG=2, which times every kernel; {name: [count, ms, GFLOP/s]}."""
  log = io.StringIO()
  with contextlib.redirect_stdout(log), Context(DEBUG=2): run()
  per = collections.defaultdict(lambda: [0, 0.0, 0])
  for line in log.getvalue().splitlines():
    if (hit := LINE.search(ANSI.sub("", line))) is None: continue
    ms = float(hit.group(2)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[hit.group(3)]
    k = per[hit.group(1)]
    k[0] += 1; k[1] += ms; k[2] = int(hit.group(4))
  return dict(per)


def kernel_table(per: dict[str, list], top: int) -> str:
  total = sum(k[1] for k in per.values())
  lines = [f"kernels timed one by one: {total / 1e3:.3f} s, {sum(k[0] for k in per.values())} kernels, {len(per)} names", "",
           "| ms | share | count | GFLOP/s | kernel |", "|---|---|---|---|---|"]
  for name, (n, ms, gf) in sorted(per.items(), key=lambda kv: -kv[1][1])[:top]:
    lines.append(f"| {ms:.1f} | {100 * ms / total:.1f}% | {n} | {gf} | {name} |")
  return "\n".join(lines)


if __name__ == "__main__":
  main()
