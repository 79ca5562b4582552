"""How fast does decoding run with the KV cache, against recomputing the prefix and against PyTorch at long context?

  python bench/decode.py                                   (make bench: cached steps against a full recompute, 32 positions)
  python bench/decode.py --long [--cached 1024,8192,32768,65536] [--size edifice|lm] [--new 32] [--out runs/bench/decode]

Short form: a Decoder (ssmax_tiny.model) runs each new position through one TinyJit with the position a bound Variable;
the baseline recomputes the whole prefix for each new position. Both give the same hidden states (tests). Prints JSON.

--long: positions per second after N cached positions, tinygrad's Decoder against a PyTorch decoder of the same weights
(bench/torch_ref.py's model with a preallocated cache, SDPA over the cached keys), each step's output read back. The
caches are filled with random keys and values instead of a prefill (a step's cost does not depend on their values, and a
64k prefill takes minutes here); the position continues from N as after a real prefill. Steps alternate between the
two frameworks (paired ratio, tinygrad over PyTorch). Writes OUT.json and OUT.md, stamped (bench/stamp.py).
"""
import argparse
import json
import statistics
import time
from pathlib import Path

from tinygrad import Device, Tensor

import ssmax_tiny
from ssmax_tiny import pocl

SIZES = {"edifice": dict(hidden_size=256, num_heads=4, num_layers=6), "lm": dict(hidden_size=64, num_heads=4, num_layers=2)}


def short(a):
  Tensor.manual_seed(0)
  model = ssmax_tiny.build(64, output_mode="all")
  total = a.prompt + a.new
  x = Tensor.randn(a.batch, total, 64).realize()

  def cached():
    dec = ssmax_tiny.Decoder(model, a.batch, total)
    dec.prefill(x[:, :a.prompt].contiguous())
    t0 = time.perf_counter()
    for pos in range(a.prompt, total): dec.step(x[:, pos:pos + 1]).numpy()
    return time.perf_counter() - t0

  def recompute():
    t0 = time.perf_counter()
    for pos in range(a.prompt, total): model.forward(x[:, :pos + 1].contiguous())[:, -1].numpy()
    return time.perf_counter() - t0

  cached()  # warm-up: compiles and captures
  t_cached = min(cached() for _ in range(2))
  recompute()
  t_full = recompute()
  print(json.dumps(dict(device=Device.DEFAULT, prompt=a.prompt, new=a.new, batch=a.batch, cached_positions_per_s=a.new / t_cached,
                        recompute_positions_per_s=a.new / t_full, speedup=t_full / t_cached)))


def long(a):
  import numpy as np
  import stamp
  import torch
  from tinygrad.nn.state import get_state_dict
  from torch_ref import TorchSSMaxTransformer, load_tinygrad_state
  size = SIZES[a.size]
  Tensor.manual_seed(0)
  model = ssmax_tiny.build(64, dropout=0.0, **size)
  ref = TorchSSMaxTransformer(64, dropout=0.0, **size).eval()
  load_tinygrad_state(ref, {k: v.numpy() for k, v in get_state_dict(model).items()})
  H, Hd = size["num_heads"], size["hidden_size"] // size["num_heads"]
  rows = []
  for cached in (int(c) for c in a.cached.split(",")):
    max_len = cached + 2 * a.new + 4
    dec = ssmax_tiny.Decoder(model, 1, max_len)
    for layer in dec.cache.layers: layer.assign(Tensor.randn(*layer.shape)).realize()
    dec.pos = cached
    x = np.random.default_rng(0).standard_normal((1, 1, 64)).astype(np.float32)
    xt, xg = torch.from_numpy(x), Tensor(x).realize()
    for _ in range(2): dec.step(xg).numpy()                                            # steps 0 and 1 compile and capture the jit
    caches = [torch.from_numpy(layer.numpy()) for layer in dec.cache.layers]       # the same cached keys and values
    got = dec.step(xg).numpy()
    with torch.no_grad():
      want = ref.step(xt, caches, dec.pos - 1).numpy()                                # the same position, the same cache
      times = {"tinygrad": [], "torch": []}
      for i in range(a.new):
        t0 = time.perf_counter(); dec.step(xg).numpy(); times["tinygrad"].append(time.perf_counter() - t0)
        t0 = time.perf_counter(); ref.step(xt, caches, cached + 3 + i); times["torch"].append(time.perf_counter() - t0)
    ratios = sorted(t / p for t, p in zip(times["tinygrad"], times["torch"]))
    cache_mib = sum(layer.nbytes() for layer in dec.cache.layers) / 2**20
    rows.append(dict(cached=cached, tinygrad_positions_per_s=1 / statistics.median(times["tinygrad"]),
                     torch_positions_per_s=1 / statistics.median(times["torch"]), ratio=statistics.median(ratios),
                     q1=ratios[len(ratios) // 4], q3=ratios[3 * len(ratios) // 4], cache_mib=cache_mib,
                     max_abs_difference=float(np.abs(got - want).max())))
    print(json.dumps(rows[-1]), flush=True)
  title = (f"Decoding one position at a time after N cached positions, {a.size} model (hidden {size['hidden_size']}, {H} heads of {Hd}, "
           f"{size['num_layers']} layers, SSMax), batch 1: tinygrad {Device.DEFAULT}'s Decoder against PyTorch {torch.__version__} "
           f"({torch.get_num_threads()} threads) with the same weights and cache; {a.new} steps alternating.")
  md = [title, "", "| cached positions | tinygrad positions/s | PyTorch positions/s | tinygrad / PyTorch time, paired (quartiles) | "
        "cache MiB | outputs differ by |", "|---:|---:|---:|---|---:|---:|"]
  md += [f"| {r['cached']:,} | {r['tinygrad_positions_per_s']:.1f} | {r['torch_positions_per_s']:.1f} | **x{r['ratio']:.2f}** "
         f"({r['q1']:.2f} to {r['q3']:.2f}) | {r['cache_mib']:.0f} | {r['max_abs_difference']:.1e} |" for r in rows]
  stamp.write(a.out, dict(size=a.size, rows=rows), "\n".join(md) + "\n")
  print("\n".join(md))


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--prompt", type=int, default=32, help="short form: prompt length (default 32)")
  p.add_argument("--new", type=int, default=32, help="positions decoded and timed (default 32)")
  p.add_argument("--batch", type=int, default=1, help="short form: batch size (default 1)")
  p.add_argument("--long", action="store_true", help="long context against PyTorch (needs the extra 'torch')")
  p.add_argument("--cached", default="1024,8192,32768,65536", help="--long: cached positions (default 1024,8192,32768,65536)")
  p.add_argument("--size", choices=tuple(SIZES), default="edifice", help="--long: the Edifice default or make lm's transformer")
  p.add_argument("--out", type=Path, default=None, help="--long: OUT.json and OUT.md (default runs/bench/decode_SIZE)")
  a = p.parse_args()
  pocl.use()
  if not a.long: return short(a)
  import stamp
  a.out = a.out or stamp.RUNS / f"decode_{a.size}"
  long(a)


if __name__ == "__main__":
  main()
