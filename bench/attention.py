"""Which kernel computes a layer's causal attention fastest at long T on OpenCL on a CPU, and does the kit's pay?

  SSMAX_TINY_POCL=1 DEV=CL python bench/attention.py [--lengths 4096,16384] [--repeats 3] [--out runs/bench/attention]
                                                                                        (3 to 5 minutes on 2 CPU cores)

One layer's attention, batch 1, 4 heads, at make lm's head size (16) and the Edifice default's (64), q, k, v random:
- the model's own path with the kit's schedules: blocks of queries, each block's scores stored and read again
  (`model.attend_blocked`, the query block `default_query_block` picks);
- the kit's kernel (ssmax_tiny/pocl/attention.py): the online softmax in OpenCL C, 2 x 16 query rows (two float16
  vectors) per work-item and blocks of 8 keys, and three other shapes of it (16 rows x 16 keys, 2 x 16 x 16, 4 x 16 x 8);
- the same online softmax written in tinygrad's UOps (`uop_attend` below, `Tensor.custom_kernel` with register
  accumulators, rows upcast by 8, so that tinygrad's codegen renders it): only at the shortest length, it is slow.
Each variant's output is checked against the model's path; the variants alternate, `--repeats` times, and the table gives
each one's median time and its ratio to the kit's kernel. Writes OUT.json and OUT.md, stamped (bench/stamp.py).
"""
import argparse
import math
import statistics
import time
from pathlib import Path

import numpy as np
import stamp
from tinygrad import Device, Tensor, dtypes
from tinygrad.dtype import AddrSpace
from tinygrad.uop.ops import AxisType, KernelInfo, UOp

from ssmax_tiny import model, pocl
from ssmax_tiny.pocl import attention

LANDED = "kit's kernel, 2 x 16 rows x 8 keys (landed)"


def uop_kernel(rows: int):
  """The online softmax as a tinygrad UOp kernel: O^T and Q^T (N, d, T), q scaled by log2(e) / sqrt(d); K, V (N, T, d).
  Per query row: the row maximum over its keys, then the sum and the product with v, recomputing the scores (two passes
  over the keys, each in registers)."""
  def kern(O: UOp, Q: UOp, K: UOp, V: UOp) -> UOp:
    N, d, T = Q.shape
    n, i, w = UOp.range(N, 0), UOp.range(T // rows, 1), UOp.range(rows, 2, AxisType.UPCAST)
    row = i * rows + w
    q = [Q[n, c, row] for c in range(d)]
    seen, last = row + 1, i * rows + rows        # keys row sees, keys the block's last row sees
    m = UOp.placeholder((rows,), dtypes.float, 0, addrspace=AddrSpace.REG)
    m = m.after(n, i)[w].set(-math.inf)
    j = UOp.range(last, 3, AxisType.REDUCE)
    mj = m.after(j)[w]
    m = m[w].set((j < seen).where(mj.maximum(sum(q[c] * K[n, j, c] for c in range(d))), mj), end=j)
    l = UOp.placeholder((rows,), dtypes.float, 1, addrspace=AddrSpace.REG)
    acc = UOp.placeholder((d, rows), dtypes.float, 2, addrspace=AddrSpace.REG)
    l = l.after(m[w])[w].set(0.0)
    acc = acc.after(UOp.group(*[acc.after(m[w])[c, w].store(0.0) for c in range(d)]))
    j2 = UOp.range(last, 4, AxisType.REDUCE)
    p = (j2 < seen).where((sum(q[c] * K[n, j2, c] for c in range(d)) - m[w]).exp2(), 0.0)
    lj, aj = l.after(j2), acc.after(j2)
    done = UOp.group(lj[w].store(lj[w] + p), *[aj[c, w].store(aj[c, w] + p * V[n, j2, c]) for c in range(d)]).end(j2)
    l, acc = l.after(done), acc.after(done)
    out = UOp.group(*[O[n, c, row].store(acc[c, w] / l[w]) for c in range(d)])
    return out.end(n, i, w).sink(arg=KernelInfo(name=f"uop_attend_{N}_{T}_{d}", opts_to_apply=()))
  return kern


def uop_attend(q: Tensor, k: Tensor, v: Tensor, rows: int = 8) -> Tensor:
  B, H, T, d = q.shape
  qt = (q * (math.log2(math.e) / math.sqrt(d))).reshape(B * H, T, d).transpose(1, 2).contiguous()
  out = Tensor.empty(B * H, d, T).custom_kernel(qt, k.reshape(B * H, T, d).contiguous(), v.reshape(B * H, T, d).contiguous(),
                                                fxn=uop_kernel(rows))[0]
  return out.transpose(1, 2).reshape(B, H, T, d)


def kit(groups: int, rows: int, keys: int):
  def run(q, k, v):
    landed, (attention.GROUPS, attention.ROWS, attention.KEYS) = (attention.GROUPS, attention.ROWS, attention.KEYS), (groups, rows, keys)
    try: return attention.attend(q, k, v, 0)
    finally: attention.GROUPS, attention.ROWS, attention.KEYS = landed
  return run


def blocked(q, k, v):
  B, H, T, _ = q.shape
  return model.attend_blocked(q, k, v, model.default_query_block(B, H, T, T))


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--lengths", default="4096,16384", help="sequence lengths (default 4096,16384)")
  p.add_argument("--repeats", type=int, default=3, help="timed calls of each variant, alternating (default 3)")
  p.add_argument("--out", type=Path, default=stamp.RUNS / "attention", help="OUT.json and OUT.md (default runs/bench/attention)")
  a = p.parse_args()
  if not pocl.install(): p.error("the kit's kernel needs tinygrad's OpenCL device on a CPU: SSMAX_TINY_POCL=1 DEV=CL")
  lengths = [int(t) for t in a.lengths.split(",")]
  variants = {"model's path (blocks, kit's schedules)": blocked, LANDED: kit(2, 16, 8),
              "kit's kernel, 16 rows x 16 keys": kit(1, 16, 16), "kit's kernel, 2 x 16 rows x 16 keys": kit(2, 16, 16),
              "kit's kernel, 4 x 16 rows x 8 keys": kit(4, 16, 8), "UOp kernel (tinygrad's codegen)": uop_attend}
  rows = []
  for head in (16, 64):
    for T in lengths:
      Tensor.manual_seed(0)
      q, k, v = (Tensor.randn(1, 4, T, head).realize() for _ in range(3))
      here = {name: f for name, f in variants.items() if name != "UOp kernel (tinygrad's codegen)" or T == min(lengths)}
      want = blocked(q, k, v).numpy()
      times = {name: [] for name in here}
      for name, f in here.items():   # compile, and check
        got = f(q, k, v).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)
      for _ in range(a.repeats):
        for name, f in here.items():
          t0 = time.perf_counter(); f(q, k, v).realize(); Device[Device.DEFAULT].synchronize()
          times[name].append(time.perf_counter() - t0)
      for name, ts in times.items():
        rows.append(dict(head=head, T=T, variant=name, seconds=statistics.median(ts), all=ts))
        print(f"head {head:>2} T = {T:>6}: {statistics.median(ts):8.3f} s  {name}", flush=True)
  kit_s = {(r["head"], r["T"]): r["seconds"] for r in rows if r["variant"] == LANDED}
  lines = [f"One layer's causal attention, batch 1, 4 heads, median of {a.repeats} alternating calls; ratio: the variant's time "
           "over the kit's kernel as it landed (2 x 16 rows x 8 keys).", "",
           "| head size | T | variant | s | / kit's kernel |", "|---:|---:|---|---:|---:|"]
  lines += [f"| {r['head']} | {r['T']:,} | {r['variant']} | {r['seconds']:.3f} | x{r['seconds'] / kit_s[r['head'], r['T']]:.2f} |" for r in rows]
  stamp.write(a.out, rows, "\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
