"""One tinygrad Context flag against the default, on `make lm`'s SSMax + RoPE training step, paired: the two steps
alternate in one process.

  python bench/flag.py [--flag FUSE_OPTIM=1] [--repeats 60] [--out bench/<flag's name, lower case>]

Flags measured so far:
  FUSE_OPTIM=1       the optimizer over one flat buffer (tinygrad/nn/optim.py `Optimizer.schedule_step`); the optimizer
                     reads it when it is built and when its step is scheduled (bench/fuse_optim.md)
  TRANSCENDENTAL=2   exp2, log2 and sin as tinygrad's own polynomials (tinygrad/codegen/decomp/transcendental.py) instead
                     of the device's functions, read when each kernel is compiled; the CPU device's renderer has no exp2
                     and always does this, CL calls PoCL's exp2 (bench/transcendental.md)
Both Trainers start from the same weights and batches; the flagged one is built and captured (its kernels compiled)
under Context(flag), so the TinyJit's replays keep it. Reports the first losses of both, the kernels per step, the median
step of each and the median of the paired ratios (flagged over default, with its quartiles), and the losses after the
run. Writes OUT.json and OUT.md.
"""
import argparse
import json
import statistics
from pathlib import Path

from lm_step import alternate, config_and_train, paired
from tinygrad import Context, Device
from tinygrad.helpers import ContextVar

from ssmax_tiny.lm import build_lm
from ssmax_tiny.text import TextTask
from ssmax_tiny.train import Trainer


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--flag", default="FUSE_OPTIM=1", help="NAME=INT, a tinygrad Context variable (default FUSE_OPTIM=1)")
  p.add_argument("--repeats", type=int, default=60, help="paired steps (default 60)")
  p.add_argument("--out", type=Path, default=None, help="output stem (default bench/<the flag's name in lower case>)")
  a = p.parse_args()
  name, _, value = a.flag.partition("=")
  if name not in ContextVar._cache or not value.lstrip("-").isdigit():
    p.error(f"--flag {a.flag!r} must be NAME=INT with NAME a tinygrad Context variable (FUSE_OPTIM=1, TRANSCENDENTAL=2, ...)")
  out_stem = a.out or Path(__file__).parent / name.lower()
  if a.repeats < 2: p.error(f"--repeats {a.repeats} must be >= 2 (the paired ratio's quartiles need two pairs)")
  template, lm_config, train = config_and_train()
  task, trainers, first = TextTask(), {}, {}
  for version, ctx in (("default", {}), (a.flag, {name: int(value)})):
    with Context(**ctx):
      trainers[version] = Trainer(build_lm(lm_config(template, "ssmax", "rope", train.train_length), 0), task, train)
      first[version] = [trainers[version].train_step() for _ in range(3)]  # capture and warm-up
  times, kernels = alternate(trainers, a.repeats)
  p = paired(times[a.flag], times["default"])
  out = dict(device=Device.DEFAULT, flag=a.flag, tuned=trainers["default"].tuned, repeats=a.repeats, first_losses=first, kernels=kernels,
             median_ms={k: 1e3 * statistics.median(v) for k, v in times.items()}, paired_ratio=p["median"],
             quartiles=[p["q1"], p["q3"]], last_losses={k: t.losses[-1] for k, t in trainers.items()})
  lines = [f"{a.flag} against the default, make lm's SSMax + RoPE step on {out['device']} "
           f"({'tuned kernels' if out['tuned'] else 'heuristics'}), {a.repeats} paired steps.", "",
           "| version | kernels per step | median step ms | first 3 losses | loss after the run |", "|---|---:|---:|---|---|"]
  lines += [f"| {k} | {kernels[k]} | {out['median_ms'][k]:.1f} | {', '.join(f'{x:.6f}' for x in first[k])} | {out['last_losses'][k]:.6f} |"
            for k in trainers]
  lines += ["", f"Paired, {a.flag} over default: x{out['paired_ratio']:.3f} in time (quartiles x{p['q1']:.3f} to x{p['q3']:.3f})."]
  out_stem.with_suffix(".json").write_text(json.dumps(out, indent=1))
  out_stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
