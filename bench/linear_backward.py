"""A Linear layer's forward and backward, autograd's against ssmax_tiny's hand-written backward (model.affine), per
shape, then whole training steps with and without it, in one run. Writes bench/linear_backward_<device>.{json,md}.

  DEV=CL python bench/linear_backward.py [--tokens 2048] [--repeats 7]

Each case is one TinyJit function: y = x W^T + b, then the gradients of sum(y * dy) with respect to x, W and b, realised. The
shapes are the projections of `make lm` (hidden 64), of the demo (hidden 32), and of the Edifice default (hidden 256),
at about the tokens of one training step. The ratio is autograd's time over the hand-written one's: above 1 it wins.
Then the training steps of the Edifice default (bench/bench.py's, B = 32, T = 60) and of `make lm` (bench/lm_step.py's),
each built twice from one seed: every Linear on autograd (Linear.HAND_BACKWARD_MIN = infinity) against the default.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from tinygrad import Device, Tensor, TinyJit

from ssmax_tiny.model import Linear, affine

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
SHAPES = [(32, 32), (32, 128), (128, 32), (64, 64), (64, 256), (256, 64), (128, 128), (128, 512), (512, 128), (256, 256),
          (256, 1024), (1024, 256)]


def timed(fn, repeats: int) -> float:
  dev = Device[Device.DEFAULT]
  for _ in range(3): fn()
  dev.synchronize()
  times = []
  for _ in range(repeats):
    t = time.perf_counter(); fn(); dev.synchronize(); times.append(time.perf_counter() - t)
  return statistics.median(times)


def edifice_step():
  """bench/bench.py's training step of the Edifice default; returns a function that runs one step and gives its loss."""
  from tinygrad import Context
  from tinygrad.nn.state import get_parameters

  import ssmax_tiny
  from bench import CONFIG, train_step_fn
  Tensor.manual_seed(0)
  m = ssmax_tiny.build(**CONFIG, window_size=60, attention="ssmax")
  Tensor.realize(*get_parameters(m))
  x, target = Tensor.randn(32, 60, CONFIG["embed_dim"]).realize(), Tensor.randn(32, CONFIG["hidden_size"]).realize()
  jit = TinyJit(train_step_fn(m))

  def run():
    with Context(TRAINING=1): return jit(x, target).item()
  return run


def lm_step():
  """`make lm`'s training step through train.Trainer (the batch is the same at every call: the step count is reset)."""
  from lm_step import config_and_train

  from ssmax_tiny.lm import build_lm
  from ssmax_tiny.text import TextTask
  from ssmax_tiny.train import Trainer
  template, lm_config, train = config_and_train()
  trainer = Trainer(build_lm(lm_config(template, "ssmax", "rope", train.train_length), 0), TextTask(), train)

  def run():
    trainer.step = 0
    return trainer.train_step()
  return run


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--tokens", type=int, default=2048, help="rows of x, the tokens of a step (default 2048: make lm's 16 x 128)")
  ap.add_argument("--repeats", type=int, default=7, help="timed runs per case after warm-up (default 7)")
  args = ap.parse_args()
  if args.tokens < 1: ap.error(f"--tokens {args.tokens} must be >= 1")
  if args.repeats < 1: ap.error(f"--repeats {args.repeats} must be >= 1")
  from ssmax_tiny import cl_vectorize
  cl_vectorize.install()   # on CL, the kernels a Trainer renders (float8, the matmul tile)
  rows, steps = [], []
  for i, (d_in, d_out) in enumerate([SHAPES[0]] + SHAPES):  # the first shape twice: its first run pays the process's warm-up
    x, dy = Tensor.randn(args.tokens, d_in).realize(), Tensor.randn(args.tokens, d_out).realize()
    w = Tensor.randn(d_out, d_in).mul(0.02).contiguous().realize()

    b = Tensor.zeros(d_out).contiguous().realize()

    def step(f):
      def run():
        grads = (f(x, w, b) * dy).sum().gradient(x, w, b)
        Tensor.realize(*grads)
        return grads
      return TinyJit(run)
    auto, custom = step(lambda x, w, b: x @ w.T + b), step(affine)
    ga, gc = auto(), custom()
    err = max(float(((p - q).abs().max() / p.abs().max()).item()) for p, q in zip(ga, gc))
    t_auto, t_custom = timed(auto, args.repeats), timed(custom, args.repeats)
    if i == 0: continue
    rows.append(dict(d_in=d_in, d_out=d_out, weights=d_in * d_out, autograd_ms=1e3 * t_auto, custom_ms=1e3 * t_custom,
                     ratio=t_auto / t_custom, max_rel_diff=err))
    print(json.dumps(rows[-1]), flush=True)
  lines = [f"Linear forward + backward, {args.tokens} tokens, tinygrad {Device.DEFAULT}, median of {args.repeats}: autograd's "
           "backward against the hand-written one (model.affine). Ratio above 1: the hand-written one is faster.", "",
           "| d_in -> d_out | weights | autograd ms | hand-written ms | ratio | largest difference (relative) |", "|---|---:|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['d_in']} -> {r['d_out']} | {r['weights']:,} | {r['autograd_ms']:.2f} | {r['custom_ms']:.2f} | x{r['ratio']:.2f} | "
                 f"{r['max_rel_diff']:.1e} |")
  lines += ["", f"Training steps, the same model and seed with every Linear on autograd, then with the default "
            f"(hand-written backward from {Linear.HAND_BACKWARD_MIN:,} weights up):", "",
            "| step | autograd ms | default ms | ratio | same loss |", "|---|---:|---:|---:|---|"]
  for name, make in (("Edifice default (hidden 256, 6 layers, B 32, T 60)", edifice_step), ("make lm (hidden 64, 2 layers, B 16, L 128)", lm_step)):
    default_min, times, losses = Linear.HAND_BACKWARD_MIN, [], []
    for threshold in (float("inf"), default_min):
      Linear.HAND_BACKWARD_MIN = threshold  # read when a step is captured
      step = make()
      times.append(timed(step, args.repeats)); losses.append(step())
    Linear.HAND_BACKWARD_MIN = default_min
    steps.append(dict(step=name, autograd_ms=1e3 * times[0], default_ms=1e3 * times[1], ratio=times[0] / times[1], same_loss=losses[0] == losses[1]))
    print(json.dumps(steps[-1]), flush=True)
    lines.append(f"| {name} | {1e3 * times[0]:.0f} | {1e3 * times[1]:.0f} | x{times[0] / times[1]:.2f} | {losses[0] == losses[1]} |")
  md = "\n".join(lines) + "\n"
  print(md)
  stem = HERE / f"linear_backward_{Device.DEFAULT.lower()}"
  stem.with_suffix(".md").write_text(md)
  stem.with_suffix(".json").write_text(json.dumps(dict(device=Device.DEFAULT, tokens=args.tokens, rows=rows, steps=steps), indent=1))


if __name__ == "__main__":
  main()
