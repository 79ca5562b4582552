"""Causal attention at inference in one OpenCL kernel that never stores a score: FlashAttention-2's online softmax
(Dao 2023, arXiv:2307.08691, Algorithm 1) written for a CPU's OpenCL, run through tinygrad's custom kernels.

What tinygrad 0.14 makes of attention on PoCL stores each block's scores and reads them again (the row maximum, the exp,
the row sum, the product with v: docs/long-context.md). Here one work-item holds ROWS query rows as the lanes of float16
vectors and walks their keys in blocks of KEYS: the block's scores s = q k^T (ROWS x KEYS, in registers), the running
maximum m and sum l, and the output accumulator rescaled by exp(m_old - m_new) once per block; exp runs once per score
(as exp2, q carrying log2(e)). Keys after the block's first row are taken one at a time, each masked by the rows'
positions (the causal mask, query row i at position start_pos + i). One kernel per layer at every T: no query blocks,
no scores in memory.

The kernel is OpenCL C handed to tinygrad as a compiled PROGRAM (tinygrad/codegen/__init__.py, `do_to_program` takes an
Ops.PROGRAM with its SOURCE; `Tensor.custom_kernel` puts it in the graph), so it is scheduled, cached and captured by
TinyJit like tinygrad's own kernels. The shapes and start_pos are compile-time constants: one compiled kernel per
(heads, T, keys, head size, start_pos), which long-context evaluation and prefill reuse layer after layer. A decoding
step (a symbolic start_pos) keeps the model's own path.

`install()` (ssmax_tiny.pocl) sets `model.streaming_attention` to `attend` for its devices; `attend` returns None where it
does not apply (a device without the kit, a dtype other than float32) and the model takes its own path. Exact to the
materialised path within 1e-5 (tests/test_pocl.py); speed: docs/long-context.md.
"""
from __future__ import annotations

import math

from tinygrad import Tensor, dtypes
from tinygrad.helpers import to_function_name
from tinygrad.uop.ops import KernelInfo, Ops, UOp

ROWS, KEYS = 16, 16   # query rows per work-item (float16 lanes) and keys per block: bench/levers.py --lever stream
devices: set[str] = set()   # the CL devices install() put this in place for

SOURCE = r"""
#define ROWS {rows}
#define D {head}
#define KEYS {keys}
#define T {padded}
#define TK {seen}
#define START {start}
typedef float{rows} vf;
// O^T and Q^T (N, D, T), q scaled by log2(e) / sqrt(D); K and V (N, TK, D); ROWS rows (lanes) per work-item
__kernel void {name}(__global float* O, __global const float* Qt, __global const float* K, __global const float* V) {{
  const int r0 = get_global_id(0) * ROWS, n = get_global_id(1);
  __global const float* k = K + (size_t)n * TK * D;
  __global const float* v = V + (size_t)n * TK * D;
  vf q[D], acc[D], m = (vf)(-INFINITY), l = (vf)(0.0f);
  for (int c = 0; c < D; c++) {{ q[c] = vload{rows}(0, Qt + ((size_t)n * D + c) * T + r0); acc[c] = (vf)(0.0f); }}
  // keys 0 .. START + r0 are seen by every row: whole blocks of KEYS, unmasked
  int j0 = 0;
  for (; j0 + KEYS <= START + r0 + 1; j0 += KEYS) {{
    vf s[KEYS];
    for (int b = 0; b < KEYS; b++) s[b] = (vf)(0.0f);
    for (int c = 0; c < D; c++) for (int b = 0; b < KEYS; b++) s[b] = fma(q[c], (vf)(k[(j0 + b) * D + c]), s[b]);
    vf m_new = m;
    for (int b = 0; b < KEYS; b++) m_new = fmax(m_new, s[b]);
    const vf rescale = exp2(m - m_new);
    m = m_new;
    l *= rescale;
    for (int b = 0; b < KEYS; b++) {{ s[b] = exp2(s[b] - m); l += s[b]; }}
    for (int c = 0; c < D; c++) {{
      vf a = acc[c] * rescale;
      for (int b = 0; b < KEYS; b++) a = fma(s[b], (vf)(v[(j0 + b) * D + c]), a);
      acc[c] = a;
    }}
  }}
  // the rest one key at a time: key j is seen by the rows at positions START + r >= j
  const vf position = (vf)((float)(START + r0)) + (vf)({lanes});
  for (int j = j0; j < min(START + r0 + ROWS, TK); j++) {{
    vf s = (vf)(0.0f);
    for (int c = 0; c < D; c++) s = fma(q[c], (vf)(k[j * D + c]), s);
    s = select(s, (vf)(-INFINITY), isless(position, (vf)((float)j)));
    const vf m_new = fmax(m, s), rescale = exp2(m - m_new), p = exp2(s - m_new);
    m = m_new;
    l = l * rescale + p;
    for (int c = 0; c < D; c++) acc[c] = fma(p, (vf)(v[j * D + c]), acc[c] * rescale);
  }}
  const vf inverse = (vf)(1.0f) / l;
  for (int c = 0; c < D; c++) vstore{rows}(acc[c] * inverse, 0, O + ((size_t)n * D + c) * T + r0);
}}
"""


def _program(heads: int, padded: int, seen: int, head: int, start: int, rows: int, keys: int):
  """custom_kernel's fxn: the compiled kernel as tinygrad's PROGRAM, over placeholders (O^T, Q^T, K, V)."""
  name = f"stream_attend_{heads}_{padded}_{seen}_{head}_{start}"
  lanes = ", ".join(f"{i}.0f" for i in range(rows))
  source = SOURCE.format(rows=rows, head=head, keys=keys, padded=padded, seen=seen, start=start, name=to_function_name(name), lanes=lanes)

  def fxn(O: UOp, Q: UOp, K: UOp, V: UOp) -> UOp:
    # what tinygrad reads off the kernel (ProgramInfo.from_sink): its launch size (SPECIAL), buffers (PARAM), what it
    # writes (a STORE into O) and reads (LOADs of Q, K, V); the code itself is `source`
    first = lambda X: X.flatten()[0]
    marks = first(O).store(first(Q).load() + first(K).load() + first(V).load())
    sink = UOp.sink(marks, UOp.special(padded // rows, "gidx0"), UOp.special(heads, "gidx1"), arg=KernelInfo(name=name))
    params = sorted((u for u in sink.toposort() if u.op is Ops.PARAM), key=lambda u: u.arg.slot)
    return UOp(Ops.PROGRAM, src=(sink, UOp(Ops.LINEAR, src=(*params, sink)), UOp(Ops.SOURCE, arg=source)))
  return fxn


def attend(q: Tensor, k: Tensor, v: Tensor, start_pos: int) -> Tensor | None:
  """Causal softmax(q k^T / sqrt(Hd)) v over q [B, H, T, Hd] (any per-row scale already in q), k and v [B, H, T_k, Hd];
  query row i at position start_pos + i sees keys 0 .. start_pos + i. None where this kernel does not apply."""
  if q.device not in devices or not isinstance(start_pos, int) or not all(t.dtype == dtypes.float32 for t in (q, k, v)):
    return None
  B, H, T, Hd = q.shape
  T_k = k.shape[2]
  if not isinstance(T_k, int) or T_k < start_pos + T: return None
  padded = math.ceil(T / ROWS) * ROWS
  qt = (q * (math.log2(math.e) / math.sqrt(Hd))).reshape(B * H, T, Hd).transpose(1, 2)            # (B*H, Hd, T)
  qt = qt.pad(((0, 0), (0, 0), (0, padded - T))).contiguous()                                      # (B*H, Hd, padded)
  kv = [t.reshape(B * H, T_k, Hd).contiguous() for t in (k, v)]                                    # (B*H, T_k, Hd)
  out = Tensor.empty(B * H, Hd, padded, device=q.device)
  out = out.custom_kernel(qt, *kv, fxn=_program(B * H, padded, T_k, Hd, start_pos, ROWS, KEYS))[0]
  return out[:, :, :T].transpose(1, 2).reshape(B, H, T, Hd)                                         # (B, H, T, Hd)
