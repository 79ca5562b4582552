"""Decoding at long context with the KV cache: positions per second after 1k, 8k and 32k cached positions, and the
cache's memory. Default model: the Edifice configuration (hidden 256, 4 heads, 6 layers), batch 1, SSMax.

  python bench/decode_long.py [--cached 1024,8192,32768] [--new 32] [--out bench/decode_long]

The cache is filled with random keys and values instead of a prefill (a step's cost does not depend on their values,
and a 32k prefill of this model takes minutes here); Decoder.pos is set to the cached length, so n and the positions
continue from there as after a real prefill. Each step is the Decoder's TinyJit replay (the position a bound Variable).
Writes JSON and a Markdown table.
"""
import argparse
import json
import time
from pathlib import Path

from tinygrad import Device, Tensor

import ssmax_tiny


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--cached", default="1024,8192,32768", help="cached positions before decoding (default 1024,8192,32768)")
  p.add_argument("--new", type=int, default=32, help="positions decoded and timed after a warm-up (default 32)")
  p.add_argument("--out", type=Path, default=Path(__file__).parent / "decode_long", help="writes OUT.json and OUT.md")
  a = p.parse_args()
  Tensor.manual_seed(0)
  model = ssmax_tiny.build(256)
  rows = []
  for cached in (int(c) for c in a.cached.split(",")):
    dec = ssmax_tiny.Decoder(model, 1, cached + 2 * a.new + 4)
    for layer in dec.cache.layers: layer.assign(Tensor.randn(*layer.shape)).realize()
    cache_bytes = sum(layer.nbytes() for layer in dec.cache.layers)
    dec.pos = cached
    x = Tensor.randn(1, 1, 256).realize()
    for _ in range(a.new + 2): dec.step(x).numpy()            # warm-up: steps 0 and 1 compile and capture the jit
    t0 = time.perf_counter()
    for _ in range(a.new): dec.step(x).numpy()
    dt = time.perf_counter() - t0
    rows.append(dict(cached=cached, positions_per_s=round(a.new / dt, 2), ms_per_position=round(1000 * dt / a.new, 2),
                     cache_mib=round(cache_bytes / 2**20, 1), cache_kib_per_position=round(cache_bytes / (cached + 2 * a.new + 4) / 1024, 2)))
    print(json.dumps(rows[-1]), flush=True)
  result = dict(device=Device.DEFAULT, model="Edifice default (hidden 256, 4 heads, 6 layers), SSMax, batch 1", rows=rows)
  a.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
  md = [f"Decoding with the KV cache on {Device.DEFAULT}, {result['model']} (`python bench/decode_long.py`).", "",
        "| cached positions | positions / s | ms / position | cache (MiB) |", "|---|---|---|---|"]
  md += [f"| {r['cached']:,} | {r['positions_per_s']:.1f} | {r['ms_per_position']:.1f} | {r['cache_mib']:.0f} |" for r in rows]
  a.out.with_suffix(".md").write_text("\n".join(md) + "\n")
  print("\n".join(md))


if __name__ == "__main__":
  main()
