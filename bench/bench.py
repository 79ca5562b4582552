"""`make bench`: how fast is the Edifice default model, forward and training step, against PyTorch on the same machine?

  python bench/bench.py [--devices CPU,CL] [--lengths 60,256,1024] [--train-lengths 60,256] [--repeats 3] [--quick]
                        [--out runs/bench/bench]      (about 10 minutes on 2 CPU cores; SSMAX_TINY_POCL=1: the kit on CL)

For each tinygrad device present (each in its own process, DEV=...): forward (TinyJit) and training step (TinyJit,
AdamW) of the default Edifice configuration (embed 64, hidden 256, 4 heads, 6 layers, dropout 0.1; B = 32 at T = 60,
B = 8 at longer T), SSMax against softmax (time and kernels), the folded path (scale folded into q) against the explicit one, GFLOP/s from
tinygrad's own operation count, and the process's peak memory. Then, in this process, numpy's sgemm (the machine's
matmul ceiling) and, when PyTorch is installed (the extra `torch`), a PyTorch model with the same weights, checked for
parity first, run eager and under torch.compile where that works. Medians after warm-up. Writes OUT.json and OUT.md,
stamped (bench/stamp.py). bench/decode.py (KV-cache decoding against a full recompute) runs on each device too, and
bench/data_parallel.py (one device against --data-parallel devices) once.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import stamp  # bench/stamp.py: python puts the script's folder first on sys.path

HERE = Path(__file__).parent
CONFIG = dict(embed_dim=64, hidden_size=256, num_heads=4, num_layers=6, dropout=0.1)


def batch_for(T: int) -> int: return 32 if T <= 64 else 8


def _median_time(fn, repeats: int, warmup: int = 2) -> float:
  for _ in range(warmup): fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
  return statistics.median(times)


def train_step_fn(m):
  """The benchmark's training step for model m: MSE against a target, backward, AdamW (the paper's betas and decay)."""
  from tinygrad import Tensor
  from tinygrad.nn.optim import AdamW
  from tinygrad.nn.state import get_parameters
  opt = AdamW([p for p in get_parameters(m) if p.is_param], lr=1e-4, b1=0.9, b2=0.95, weight_decay=0.1)

  def step(v, t):
    opt.zero_grad()
    loss = (m.forward(v) - t).square().mean()
    loss.backward()
    Tensor.realize(loss, *opt.schedule_step())
    return loss
  return step


# ---------------------------------------------------------------- tinygrad worker (one device per process)
def worker(args) -> dict:
  import numpy as np
  from tinygrad import Context, Device, GlobalCounters, Tensor, TinyJit
  from tinygrad.nn.state import get_state_dict

  import ssmax_tiny
  from ssmax_tiny import pocl
  pocl.use()   # SSMAX_TINY_POCL=1: the OpenCL-on-CPU kit, where the device is OpenCL on a CPU
  out = dict(device=Device.DEFAULT + (" with the OpenCL-on-CPU kit" if pocl.installed() else ""), rows=[])

  def build(attention, T):
    Tensor.manual_seed(0)
    return ssmax_tiny.build(**CONFIG, window_size=T, attention=attention)

  def count(fn):
    GlobalCounters.reset(); fn()
    return GlobalCounters.kernel_count, GlobalCounters.global_ops

  for T in args.lengths:
    B = batch_for(T)
    x = Tensor.randn(B, T, CONFIG["embed_dim"]).realize()
    for attention in ("softmax", "ssmax"):
      m = build(attention, T)
      if T == args.lengths[0] and attention == "ssmax":
        state = {k: v.numpy() for k, v in get_state_dict(m).items()}
        np.savez(args.state_out, x=x.numpy(), y=m.forward(x).numpy(), **state)
      kernels, ops = count(lambda: m.forward(x).realize())
      t_fwd = _median_time(lambda: m(x).numpy(), args.repeats)
      row = dict(T=T, B=B, attention=attention, path="folded", forward_s=t_fwd, forward_kernels=kernels, forward_gflop=ops / 1e9,
                 forward_gflops=ops / 1e9 / t_fwd)
      if attention == "ssmax":
        explicit = TinyJit(lambda v: m.forward(v, fold_scale=False).contiguous().realize())
        row["explicit_forward_s"] = _median_time(lambda: explicit(x).numpy(), args.repeats)
        row["explicit_forward_kernels"] = count(lambda: m.forward(x, fold_scale=False).realize())[0]
      if T in args.train_lengths:
        target = Tensor.randn(B, CONFIG["hidden_size"]).realize()
        step_fn = train_step_fn(m)
        step = TinyJit(step_fn)
        with Context(TRAINING=1):
          kernels_t, ops_t = count(lambda: step_fn(x, target).item())
          row["train_step_s"] = _median_time(lambda: step(x, target).item(), args.repeats)
        row.update(train_kernels=kernels_t, train_gflop=ops_t / 1e9, train_gflops=ops_t / 1e9 / row["train_step_s"])
      out["rows"].append(row)
      print(json.dumps(row), file=sys.stderr, flush=True)
  # tinygrad's own matmul on this device, for the ceiling comparison
  a, b = Tensor.randn(1024, 1024).realize(), Tensor.randn(1024, 1024).realize()
  mm = TinyJit(lambda p, q: (p @ q).realize())
  out["matmul_1024_gflops"] = 2 * 1024**3 / 1e9 / _median_time(lambda: mm(a, b).numpy(), max(3, args.repeats))
  out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return out


# ---------------------------------------------------------------- the reference side, in the main process
def numpy_sgemm_gflops(n=2048, repeats=5) -> float:
  import numpy as np
  a, b = np.random.rand(n, n).astype(np.float32), np.random.rand(n, n).astype(np.float32)
  return 2 * n**3 / 1e9 / _median_time(lambda: a @ b, repeats)


def torch_side(args, state_file: Path) -> dict:
  try:
    import torch
  except ImportError:
    return dict(skipped="PyTorch is not installed: pip install -e '.[torch]' (the CPU build: pip install torch==2.13.0)")
  import numpy as np
  sys.path.insert(0, str(HERE))
  from torch_ref import TorchSSMaxTransformer, load_tinygrad_state
  torch.manual_seed(0)
  saved = dict(np.load(state_file))
  x0, y0 = saved.pop("x"), saved.pop("y")
  out = dict(version=torch.__version__, threads=torch.get_num_threads(), rows=[])
  ref = TorchSSMaxTransformer(**CONFIG, attention="ssmax").eval()
  load_tinygrad_state(ref, saved)
  with torch.no_grad(): y = ref(torch.from_numpy(x0)).numpy()
  out["parity_max_abs_diff"] = float(np.abs(y - y0).max())
  out["parity_ok"] = out["parity_max_abs_diff"] < 1e-4
  for T in args.lengths:
    B = batch_for(T)
    x = torch.randn(B, T, CONFIG["embed_dim"])
    for attention in ("softmax", "ssmax"):
      torch.manual_seed(0)
      m = TorchSSMaxTransformer(**CONFIG, attention=attention)
      m.eval()
      with torch.no_grad(): t_fwd = _median_time(lambda: m(x), args.repeats)
      row = dict(T=T, B=B, attention=attention, forward_s=t_fwd)
      if T in args.train_lengths:
        m.train()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
        target = torch.randn(B, CONFIG["hidden_size"])

        def step():
          opt.zero_grad(); loss = (m(x) - target).square().mean(); loss.backward(); opt.step()
          return loss.item()
        row["train_step_s"] = _median_time(step, args.repeats)
      if args.compile and attention == "ssmax" and T == args.lengths[0]:
        try:
          mc = torch.compile(m.eval())
          with torch.no_grad(): row["compiled_forward_s"] = _median_time(lambda: mc(x), args.repeats, warmup=3)
        except Exception as e:  # torch.compile needs a working C++ toolchain; report, do not fail
          row["compiled_forward_error"] = f"{type(e).__name__}: {str(e)[:200]}"
      out["rows"].append(row)
      print(json.dumps({"torch": row}), file=sys.stderr, flush=True)
  return out


def tinygrad_devices(requested: list[str] | None) -> list[str]:
  if requested: return requested
  found = []
  for dev in ("CPU", "CL", "METAL", "CUDA", "NV", "AMD"):
    probe = subprocess.run([sys.executable, "-c", f"from tinygrad import Device; Device[{dev!r}]"], capture_output=True,
                           env={**os.environ, "DEV": dev}, timeout=120)
    if probe.returncode == 0: found.append(dev)
  return found


def report(results: dict) -> str:
  lines = [f"ssmax_tiny benchmark: {results['machine']}; medians of {results['repeats']} runs after warm-up; "
           f"config {CONFIG}, B = 32 at T <= 64, else 8.", "",
           f"numpy sgemm 2048: {results['numpy_sgemm_gflops']:.0f} GFLOP/s (threads as numpy's BLAS chooses)."]
  torch_rows = {(r["T"], r["attention"]): r for r in results["torch"].get("rows", [])}
  if "parity_max_abs_diff" in results["torch"]:
    lines.append(f"PyTorch {results['torch']['version']} ({results['torch']['threads']} threads): parity with ssmax_tiny "
                 f"{results['torch']['parity_max_abs_diff']:.1e} max abs difference "
                 f"({'ok' if results['torch']['parity_ok'] else 'FAILED'}, bound 1e-4).")
  else: lines.append(f"PyTorch: {results['torch'].get('skipped', 'not run')}")
  for dev in results["tinygrad"]:
    lines += ["", f"### tinygrad {dev['device']} (plain 1024 matmul {dev['matmul_1024_gflops']:.1f} GFLOP/s, "
              f"peak RSS {dev['peak_rss_mib']:.0f} MiB)", "",
              "| T | B | forward s (softmax / SSMax) | SSMax/softmax | kernels (softmax / SSMax) | explicit/folded | "
              "train step s (softmax / SSMax) | SSMax/softmax | train kernels | GFLOP/s fwd, train | vs PyTorch eager fwd, train |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = {(r["T"], r["attention"]): r for r in dev["rows"]}
    for T in sorted({r["T"] for r in dev["rows"]}):
      s, x = rows[(T, "softmax")], rows[(T, "ssmax")]
      tr = lambda r, k: f"{r[k]:.3f}" if k in r else "-"
      ratio = lambda a, b, k: f"{a[k] / b[k]:.3f}" if k in a and k in b else "-"
      t = torch_rows.get((T, "ssmax"), {})
      vs_torch = f"{ratio(x, t, 'forward_s')}x, {ratio(x, t, 'train_step_s')}x" if t else "-"
      lines.append(f"| {T} | {x['B']} | {s['forward_s']:.3f} / {x['forward_s']:.3f} | {x['forward_s'] / s['forward_s']:.3f} | "
                   f"{s['forward_kernels']} / {x['forward_kernels']} | {x['explicit_forward_s'] / x['forward_s']:.2f} | "
                   f"{tr(s, 'train_step_s')} / {tr(x, 'train_step_s')} | {ratio(x, s, 'train_step_s')} | "
                   f"{s.get('train_kernels', '-')} / {x.get('train_kernels', '-')} | {x['forward_gflops']:.1f}, "
                   f"{x.get('train_gflops', float('nan')):.1f} | {vs_torch} |")
    Ts = sorted(T for T in {r["T"] for r in dev["rows"]} if (T, "ssmax") in torch_rows)
    if len(Ts) > 1:  # how cost grows with T: forward time per token (B * T) at the longest length over the shortest
      a, b = rows[(Ts[0], "ssmax")], rows[(Ts[-1], "ssmax")]
      ta, tb = torch_rows[(Ts[0], "ssmax")], torch_rows[(Ts[-1], "ssmax")]
      per_tok = lambda r: r["forward_s"] / (r["B"] * r["T"])  # noqa: E731
      lines += ["", f"Forward time per token, T = {Ts[-1]} over T = {Ts[0]}: tinygrad {per_tok(b) / per_tok(a):.2f}x, "
                f"PyTorch {per_tok(tb) / per_tok(ta):.2f}x (attention's share grows with T in both)."]
    if "decode" in dev:
      d = dev["decode"]
      lines += ["", f"KV-cache decoding (batch {d['batch']}, prompt {d['prompt']}, {d['new']} new positions, one TinyJit step each): "
                f"{d['cached_positions_per_s']:.1f} positions/s against {d['recompute_positions_per_s']:.1f} for a full recompute "
                f"of the prefix, {d['speedup']:.1f}x."]
  if "data_parallel" in results:
    d = results["data_parallel"]
    lines += ["", f"Data parallel (bench/data_parallel.py, token model hidden 128, batch {d['batch']}): training step "
              f"{d['one_device_step_s']:.3f} s on one device, {d['sharded_step_s']:.3f} s split over {d['devices']}: "
              f"speedup {d['speedup']:.2f}x."]
  if torch_rows:
    lines += ["", "### PyTorch eager (SSMax)", "", "| T | B | forward s | train step s | torch.compile forward s |", "|---|---|---|---|---|"]
    for (T, att), r in sorted(torch_rows.items()):
      if att != "ssmax": continue
      comp = f"{r['compiled_forward_s']:.3f}" if "compiled_forward_s" in r else r.get("compiled_forward_error", "-")
      lines.append(f"| {T} | {r['B']} | {r['forward_s']:.3f} | {r['train_step_s']:.3f} |" if "train_step_s" in r else
                   f"| {T} | {r['B']} | {r['forward_s']:.3f} | - |")
      lines[-1] += f" {comp} |"
  return "\n".join(lines) + "\n"


def main() -> int:
  p = argparse.ArgumentParser(description="ssmax_tiny side-by-side benchmark")
  p.add_argument("--devices", default=None,
                 help="tinygrad devices to run, comma-separated (default: every one present of CPU, CL, METAL, CUDA, NV, AMD)")
  p.add_argument("--lengths", default="60,256,1024", help="forward lengths T (default 60,256,1024)")
  p.add_argument("--train-lengths", default="60,256", help="training-step lengths (default 60,256)")
  p.add_argument("--repeats", type=int, default=3, help="timed repeats after warm-up (default 3)")
  p.add_argument("--quick", action="store_true", help="T = 60 only, 2 repeats: a few minutes")
  p.add_argument("--only", choices=["all", "tinygrad"], default="all", help="all, or tinygrad alone without PyTorch (default all)")
  p.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile")
  p.add_argument("--data-parallel", default="CPU:0,CPU:1",
                 help="devices for the data-parallel training-step comparison (default CPU:0,CPU:1; '' to skip)")
  p.add_argument("--out", type=Path, default=HERE.parent / "runs" / "bench" / "bench", help="OUT.json and OUT.md (default runs/bench/bench)")
  p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  p.add_argument("--state-out", default=None, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.quick: args.lengths, args.train_lengths, args.repeats = "60", "60", 2
  try:
    args.lengths = [int(v) for v in args.lengths.split(",")]
    args.train_lengths = [int(v) for v in args.train_lengths.split(",")]
  except ValueError:
    p.error(f"--lengths {args.lengths!r} and --train-lengths {args.train_lengths!r} must be comma-separated integers")
  if args.repeats < 1: p.error(f"--repeats {args.repeats} must be >= 1")
  if args.worker:
    print(json.dumps(worker(args)))
    return 0

  state_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"ssmax_tiny_bench_{os.getpid()}.npz"
  results = dict(machine=f"{os.cpu_count()} CPU cores, {sys.platform}", repeats=args.repeats, lengths=args.lengths, tinygrad=[])
  results["numpy_sgemm_gflops"] = numpy_sgemm_gflops()
  for dev in tinygrad_devices(args.devices.split(",") if args.devices else None):
    print(f"tinygrad {dev} ...", file=sys.stderr, flush=True)
    cmd = [sys.executable, __file__, "--worker", dev, "--state-out", str(state_file), "--lengths", ",".join(map(str, args.lengths)),
           "--train-lengths", ",".join(map(str, args.train_lengths)), "--repeats", str(args.repeats)]
    proc = subprocess.run(cmd, env={**os.environ, "DEV": dev}, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
      print(f"tinygrad {dev} failed (exit {proc.returncode})", file=sys.stderr); continue
    results["tinygrad"].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    dec = subprocess.run([sys.executable, str(HERE / "decode.py")], env={**os.environ, "DEV": dev}, stdout=subprocess.PIPE, text=True)
    if dec.returncode == 0: results["tinygrad"][-1]["decode"] = json.loads(dec.stdout.strip().splitlines()[-1])
  if args.data_parallel:
    dp = subprocess.run([sys.executable, str(HERE / "data_parallel.py"), "--devices", args.data_parallel], stdout=subprocess.PIPE, text=True,
                        env={**os.environ, "DEV": args.data_parallel.split(",")[0].split(":")[0]})
    if dp.returncode == 0: results["data_parallel"] = json.loads(dp.stdout.strip().splitlines()[-1])
  if args.only == "tinygrad": results["torch"] = dict(skipped="not run (--only tinygrad)")
  elif state_file.exists(): results["torch"] = torch_side(args, state_file)
  else: results["torch"] = dict(skipped="not run: no tinygrad device ran, so there are no shared weights to check parity with")
  state_file.unlink(missing_ok=True)
  table = report(results)
  stamp.write(args.out, results, table, device_line=", ".join(dev["device"] for dev in results["tinygrad"]) or None)
  print(table)
  if isinstance(results["torch"], dict) and results["torch"].get("parity_ok") is False:
    print("PyTorch parity FAILED", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
