"""Causal attention at inference in one OpenCL kernel that never stores a score: FlashAttention-2's online softmax
(Dao 2023, arXiv:2307.08691, Algorithm 1) written for a CPU's OpenCL, run through tinygrad's custom kernels.

What tinygrad 0.14 makes of attention on PoCL stores each block's scores and reads them again (the row maximum, the exp,
the row sum, the product with v: docs/long-context.md). Here one work-item holds GROUPS x ROWS query rows, GROUPS vectors
of ROWS lanes (float16: one AVX-512 register), and walks their keys in blocks of KEYS: the block's scores s = q k^T in
registers, the running maximum m and sum l, and the output accumulator rescaled by exp(m_old - m_new) once per block; exp
runs once per score (as exp2, q carrying log2(e)). Keys after the work-item's first row are taken one at a time, each
masked by the rows' positions (the causal mask, query row i at position start_pos + i). One kernel per layer at every T:
no query blocks, no scores in memory.

The kernel is OpenCL C handed to tinygrad as a compiled PROGRAM (tinygrad/codegen/__init__.py, `do_to_program` takes an
Ops.PROGRAM with its SOURCE; `Tensor.custom_kernel` puts it in the graph), so it is scheduled, cached and captured by
TinyJit like tinygrad's own kernels. T, the number of keys and start_pos are read at run time from a small buffer, so
one compiled kernel per head size serves every length. A decoding step, whose number of keys changes each step under
one TinyJit, has a kernel of its own (`decode`, below).

`install()` (ssmax_tiny.pocl) sets `model.streaming_attention` to `attend` for its devices; `attend` returns None where it
does not apply (a device without the kit, a dtype other than float32) and the model takes its own path. Exact to the
materialised path within 1e-5 (tests/test_pocl.py); speed: docs/long-context.md.
"""
from __future__ import annotations

import math

from tinygrad import Tensor, dtypes
from tinygrad.helpers import to_function_name
from tinygrad.uop.ops import KernelInfo, Ops, UOp

GROUPS, ROWS, KEYS = 2, 16, 8   # per work-item GROUPS x ROWS query rows (float16 lanes), keys per block: bench/attention.py
devices: set[str] = set()   # the CL devices install() put this in place for

SOURCE = r"""
#define ROWS {rows}
#define G {groups}
#define D {head}
#define KEYS {keys}
typedef float{rows} vf;
// O^T and Q^T (N, D, T), q scaled by log2(e) / sqrt(D); K and V (N, TK, D); P = (T, TK, START), the sizes read at run
// time, so that one compiled kernel serves every length; G x ROWS rows per work-item, G vectors of ROWS lanes
__kernel void {name}(__global float* O, __global const float* Qt, __global const float* K, __global const float* V,
                     __global const int* P) {{
  const int T = P[0], TK = P[1], START = P[2];
  const int r0 = get_global_id(0) * ROWS * G, n = get_global_id(1);
  __global const float* k = K + (size_t)n * TK * D;
  __global const float* v = V + (size_t)n * TK * D;
  vf q[G][D], acc[G][D], m[G], l[G];
  for (int g = 0; g < G; g++) {{
    m[g] = (vf)(-INFINITY); l[g] = (vf)(0.0f);
    for (int c = 0; c < D; c++) {{ q[g][c] = vload{rows}(0, Qt + ((size_t)n * D + c) * T + r0 + g * ROWS); acc[g][c] = (vf)(0.0f); }}
  }}
  // keys 0 .. START + r0 are seen by every row: whole blocks of KEYS, unmasked
  int j0 = 0;
  for (; j0 + KEYS <= START + r0 + 1; j0 += KEYS) {{
    vf s[G][KEYS];
    for (int g = 0; g < G; g++) for (int b = 0; b < KEYS; b++) s[g][b] = (vf)(0.0f);
    for (int c = 0; c < D; c++) for (int b = 0; b < KEYS; b++) {{
      const vf kk = (vf)(k[(j0 + b) * D + c]);
      for (int g = 0; g < G; g++) s[g][b] = fma(q[g][c], kk, s[g][b]);
    }}
    vf rescale[G];
    for (int g = 0; g < G; g++) {{
      vf m_new = m[g];
      for (int b = 0; b < KEYS; b++) m_new = fmax(m_new, s[g][b]);
      rescale[g] = exp2(m[g] - m_new);
      m[g] = m_new;
      l[g] *= rescale[g];
      for (int b = 0; b < KEYS; b++) {{ s[g][b] = exp2(s[g][b] - m_new); l[g] += s[g][b]; }}
    }}
    for (int c = 0; c < D; c++) {{
      vf a[G];
      for (int g = 0; g < G; g++) a[g] = acc[g][c] * rescale[g];
      for (int b = 0; b < KEYS; b++) {{
        const vf vv = (vf)(v[(j0 + b) * D + c]);
        for (int g = 0; g < G; g++) a[g] = fma(s[g][b], vv, a[g]);
      }}
      for (int g = 0; g < G; g++) acc[g][c] = a[g];
    }}
  }}
  // the rest one key at a time: key j is seen by the rows at positions START + r >= j
  for (int j = j0; j < min(START + r0 + ROWS * G, TK); j++) {{
    for (int g = 0; g < G; g++) {{
      const vf position = (vf)((float)(START + r0 + g * ROWS)) + (vf)({lanes});
      vf s = (vf)(0.0f);
      for (int c = 0; c < D; c++) s = fma(q[g][c], (vf)(k[j * D + c]), s);
      s = select(s, (vf)(-INFINITY), isless(position, (vf)((float)j)));
      const vf m_new = fmax(m[g], s), rescale = exp2(m[g] - m_new), p = exp2(s - m_new);
      m[g] = m_new;
      l[g] = l[g] * rescale + p;
      for (int c = 0; c < D; c++) acc[g][c] = fma(p, (vf)(v[j * D + c]), acc[g][c] * rescale);
    }}
  }}
  for (int g = 0; g < G; g++) {{
    const vf inverse = (vf)(1.0f) / l[g];
    for (int c = 0; c < D; c++) vstore{rows}(acc[g][c] * inverse, 0, O + ((size_t)n * D + c) * T + r0 + g * ROWS);
  }}
}}
"""


def _program(name: str, source: str, grid: tuple[int, int]):
  """custom_kernel's fxn for a kernel written in OpenCL C: tinygrad's PROGRAM over placeholders (the output, then the
  inputs, the last an int32 buffer). tinygrad reads off the SINK what it needs (ProgramInfo.from_sink): the launch size
  (SPECIAL), the buffers (PARAM), what is written (a STORE into the output) and read (a LOAD of each input); the code is
  `source`, compiled once per source."""
  def fxn(out: UOp, *ins: UOp) -> UOp:
    first = lambda X: X.flatten()[0]
    marks = first(out).store(sum(first(X).load().cast(dtypes.float32) for X in ins))
    sink = UOp.sink(marks, *(UOp.special(n, f"gidx{i}") for i, n in enumerate(grid)), arg=KernelInfo(name=name))
    params = sorted((u for u in sink.toposort() if u.op is Ops.PARAM), key=lambda u: u.arg.slot)
    return UOp(Ops.PROGRAM, src=(sink, UOp(Ops.LINEAR, src=(*params, sink)), UOp(Ops.SOURCE, arg=source)))
  return fxn


def attend(q: Tensor, k: Tensor, v: Tensor, start_pos: int | UOp, cache: Tensor | None = None) -> Tensor | None:
  """Causal softmax(q k^T / sqrt(Hd)) v over q [B, H, T, Hd] (any per-row scale already in q), k and v [B, H, T_k, Hd];
  query row i at position start_pos + i sees keys 0 .. start_pos + i. A decoding step (one query, start_pos a bound
  Variable) reads its keys from `cache` [2, B, H, max_len, Hd] (`decode`). None where these kernels do not apply."""
  if q.device not in devices or not all(t.dtype == dtypes.float32 for t in (q, k, v)): return None
  if not isinstance(start_pos, int):
    return decode(q, cache, start_pos) if cache is not None and cache.dtype == dtypes.float32 and q.shape[2] == 1 else None
  B, H, T, Hd = q.shape
  T_k = k.shape[2]
  if not isinstance(T_k, int) or T_k < start_pos + T: return None
  padded = math.ceil(T / (GROUPS * ROWS)) * GROUPS * ROWS
  qt = (q * (math.log2(math.e) / math.sqrt(Hd))).reshape(B * H, T, Hd).transpose(1, 2)            # (B*H, Hd, T)
  qt = qt.pad(((0, 0), (0, 0), (0, padded - T))).contiguous()                                      # (B*H, Hd, padded)
  kv = [t.reshape(B * H, T_k, Hd).contiguous() for t in (k, v)]                                    # (B*H, T_k, Hd)
  # the source depends on the head size and the work-item's tile only; the sizes are read at run time
  name = f"stream_attend_{Hd}_{GROUPS}x{ROWS}x{KEYS}"
  source = SOURCE.format(groups=GROUPS, rows=ROWS, head=Hd, keys=KEYS, name=to_function_name(name),
                         lanes=", ".join(f"{i}.0f" for i in range(ROWS)))
  sizes = Tensor([padded, T_k, start_pos], dtype=dtypes.int32, device=q.device)
  out = Tensor.empty(B * H, Hd, padded, device=q.device)
  out = out.custom_kernel(qt, *kv, sizes, fxn=_program(name, source, (padded // (GROUPS * ROWS), B * H)))[0]
  return out[:, :, :T].transpose(1, 2).reshape(B, H, T, Hd)                                         # (B, H, T, Hd)


# A decoding step: one query per sequence and head against start_pos + 1 cached keys, a number that changes every step
# while the step's TinyJit replays one compiled kernel. CHUNKS work-items per (sequence, head) split the keys evenly
# (FlashDecoding's split-K: Dao et al. 2023, "Flash-Decoding for long-context inference"); each reads the number of keys
# and the cache's length from a small buffer at run time, walks its share in blocks of 16 keys (scores, block maximum, one
# rescale, exp on a float16 of scores) and writes its running maximum, sum and output; `decode` merges the partials with
# tinygrad ops.
WORK_ITEMS = 32   # (sequence, head) pairs x CHUNKS, at least: both cores busy, and a chunk of keys per work-item

DECODE_SOURCE = r"""
#define D {head}
#define VW {width}
#define NV (D / VW)
typedef float{width} vf;
inline float total(vf t) {{ {total} }}
// part (N, CHUNKS, D + 2): each chunk's maximum (log2 units), sum, and unnormalised output; Q (N, D) scaled by
// log2(e) / sqrt(D); C the cache (2, N, MAXLEN, D); P[0] the number of keys, P[1] MAXLEN; N and CHUNKS the launch's
__kernel void {name}(__global float* part, __global const float* Q, __global const float* C, __global const int* P) {{
  const int chunk = get_global_id(0), n = get_global_id(1), CHUNKS = get_global_size(0), N = get_global_size(1);
  const int keys = P[0], MAXLEN = P[1], per = (keys + CHUNKS - 1) / CHUNKS;
  const int begin = chunk * per, end = min(keys, begin + per);
  __global const float* k = C + (size_t)n * MAXLEN * D;
  __global const float* v = C + ((size_t)N + n) * MAXLEN * D;
  vf q[NV], acc[NV];
  for (int i = 0; i < NV; i++) {{ q[i] = vload{width}(i, Q + n * D); acc[i] = (vf)(0.0f); }}
  float m = -INFINITY, l = 0.0f;
  for (int j0 = begin; j0 < end; j0 += 16) {{
    const int count = min(16, end - j0);
    float s[16];
    for (int b = 0; b < 16; b++) {{
      if (b < count) {{
        vf t = (vf)(0.0f);
        for (int i = 0; i < NV; i++) t = fma(q[i], vload{width}(i, k + (size_t)(j0 + b) * D), t);
        s[b] = total(t);
      }} else s[b] = -INFINITY;
    }}
    float16 scores = vload16(0, s);
    float m_new = m;
    for (int b = 0; b < 16; b++) m_new = fmax(m_new, s[b]);
    const float rescale = exp2(m - m_new);
    m = m_new;
    scores = exp2(scores - (float16)(m));
    vstore16(scores, 0, s);
    float sum = 0.0f;
    for (int i = 0; i < NV; i++) acc[i] *= rescale;
    for (int b = 0; b < count; b++) {{
      sum += s[b];
      for (int i = 0; i < NV; i++) acc[i] = fma((vf)(s[b]), vload{width}(i, v + (size_t)(j0 + b) * D), acc[i]);
    }}
    l = l * rescale + sum;
  }}
  __global float* out = part + ((size_t)n * CHUNKS + chunk) * (D + 2);
  out[0] = m; out[1] = l;
  for (int i = 0; i < NV; i++) vstore{width}(acc[i], 0, out + 2 + i * VW);
}}
"""

# a horizontal sum of a vector of each width: halves added until one lane is left
_TOTAL = {1: "return t;", 2: "return t.s0 + t.s1;", 4: "return (t.s0 + t.s1) + (t.s2 + t.s3);",
          8: "float4 h = t.lo + t.hi; return (h.s0 + h.s1) + (h.s2 + h.s3);",
          16: "float8 e = t.lo + t.hi; float4 h = e.lo + e.hi; return (h.s0 + h.s1) + (h.s2 + h.s3);"}


def decode(q: Tensor, cache: Tensor, start_pos: UOp) -> Tensor | None:
  """One decoding step: q [B, H, 1, Hd] at position start_pos (a bound Variable) against keys and values 0 .. start_pos
  of cache [2, B, H, max_len, Hd]. None for a head size that is not a power of two."""
  B, H, _, Hd = q.shape
  max_len = cache.shape[3]
  if Hd & (Hd - 1) or not isinstance(max_len, int): return None
  N = B * H
  chunks = max(1, WORK_ITEMS // N)
  qs = (q * (math.log2(math.e) / math.sqrt(Hd))).reshape(N, Hd).contiguous()                       # (N, Hd)
  first, second = (Tensor(v, dtype=dtypes.int32, device=q.device) for v in ([1, 0], [0, 1]))
  sizes = (first * (start_pos + 1) + second * max_len).contiguous()                                # (2,): keys, max_len
  name, width = f"stream_decode_{Hd}", min(16, Hd)
  source = DECODE_SOURCE.format(head=Hd, width=width, name=to_function_name(name), total=_TOTAL[width])
  part = Tensor.empty(N, chunks, Hd + 2, device=q.device)
  part = part.custom_kernel(qs, cache.contiguous(), sizes, fxn=_program(name, source, (chunks, N)))[0]
  m, total, acc = part[:, :, 0:1], part[:, :, 1:2], part[:, :, 2:]                                 # (N, chunks, 1 | 1 | Hd)
  w = (m - m.max(axis=1, keepdim=True)).exp2()                  # a chunk without keys: m = -inf, weight 0
  out = (acc * w).sum(axis=1) / (total * w).sum(axis=1)                                              # (N, Hd)
  return out.reshape(B, H, 1, Hd)
