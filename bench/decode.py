"""KV-cache decoding against a full recompute: positions per second, one position at a time.

  python bench/decode.py [--prompt 32] [--new 32] [--repeats 3]

A Decoder (ssmax_tiny.model) runs each new position through one TinyJit with the position a bound Variable; the
baseline recomputes the whole prefix for each new position (the model's forward, unjitted since its length changes).
Both produce the same hidden states (tests/test_model.py). Default model: the Edifice configuration (hidden 256, 4 heads,
6 layers), batch 1. Prints JSON.
"""
import argparse
import json
import time

from tinygrad import Device, Tensor

import ssmax_tiny


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--prompt", type=int, default=32, help="prompt length (default 32)")
  p.add_argument("--new", type=int, default=32, help="positions decoded after the prompt (default 32)")
  p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
  a = p.parse_args()
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


if __name__ == "__main__":
  main()
