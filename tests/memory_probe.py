"""Peak memory of one forward pass at a long length (default T = 4096, B = 1, a small model).

  python tests/memory_probe.py [--T 4096] [--hidden 32] [--heads 2] [--layers 2] [--query-block C]

Prints JSON: the process's resident set before the forward pass and its peak during it (VmHWM, reset just before) (on the CPU and CL devices
tinygrad's buffers live in this process's memory), what tinygrad still holds afterwards (GlobalCounters.mem_used), and
the size of one attention matrix (B * H * T * T float32), the term that grows with T squared.
"""
import argparse
import json
import resource

from tinygrad import Device, GlobalCounters, Tensor

import ssmax_tiny


def _status_kib(field: str) -> int | None:
  try:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))
  except (OSError, StopIteration):
    return None


def reset_peak() -> int:
  """The resident set now (KiB), after resetting the kernel's peak (VmHWM) to it where Linux allows (writing 5 to
  /proc/self/clear_refs), so that the peak read afterwards belongs to what runs in between, not to anything earlier
  (imports, compiling, a transient of the start-up); elsewhere ru_maxrss, which cannot be reset."""
  try:
    with open("/proc/self/clear_refs", "w") as f: f.write("5")
    return _status_kib("VmRSS")
  except OSError:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_kib() -> int:
  return _status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


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
  rss0 = reset_peak()
  y = model.forward(x).realize()
  out = dict(device=Device.DEFAULT, T=a.T, batch=a.batch, hidden=a.hidden, heads=a.heads, layers=a.layers,
             query_block=model.query_block(a.batch, a.T),
             finite=bool(y.isnan().logical_not().all().item()),
             attention_matrix_mib=a.batch * a.heads * a.T * a.T * 4 / 2**20,
             device_mem_after_mib=(GlobalCounters.mem_used - base) / 2**20,
             peak_rss_mib=peak_kib() / 1024, rss_before_forward_mib=rss0 / 1024)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
