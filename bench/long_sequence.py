"""Peak memory of one forward pass at a long length (default T = 4096, B = 1, a small model).

  python bench/long_sequence.py [--T 4096] [--hidden 32] [--heads 2] [--layers 2] [--query-block C]

Prints JSON: the process's peak resident set (ru_maxrss) before and after the forward pass (on the CPU and CL devices
tinygrad's buffers live in this process's memory), what tinygrad still holds afterwards (GlobalCounters.mem_used), and
the size of one attention matrix (B * H * T * T float32), the term that grows with T squared.
"""
import argparse
import json
import resource

from tinygrad import Device, GlobalCounters, Tensor

import ssmax_tiny


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--T", type=int, default=4096, help="sequence length (default 4096)")
  p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
  p.add_argument("--hidden", type=int, default=32, help="hidden_size (default 32)")
  p.add_argument("--heads", type=int, default=2, help="num_heads (default 2)")
  p.add_argument("--layers", type=int, default=2, help="num_layers (default 2)")
  p.add_argument("--query-block", type=int, default=None,
                 help="queries per attention block (default: chosen from T, the whole matrix while it fits in 256 MiB)")
  a = p.parse_args()
  Tensor.manual_seed(0)
  model = ssmax_tiny.build(a.hidden, hidden_size=a.hidden, num_heads=a.heads, num_layers=a.layers, window_size=a.T, output_mode="all",
                           query_block=a.query_block)
  x = Tensor.randn(a.batch, a.T, a.hidden).realize()
  base = GlobalCounters.mem_used
  rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  y = model.forward(x).realize()
  out = dict(device=Device.DEFAULT, T=a.T, batch=a.batch, hidden=a.hidden, heads=a.heads, layers=a.layers,
             query_block=model.query_block(a.batch, a.T),
             finite=bool(y.isnan().logical_not().all().item()),
             attention_matrix_mib=a.batch * a.heads * a.T * a.T * 4 / 2**20,
             device_mem_after_mib=(GlobalCounters.mem_used - base) / 2**20,
             peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rss_before_forward_mib=rss0 / 1024)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
