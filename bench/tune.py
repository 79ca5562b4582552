"""`make tune`: tinygrad's BEAM search over the kernels of the default Edifice configuration, cached, then measured.

  python bench/tune.py [--devices CL] [--beam 1] [--lengths 60] [--repeats 3]

For each device: the benchmark's worker (bench/bench.py: forward and training step through TinyJit, SSMax and softmax)
runs twice in one run, once with tinygrad's hand-coded kernel heuristics and once with JITBEAM=N, which makes tinygrad
time candidate kernel schedules for each kernel a TinyJit captures (tinygrad/codegen/opt/search.py) and keep the
fastest. The worker searches as `make tune` does (ssmax_tiny/tuning.py `lowering`): kernels of at least SEARCH_MIN_WORK
iterations, each search's choice then timed against the heuristics' and the faster kept; smaller kernels not in the
cache keep the heuristics. What it finds goes into tinygrad's cache (~/.cache/tinygrad/cache.db, CACHEDB= moves it), keyed by the
kernel and the device, so the search is paid once: later runs with JITBEAM=N (or BEAM=N) and the same shapes read it
back. A new shape (another batch size or length) searches again. Then PyTorch (when installed) runs the same model for
the ratio. Writes bench/tuned.json and bench/tuned.md.

The search is slow on this 2-core machine (each candidate kernel is compiled and timed): the first `make tune` on a
device takes tens of minutes; a second one, with the cache warm, takes about as long as the benchmark itself. On the
CL device through PoCL a work-group runs on one core, and candidates with large work-groups took 47 to 123 s each to
time; the search there is limited to work-groups of 16 (--local-max).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from bench import CONFIG, batch_for, numpy_sgemm_gflops, torch_side  # noqa: E402


def run_worker(dev: str, args, state_file: Path, beam: int) -> tuple[dict | None, float]:
  cmd = [sys.executable, str(HERE / "bench.py"), "--worker", dev, "--state-out", str(state_file), "--lengths",
         ",".join(map(str, args.lengths)), "--train-lengths", ",".join(map(str, args.lengths)), "--repeats", str(args.repeats)]
  env = {**os.environ, "DEV": dev}
  env.pop("JITBEAM", None); env.pop("BEAM", None)
  if beam:
    env["JITBEAM"] = str(beam)
    if args.local_max is not None: env["BEAM_LOCAL_MAX"] = str(args.local_max)
    elif dev.split(":")[0] in ("CL", "CPU"): env.setdefault("BEAM_LOCAL_MAX", "16")
  t0 = time.perf_counter()
  proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
  wall = time.perf_counter() - t0
  if proc.returncode != 0:
    print(f"tinygrad {dev} {'JITBEAM=' + str(beam) if beam else 'heuristic'} run failed (exit {proc.returncode})", file=sys.stderr)
    return None, wall
  return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def report(results: dict) -> str:
  beam = results["beam"]
  lines = [f"ssmax_tiny kernels tuned with tinygrad's BEAM search (JITBEAM={beam}): {results['machine']}; medians of "
           f"{results['repeats']} runs after warm-up; config {CONFIG}, B = {batch_for(results['lengths'][0])} at T = 60.", "",
           f"numpy sgemm 2048: {results['numpy_sgemm_gflops']:.0f} GFLOP/s."]
  torch_rows = {(r["T"], r["attention"]): r for r in results["torch"].get("rows", [])}
  for dev in results["devices"]:
    lines += ["", f"### tinygrad {dev['device']}: heuristic run {dev['heuristic_wall_s']:.0f} s, BEAM run (search + measure) "
              f"{dev['beam_wall_s']:.0f} s", "",
              "| T | attention | step | heuristic s | BEAM s | speedup | PyTorch eager s | heuristic / PyTorch | BEAM / PyTorch | BEAM GFLOP/s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    plain = {(r["T"], r["attention"]): r for r in dev["heuristic"]["rows"]}
    for r in dev["beam"]["rows"]:
      p, t = plain[(r["T"], r["attention"])], torch_rows.get((r["T"], r["attention"]), {})
      for key, name, gf in (("forward_s", "forward", "forward_gflop"), ("train_step_s", "training step", "train_gflop")):
        if key not in r: continue
        vs = lambda a: f"{a / t[key]:.2f}x" if key in t else "-"  # noqa: E731
        lines.append(f"| {r['T']} | {r['attention']} | {name} | {p[key]:.3f} | {r[key]:.3f} | {p[key] / r[key]:.2f}x | "
                     f"{t[key]:.3f} | {vs(p[key])} | {vs(r[key])} | {r[gf] / r[key]:.1f} |" if key in t else
                     f"| {r['T']} | {r['attention']} | {name} | {p[key]:.3f} | {r[key]:.3f} | {p[key] / r[key]:.2f}x | - | - | - | "
                     f"{r[gf] / r[key]:.1f} |")
    lines += ["", f"Plain 1024 matmul: {dev['heuristic']['matmul_1024_gflops']:.1f} GFLOP/s with the heuristics, "
              f"{dev['beam']['matmul_1024_gflops']:.1f} tuned."]
    rows = {(r["T"], r["attention"]): r for r in dev["beam"]["rows"]}
    for T in results["lengths"]:
      s, x = rows.get((T, "softmax")), rows.get((T, "ssmax"))
      if s and x and "train_step_s" in s:
        lines += ["", f"T = {T}, tuned: SSMax/softmax forward {x['forward_s'] / s['forward_s']:.3f}, training step "
                  f"{x['train_step_s'] / s['train_step_s']:.3f}."]
  return "\n".join(lines) + "\n"


def main() -> int:
  p = argparse.ArgumentParser(description="BEAM-search and cache the kernels of the default configuration, then measure")
  p.add_argument("--devices", default=None, help="tinygrad devices, comma-separated (default: tinygrad's default device)")
  p.add_argument("--beam", type=int, default=1, help="beam width (default 1; 2 searches about twice as long)")
  p.add_argument("--lengths", default="60", help="lengths T to tune and measure (default 60, the Edifice window)")
  p.add_argument("--repeats", type=int, default=3, help="timed repeats after warm-up (default 3)")
  p.add_argument("--local-max", type=int, default=None,
                 help="largest work-group the search tries (tinygrad's BEAM_LOCAL_MAX; default 16 on CL and CPU, where a "
                      "work-group runs on one core and large ones took minutes per candidate on PoCL; 1024 elsewhere)")
  p.add_argument("--no-torch", dest="torch", action="store_false", help="skip the PyTorch comparison")
  p.add_argument("--out", type=Path, default=HERE / "tuned", help="output stem (default bench/tuned -> .json, .md)")
  args = p.parse_args()
  try: args.lengths = [int(v) for v in args.lengths.split(",")]
  except ValueError: p.error(f"--lengths {args.lengths!r} must be comma-separated integers")
  if args.beam < 1: p.error(f"--beam {args.beam} must be >= 1")
  if args.repeats < 1: p.error(f"--repeats {args.repeats} must be >= 1")
  args.train_lengths, args.compile = args.lengths, False
  if args.devices: devices = args.devices.split(",")
  else:
    probe = subprocess.run([sys.executable, "-c", "from tinygrad import Device; print(Device.DEFAULT)"], stdout=subprocess.PIPE, text=True)
    devices = [probe.stdout.strip()]
  state_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"ssmax_tiny_tune_{os.getpid()}.npz"
  results = dict(machine=f"{os.cpu_count()} CPU cores, {sys.platform}", beam=args.beam, repeats=args.repeats, lengths=args.lengths,
                 numpy_sgemm_gflops=numpy_sgemm_gflops(), devices=[])
  for dev in devices:
    print(f"tinygrad {dev}: heuristic kernels ...", file=sys.stderr, flush=True)
    plain, plain_wall = run_worker(dev, args, state_file, 0)
    print(f"tinygrad {dev}: JITBEAM={args.beam} (searches every kernel not in the cache yet; tens of minutes the first time) ...",
          file=sys.stderr, flush=True)
    tuned, tuned_wall = run_worker(dev, args, state_file, args.beam)
    if plain and tuned:
      results["devices"].append(dict(device=dev, heuristic=plain, beam=tuned, heuristic_wall_s=plain_wall, beam_wall_s=tuned_wall))
  if args.torch and state_file.exists(): results["torch"] = torch_side(args, state_file)
  else: results["torch"] = dict(skipped="not run")
  state_file.unlink(missing_ok=True)
  Path(f"{args.out}.json").write_text(json.dumps(results, indent=1))
  table = report(results)
  Path(f"{args.out}.md").write_text(table)
  print(table)
  return 0 if results["devices"] else 1


if __name__ == "__main__":
  sys.exit(main())
