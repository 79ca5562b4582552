"""tinygrad's FUSE_OPTIM (the optimizer over one flat buffer, tinygrad/nn/optim.py `Optimizer.schedule_step`) against the
default optimizer, on `make lm`'s SSMax + RoPE training step, paired: the two steps alternate in one process.

  python bench/fuse_optim.py [--repeats 60] [--out bench/fuse_optim]

Both Trainers start from the same weights and batches; the fused one is built and captured under Context(FUSE_OPTIM=1)
(the optimizer reads the flag when it is built and when its step is scheduled, so the TinyJit capture keeps it). Reports
the first losses of both (they must agree), the kernels per step, the median step of each and the median of the paired
ratios (fused over default, with its quartiles), and the losses after the run. Writes OUT.json and OUT.md.
"""
import argparse
import json
import statistics
from pathlib import Path

from lm_step import alternate, config_and_train, paired
from tinygrad import Context, Device

from ssmax_tiny.lm import build_lm
from ssmax_tiny.text import TextTask
from ssmax_tiny.train import Trainer


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--repeats", type=int, default=60, help="paired steps (default 60)")
  p.add_argument("--out", type=Path, default=Path(__file__).parent / "fuse_optim")
  a = p.parse_args()
  if a.repeats < 2: p.error(f"--repeats {a.repeats} must be >= 2 (the paired ratio's quartiles need two pairs)")
  template, lm_config, train = config_and_train()
  task, trainers, first = TextTask(), {}, {}
  for name, fused in (("default", 0), ("FUSE_OPTIM=1", 1)):
    with Context(FUSE_OPTIM=fused):
      trainers[name] = Trainer(build_lm(lm_config(template, "ssmax", "rope", train.train_length), 0), task, train)
      first[name] = [trainers[name].train_step() for _ in range(3)]  # capture and warm-up
  times, kernels = alternate(trainers, a.repeats)
  p = paired(times["FUSE_OPTIM=1"], times["default"])
  out = dict(device=Device.DEFAULT, tuned=trainers["default"].tuned, repeats=a.repeats, first_losses=first, kernels=kernels,
             median_ms={k: 1e3 * statistics.median(v) for k, v in times.items()}, paired_ratio=p["median"],
             quartiles=[p["q1"], p["q3"]], last_losses={k: t.losses[-1] for k, t in trainers.items()})
  lines = [f"FUSE_OPTIM=1 against the default optimizer, make lm's SSMax + RoPE step on {out['device']} "
           f"({'tuned kernels' if out['tuned'] else 'heuristics'}), {a.repeats} paired steps.", "",
           "| optimizer | kernels per step | median step ms | first 3 losses | loss after the run |", "|---|---:|---:|---|---|"]
  lines += [f"| {k} | {kernels[k]} | {out['median_ms'][k]:.1f} | {', '.join(f'{x:.6f}' for x in first[k])} | {out['last_losses'][k]:.6f} |"
            for k in trainers]
  lines += ["", f"Paired, fused over default: x{out['paired_ratio']:.3f} in time (quartiles x{p['q1']:.3f} to x{p['q3']:.3f})."]
  a.out.with_suffix(".json").write_text(json.dumps(out, indent=1))
  a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
