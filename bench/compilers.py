"""Compilers for tinygrad's CPU device on `make lm`'s training step: clang (the system's, and a newer one), LLVM, and
tinygrad's own x86 back end, in one run.

  python bench/compilers.py [--settings clang,clang-19,LLVM,X86] [--rounds 2] [--repeats 15] [--out bench/compilers]

Each setting runs make lm's SSMax + RoPE step (tinygrad's heuristics: no kernel searched) in a process of its own:
  clang     DEV=CPU (tinygrad/runtime/support/compiler_cpu.py: `clang -O2 -march=native`, the default)
  clang-19  DEV=CPU with CC=clang-19 (Debian 12: apt-get install clang-19)
  LLVM      DEV=CPU:LLVM (tinygrad's LLVM IR renderer, compiled in process with the libLLVM it finds; Debian: llvm-19)
  X86       DEV=CPU:X86 (tinygrad 0.14's own x86-64 back end, no compiler at all)
tinygrad's compile cache is keyed by the source, not by the compiler, so every process runs with CCACHE=0 (each kernel
compiled by the setting's own compiler). The settings run in turn, --rounds times, so that a slow spell of the machine
reaches all of them; a setting's figure is the median over all its steps. First losses are compared across settings (the
same kernels from different compilers). A setting that fails (its compiler missing) is reported, not fatal. The CL device
(PoCL) compiles with its own LLVM and is not affected by any of these. Writes OUT.json and OUT.md.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
SETTINGS = {"clang": dict(DEV="CPU"), "clang-19": dict(DEV="CPU", CC="clang-19"), "LLVM": dict(DEV="CPU:LLVM"),
            "X86": dict(DEV="CPU:X86")}


def worker(repeats: int) -> dict:
  from lm_step import config_and_train
  from tinygrad import Device, GlobalCounters

  from ssmax_tiny.lm import build_lm
  from ssmax_tiny.text import TextTask
  from ssmax_tiny.train import Trainer
  template, lm_config, train = config_and_train()
  t0 = time.perf_counter()
  trainer = Trainer(build_lm(lm_config(template, "ssmax", "rope", train.train_length), 0), TextTask(), train)
  first = [trainer.train_step() for _ in range(3)]
  warmup = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t = time.perf_counter(); trainer.train_step(); times.append(time.perf_counter() - t)
  GlobalCounters.reset(); trainer.train_step()
  renderer = type(Device[Device.DEFAULT].renderer).__name__
  return dict(device=Device.DEFAULT, renderer=renderer, first_losses=first, times=times, warmup_s=warmup,
              kernels=GlobalCounters.kernel_count)


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {', '.join(SETTINGS)} (default all)")
  p.add_argument("--rounds", type=int, default=2, help="times each setting runs, in turn (default 2)")
  p.add_argument("--repeats", type=int, default=15, help="timed steps per run after warm-up (default 15)")
  p.add_argument("--out", type=Path, default=HERE / "compilers")
  p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.worker:
    print(json.dumps(worker(a.repeats)))
    return 0
  settings = a.settings.split(",")
  if bad := [s for s in settings if s not in SETTINGS]: p.error(f"--settings {a.settings!r}: unknown {bad}; accepted: {', '.join(SETTINGS)}")
  if a.rounds < 1 or a.repeats < 1: p.error(f"--rounds {a.rounds} and --repeats {a.repeats} must be >= 1")
  runs = {s: [] for s in settings}
  errors = {}
  for r in range(a.rounds):
    for s in settings:
      if s in errors: continue
      env = {**os.environ, "CCACHE": "0", "SSMAX_TINY_TUNED": "0", **SETTINGS[s]}
      print(f"round {r + 1}: {s} ...", file=sys.stderr, flush=True)
      out = subprocess.run([sys.executable, __file__, "--worker", "--repeats", str(a.repeats)], env=env, capture_output=True, text=True,
                           cwd=HERE.parent)
      if out.returncode != 0: errors[s] = (out.stderr.strip().splitlines() or ["(no message)"])[-1][:300]
      else: runs[s].append(json.loads(out.stdout.strip().splitlines()[-1]))
  rows = {}
  for s, rs in runs.items():
    if not rs: continue
    steps = [t for r in rs for t in r["times"]]
    rows[s] = dict(renderer=rs[0]["renderer"], step_ms=1e3 * statistics.median(steps), kernels=rs[0]["kernels"],
                   warmup_s=statistics.median(r["warmup_s"] for r in rs), first_losses=rs[0]["first_losses"])
  base = rows.get(settings[0])
  lines = [f"make lm's SSMax + RoPE training step on tinygrad's CPU device (one core), heuristics, CCACHE=0; {a.rounds} round(s) "
           f"of {a.repeats} steps per setting, settings in turn; median over all steps.", "",
           f"| setting | renderer | step ms | vs {settings[0]} | kernels | warm-up s (compiles) | first 3 losses |",
           "|---|---|---:|---:|---:|---:|---|"]
  for s, r in rows.items():
    lines.append(f"| {s} | {r['renderer']} | {r['step_ms']:.1f} | {'x%.3f' % (r['step_ms'] / base['step_ms']) if base else '-'} | "
                 f"{r['kernels']} | {r['warmup_s']:.0f} | {', '.join(f'{x:.6f}' for x in r['first_losses'])} |")
  lines += [f"\n{s} failed: {e}" for s, e in errors.items()]
  a.out.with_suffix(".json").write_text(json.dumps(dict(rows=rows, errors=errors, rounds=a.rounds, repeats=a.repeats), indent=1))
  a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
