"""How does a forward pass at long context compare with PyTorch's, in time and memory, from 1k to 64k positions?

  python bench/long_context.py [--lengths 1024,4096,16384,32768,65536] [--size edifice|lm] [--frameworks tinygrad,torch]
                               [--out runs/bench/long_context_SIZE] [--keep]     (5 to 10 minutes on 2 CPU cores)

One forward pass, every position, batch 1, of the Edifice default (embed 64, hidden 256, 4 heads, 6 layers, SSMax) or,
with --size lm, make lm's transformer (hidden 64, 4 heads of 16, 2 layers), at each T: tinygrad against PyTorch's
scaled_dot_product_attention on the same model (bench/torch_ref.py). SSMAX_TINY_POCL=1 runs tinygrad with the
OpenCL-on-CPU kit, whose attention is one kernel that never stores a score (ssmax_tiny/pocl/attention.py); plain tinygrad
attends in blocks of queries at long T. Each (framework, T) runs in a fresh process, so that its peak resident memory
(ru_maxrss) is its own; the second forward is timed, the device synchronised before the clock is read. For tinygrad also
the attention's share of the time (the forward again with each attention returning v).
Writes OUT.json, OUT.md (the ratio column: tinygrad's time over PyTorch's) and OUT.png, stamped (bench/stamp.py).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import stamp

ROOT = Path(__file__).parent.parent


SIZES = {"edifice": dict(hidden_size=256, num_heads=4, num_layers=6), "lm": dict(hidden_size=64, num_heads=4, num_layers=2)}


def run_one(framework: str, T: int, size: str = "edifice") -> dict:
  """In this process: one untimed forward at T (compiling kernels), then one timed; peak RSS of the process."""
  if framework == "torch":
    import torch
    sys.path.insert(0, str(Path(__file__).parent))
    from torch_ref import TorchSSMaxTransformer, device
    torch.manual_seed(0)
    model = TorchSSMaxTransformer(64, **SIZES[size]).eval().to(device())
    x = torch.randn(1, T, 64, device=device())
    sync = torch.cuda.synchronize if device().type == "cuda" else (lambda: None)
    with torch.no_grad():
      model(x); sync()
      t0 = time.perf_counter(); model(x); sync(); seconds = time.perf_counter() - t0
    device = f"torch {torch.__version__}, " + ("CUDA" if device().type == "cuda" else f"{torch.get_num_threads()} threads")
  else:
    from tinygrad import Device, Tensor

    import ssmax_tiny
    from ssmax_tiny import pocl
    pocl.use()
    Tensor.manual_seed(0)
    model = ssmax_tiny.build(64, output_mode="all", **SIZES[size])  # every position, as PyTorch computes them (with "last", tinygrad's
    x = Tensor.randn(1, T, 64).realize()              # lazy graph would compute the last layer for one query only)
    model.forward(x).realize()
    Device[Device.DEFAULT].synchronize()
    # realize() only queues the kernels on an asynchronous device (CL, CUDA, Metal): wait for them before reading the clock
    t0 = time.perf_counter(); model.forward(x).realize(); Device[Device.DEFAULT].synchronize(); seconds = time.perf_counter() - t0
    device = f"tinygrad {Device.DEFAULT}" + (" with the OpenCL-on-CPU kit" if pocl.installed() else " (plain tinygrad)")
    import ssmax_tiny.model as M
    # how attention ran: the kit's one kernel (ssmax_tiny/pocl/attention.py), or the model's blocks of queries
    attention = "one kernel (kit)" if M.streaming_attention is not None else f"blocks of {model.query_block(1, T):,}"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # The attention's share of the time: the same forward with attention's T x T part skipped (each attention returns v,
    # the projections, feed-forward and norms unchanged), timed the same way (after one untimed pass)
    M.attend = M.attend_blocked = lambda q, k, v, *args, **kwargs: v
    if M.streaming_attention is not None: M.streaming_attention = lambda q, k, v, *args: v
    model.forward(x).realize(); Device[Device.DEFAULT].synchronize()
    t0 = time.perf_counter(); model.forward(x).realize(); Device[Device.DEFAULT].synchronize()
    return dict(framework=framework, T=T, seconds=seconds, per_token_ms=1000 * seconds / T, device=device, peak_rss_mib=peak,
                attention=attention, attention_share=1 - (time.perf_counter() - t0) / seconds)
  return dict(framework=framework, T=T, seconds=seconds, per_token_ms=1000 * seconds / T, device=device,
              peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def time_target(rows: list[dict], base: int = 4096) -> list[str]:
  """The issue's time target, per framework: the time per token at T within 2x of the time per token at 4k scaled as one
  query's cost grows, the attention's share at 4k times T / 4k and the rest unchanged."""
  out = []
  for fw in dict.fromkeys(r["framework"] for r in rows):
    at = {r["T"]: r for r in rows if r["framework"] == fw}
    if base not in at or "attention_share" not in at[base]: continue
    share = at[base]["attention_share"]
    for T in sorted(t for t in at if t > base):
      expected = (1 - share) + share * T / base
      ratio = at[T]["per_token_ms"] / at[base]["per_token_ms"]
      verdict = "met" if ratio <= 2 * expected else "missed"
      out.append(f"\n{fw}, T = {T}: time per token x{ratio:.2f} that at {base} (attention's share there {100 * share:.0f}%, so "
                 f"x{expected:.2f} if one query's cost grows as T; target at most x{2 * expected:.2f}: {verdict})")
  return out


def plot(rows: list[dict], path: Path, size: dict) -> bool:
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    return False
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
  for fw in dict.fromkeys(r["framework"] for r in rows):
    rs = [r for r in rows if r["framework"] == fw]
    axes[0].plot([r["T"] for r in rs], [r["seconds"] for r in rs], "o-", label=fw)
    axes[1].plot([r["T"] for r in rs], [r["peak_rss_mib"] / 1024 for r in rs], "o-", label=fw)
  for ax, label in zip(axes, ("forward time, s", "peak memory of the process, GiB")):
    ax.set_xscale("log", base=2); ax.set_yscale("log"); ax.set_xlabel("T (batch 1)"); ax.set_ylabel(label); ax.grid(alpha=0.3)
  axes[0].legend()
  fig.suptitle(f"hidden {size['hidden_size']}, {size['num_heads']} heads, {size['num_layers']} layers: one forward pass, every position", fontsize=10)
  fig.tight_layout(); fig.savefig(path, dpi=120); plt.close(fig)
  return True


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--lengths", default="1024,4096,16384,32768,65536", help="sequence lengths (default 1024,4096,16384,32768,65536)")
  p.add_argument("--frameworks", default="tinygrad,torch", help="tinygrad, torch or both (default both)")
  p.add_argument("--out", type=Path, default=None, help="OUT.json, OUT.md, OUT.png (default runs/bench/long_context_SIZE)")
  p.add_argument("--size", choices=tuple(SIZES), default="edifice",
                 help="edifice: the Edifice default (hidden 256, 4 heads, 6 layers); lm: make lm's transformer (hidden 64, 4 heads, 2 layers)")
  p.add_argument("--keep", action="store_true", help="keep OUT.json's rows of the lengths not run now (a length re-run on its own)")
  p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # framework:T, run in this process (the driver's children)
  a = p.parse_args()
  a.out = a.out or stamp.RUNS / f"long_context_{a.size}"
  if a.one:
    fw, T = a.one.split(":")
    print(json.dumps(run_one(fw, int(T), a.size)))
    return
  lengths = [int(t) for t in a.lengths.split(",")]
  rows = []
  if a.keep and a.out.with_suffix(".json").exists():
    rows = [r for r in json.loads(a.out.with_suffix(".json").read_text())["data"] if r["T"] not in lengths]
  for T in lengths:
    for fw in a.frameworks.split(","):
      out = subprocess.run([sys.executable, __file__, "--one", f"{fw}:{T}", "--size", a.size], capture_output=True, text=True, env=os.environ)
      if out.returncode != 0:
        print(f"{fw} at T = {T} failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
        continue
      rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
      r = rows[-1]
      print(f"{fw:>8} T = {T:>6}: {r['seconds']:8.2f} s  {r['per_token_ms']:7.3f} ms/token  peak {r['peak_rss_mib']:8.0f} MiB  "
            f"({r['device']})", flush=True)
  rows.sort(key=lambda r: r["T"])  # stable: each length's frameworks in the order run
  size = SIZES[a.size]
  lines = [f"One forward pass, every position, batch 1, {a.size} model (hidden {size['hidden_size']}, {size['num_heads']} heads, "
           f"{size['num_layers']} layers, SSMax): tinygrad against PyTorch's scaled_dot_product_attention.", "",
           "| T | tinygrad s | PyTorch s | tinygrad / PyTorch | tinygrad peak MiB | PyTorch peak MiB | attention's share (tinygrad) "
           "| tinygrad's attention |",
           "|---:|---:|---:|---:|---:|---:|---:|---|"]
  for T in dict.fromkeys(r["T"] for r in rows):
    t = next((r for r in rows if r["T"] == T and r["framework"] == "tinygrad"), None)
    q = next((r for r in rows if r["T"] == T and r["framework"] == "torch"), None)
    f = lambda r, k, fmt: format(r[k], fmt) if r is not None and k in r else "-"   # noqa: E731
    lines.append(f"| {T:,} | {f(t, 'seconds', '.2f')} | {f(q, 'seconds', '.2f')} | "
                 f"{'**x%.2f**' % (t['seconds'] / q['seconds']) if t and q else '-'} | {f(t, 'peak_rss_mib', '.0f')} | "
                 f"{f(q, 'peak_rss_mib', '.0f')} | {'%.0f%%' % (100 * t['attention_share']) if t and 'attention_share' in t else '-'} | "
                 f"{(t['attention'] if 'attention' in t else 'blocks of %s' % format(t['query_block'], ',')) if t else '-'} |")
  lines += time_target(rows)
  stamp.write(a.out, rows, "\n".join(lines) + "\n", device_line=", ".join(dict.fromkeys(r["device"] for r in rows)))
  print("\n".join(lines))
  plotted = plot(rows, a.out.with_suffix(".png"), SIZES[a.size])
  print(f"wrote {a.out.with_suffix('.json')}, {a.out.with_suffix('.md')}" + (f", {a.out.with_suffix('.png')}" if plotted else ""))


if __name__ == "__main__":
  main()
