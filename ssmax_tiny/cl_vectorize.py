"""Float arithmetic on whole vectors in tinygrad's OpenCL kernels: exp2 of a float4 in one call, not four; and loads
and stores of eight floats at once, the width of this CPU's vector registers (AVX2), where tinygrad stops at four.

tinygrad writes every elementwise operation out per lane (tinygrad/codegen/__init__.py `do_devectorize`), so a kernel
that loads a float4 and stores exp of it calls exp2 four times on scalars and stacks the results for the store:

    *((__global float4*)(data0+alu0)) = (float4)(exp2(val0.x*K), exp2(val0.y*K), exp2(val0.z*K), exp2(val0.w*K));

OpenCL's exp2, like its arithmetic, takes vectors too. On PoCL (this machine's CPU) exp2 of a float4 runs 4 to 5x
faster than four scalar calls, which its compiler does not vectorise (`python bench/vectorize.py`). The softmax's exp
over the attention scores (realised by `contiguous` in model.py's attention) is such a kernel, 8% of make lm's tuned
step on CL, and the exact GELU (erf's polynomial and exp) another 5%.

One rule, among the OpenCL renderer's final ones (`Renderer.extra_matcher`, applied in tinygrad/codegen/__init__.py),
undoes the split where it is safe: a STACK whose lanes are all the same float32 operation, from VECTOR_OPS, becomes that
operation on STACKs of the lanes' operands,

    STACK(EXP2(a), EXP2(b), EXP2(c), EXP2(d))  ->  EXP2(STACK(a, b, c, d)),

and again on those STACKs, down to loads and constants. The C-style renderer writes a STACK as `(float4)(...)` and the
operations with vector operands as they are (`exp2(x)`, `a*b`, `max(a,b)`). Comparisons, selects, casts and integer
operations stay per lane: OpenCL gives them other types on vectors (a comparison of float4s is an int4 of -1 and 0).

The rule lives in a subclass of tinygrad's OpenCL renderer, VectorizingOpenCLRenderer, the float8 widths (below) in
its subclass WideOpenCLRenderer, and a matmul tile (below) in TilingOpenCLRenderer, which `install()` puts first in the
CL device's list of renderers. A class, not a
rule added to the device's renderer object, because tinygrad renders kernels in worker processes
(tinygrad/engine/realize.py `lower_and_compile`) and sends them the renderer as its class and target
(Renderer.__reduce__); and it keys rendered programs by the renderer's type (`to_program_key`), so kernels rendered
both ways do not mix. BEAM's cache keys choices by kernel and device only, so `make tune`'s choices still apply.

Eight floats at once: tinygrad folds a kernel's loads and stores of neighbouring floats into float4 and float2 ones
(tinygrad/codegen/late/coalesce.py `memory_coalescing`, lengths [4,2] wherever the renderer supports float4). A matmul
tile of 6 rows x 16 columns per work-item (UPCAST 6 and 16, a schedule BEAM can choose) then loads each row of the
right operand as four float4s and does its 96 multiply-adds per step of the reduction on scalars, which PoCL's compiler
packs into 4-wide instructions at best: 37 GFLOP/s for make bench's [1920, 256] x [256, 1024] product on this machine.
With float8 among the lengths, the same schedule loads two float8s, the multiply-adds become 8-wide, and it ran at
114 to 122 GFLOP/s (numpy's sgemm: about 200). tinygrad has no setting for these lengths (ALLOW_HALF8 is for half), so
for this renderer only, memory_coalescing is tinygrad's own function with that one list changed (`_widened`: its
source, one line replaced, compiled again); tinygrad's codegen calls it through `_coalesce`, which hands every other
renderer tinygrad's function unchanged. Loads and stores fold to float8 only at offsets that are multiples of 8
floats (memory_coalescing's own check) and tinygrad's CL buffers are whole allocations, so they stay 32-byte aligned.
If tinygrad's source no longer has the line, the widths stay tinygrad's and `note()` says so; SSMAX_TINY_CL_FLOAT8=0
keeps them too (the renderer is then VectorizingOpenCLRenderer, without the widths; bench/levers.py compares).

A matmul tile without BEAM: tinygrad's heuristics (tinygrad/codegen/opt/heuristic.py) give a plain matmul a 4 x 4
upcast and work-groups of up to 8 x 16, which PoCL runs on one core each, so that 6 x 16 tile is what BEAM finds and a
run without `make tune` never gets: the Edifice default's products ran at 7 to 17 GFLOP/s with the heuristics and 25
to 76 with the tile (bench/matmul_tile.py; numpy's float32 product 104 to 132). TilingOpenCLRenderer,
WideOpenCLRenderer's subclass that `install()` puts first, gives the plain matmuls of its kernels `matmul_tile`'s
schedule where tinygrad would call its heuristics (`_heuristics`, set as tinygrad's `hand_coded_optimizations` on
import, as `_coalesce` is); every other kernel and renderer keeps tinygrad's.
BEAM still searches as before, and `tuning.lowering` keeps the faster of BEAM's choice and this one.
Only on a CPU (`on_cpu`): a GPU's work-groups are its lanes. `SSMAX_TINY_CL_TILE=0` keeps the heuristics (the
renderer is then WideOpenCLRenderer; bench/levers.py compares).

Numerics: +, -, * and max are IEEE operations, the same per lane on vectors. exp2, log2, sqrt, the reciprocal and
division are within OpenCL's bounds either way (exp2: 3 ulp), and PoCL's vector exp2 and its scalar one differ by one
ulp on about 1% of float32 inputs (tests/test_cl_vectorize.py). Each is deterministic: a run is the same bits every
time. Kernels compiled before `install()` keep their scalar calls. `SSMAX_TINY_CL_VECTORIZE=0` turns it off.
"""
from __future__ import annotations

import inspect
import os

import tinygrad.codegen
import tinygrad.codegen.late.coalesce as coalesce
import tinygrad.codegen.opt.heuristic as heuristic
from tinygrad import Device, dtypes
from tinygrad.codegen.opt import Opt, OptOps
from tinygrad.helpers import prod
from tinygrad.renderer.cstyle import OpenCLRenderer
from tinygrad.uop.ops import AxisType, Ops, PatternMatcher, UOp, UPat

from ssmax_tiny.cl_graph import cl_devices

VECTOR_WIDTHS = (2, 4, 8, 16)   # OpenCL C's vector types (3 aside)
# float operations that OpenCL C applies lane by lane to vectors (its built-in functions and operators on floatn)
VECTOR_OPS = {Ops.ADD, Ops.SUB, Ops.MUL, Ops.FDIV, Ops.MAX, Ops.NEG, Ops.RECIPROCAL, Ops.SQRT, Ops.EXP2, Ops.LOG2}


def _vectorize(stack: UOp) -> UOp | None:
  if len(stack.src) not in VECTOR_WIDTHS or stack.dtype != dtypes.float32 or (first := stack.src[0]).op not in VECTOR_OPS: return None
  if not all(u.op is first.op and u.dtype == first.dtype and u.arg == first.arg and len(u.src) == len(first.src) for u in stack.src):
    return None
  operands = tuple(stack.replace(src=tuple(u.src[i] for u in stack.src)) for i in range(len(first.src)))
  return UOp(first.op, stack.dtype, operands, first.arg)


RULE = PatternMatcher([(UPat(Ops.STACK, name="stack"), _vectorize)])


class VectorizingOpenCLRenderer(OpenCLRenderer):
  """tinygrad's OpenCL renderer with RULE among its final rules."""
  extra_matcher = RULE if OpenCLRenderer.extra_matcher is None else OpenCLRenderer.extra_matcher + RULE


class WideOpenCLRenderer(VectorizingOpenCLRenderer):
  """VectorizingOpenCLRenderer whose kernels load and store float8s too (`_coalesce`)."""


class TilingOpenCLRenderer(WideOpenCLRenderer):
  """WideOpenCLRenderer whose plain matmuls get `matmul_tile`'s schedule instead of tinygrad's heuristics
  (`_heuristics`); what `install` puts first."""


def _widened(fn):
  """tinygrad's memory_coalescing with float8 among the widths it folds float loads and stores into; None when its
  source no longer has the one line this changes (another tinygrad version)."""
  old, new = "else [4,2]", "else [8,4,2]"
  src = inspect.getsource(fn)
  if src.count(old) != 1: return None
  namespace = dict(vars(coalesce))
  exec(compile(src.replace(old, new), coalesce.__file__, "exec"), namespace)
  return namespace[fn.__name__]


_TINYGRAD_COALESCING = coalesce.memory_coalescing
_WIDE_COALESCING = _widened(_TINYGRAD_COALESCING)


def _coalesce(sink, ren):
  wide = _WIDE_COALESCING is not None and isinstance(ren, WideOpenCLRenderer)
  return (_WIDE_COALESCING if wide else _TINYGRAD_COALESCING)(sink, ren)


# tinygrad/codegen/__init__.py calls memory_coalescing by this module-level name; set on import, so that a compile
# worker process, which imports this module to rebuild the renderer it is sent, has it too
tinygrad.codegen.memory_coalescing = _coalesce


# a matmul's tile for a CPU's OpenCL: rows of the output per work-item (the first of these that divides M) by 16 columns
TILE_ROWS, TILE_COLS = (6, 4, 3, 2), 16
TILE_MIN_WORK = 1 << 20   # M * N * K; below it tinygrad's heuristics (tuning.SEARCH_MIN_WORK's size)


def _unit_stride(index: UOp, rng: UOp) -> bool:
  """Whether `rng` is a term of a buffer's flat index (an INDEX): consecutive values of it address consecutive elements."""
  return any(c is rng for c in index.src[1].get_idx().split_uop(Ops.ADD))


def matmul_tile(k):
  """The schedule a plain matmul C[M, N] = sum_K A[M, K] B[K, N] gets on TilingOpenCLRenderer: each work-item computes
  rows x 16 outputs (UPCAST of M by rows, N by 16), with no work-groups; None for any other kernel. B's rows and C's are
  read and written as float8s, and the 16 x rows multiply-adds per step of K run 8-wide (AVX2).

  tinygrad's heuristics (tinygrad/codegen/opt/heuristic.py) give such a product a 4 x 4 upcast and work-groups of up to
  8 x 16, and PoCL runs a work-group on one core: the Edifice default's products ran at 7 to 17 GFLOP/s with them and
  at 25 to 76 with this tile, on a 2-core machine (bench/matmul_tile.py; numpy's float32 product 104 to 132). BEAM can find such schedules
  (`make tune`); this is what a run gets without it, and what `tuning.lowering` times BEAM's choices against.
  Plain: three axes (M, N global, K reduced), a sum of products, N the innermost axis of C and of every buffer read
  along it (elementwise work fused into A, a dropout mask, say, stays as it is: it is done once per row and step of
  K, for 16 columns); M divisible by one of TILE_ROWS, N by 16, M * N * K at least TILE_MIN_WORK."""
  if k.axis_types != [AxisType.GLOBAL, AxisType.GLOBAL, AxisType.REDUCE] or prod(k.full_shape) < TILE_MIN_WORK: return None
  if (red := k.reduceop) is None or red.arg[0] is not Ops.ADD or red.src[0].op is not Ops.MUL: return None
  m, n, _ = k.full_shape
  n_rng = k.rngs[1]
  along_n = [b for b in k.bufs if n_rng in b.src[1].get_idx().backward_slice]   # C and B (elementwise inputs fused in too)
  if len(along_n) < 2 or not all(_unit_stride(b, n_rng) for b in along_n) or n % TILE_COLS: return None
  rows = next((r for r in TILE_ROWS if m % r == 0), None)
  if rows is None: return None
  k = k.copy()
  for opt in (Opt(OptOps.UPCAST, 0, rows), Opt(OptOps.UPCAST, 1, TILE_COLS)): k.apply_opt(opt)
  return k


def _heuristics(k):
  """What tinygrad's codegen calls where it would call its heuristics: matmul_tile's schedule for the plain matmuls of
  TilingOpenCLRenderer's kernels, tinygrad's heuristics for every other kernel and renderer."""
  if isinstance(k.ren, TilingOpenCLRenderer) and (tiled := matmul_tile(k)) is not None: return tiled
  return _TINYGRAD_HEURISTICS(k)


_TINYGRAD_HEURISTICS = heuristic.hand_coded_optimizations
# tinygrad/codegen/opt/postrange.py apply_opts imports hand_coded_optimizations by name at each call, as does
# tuning.lowering; set on import, like memory_coalescing above
heuristic.hand_coded_optimizations = _heuristics


def enabled() -> bool: return os.environ.get("SSMAX_TINY_CL_VECTORIZE", "1") != "0"


def wide() -> bool:
  """Whether install() adds float8 loads and stores: unless SSMAX_TINY_CL_FLOAT8=0, or this tinygrad's
  memory_coalescing lacks the line `_widened` changes."""
  return _WIDE_COALESCING is not None and os.environ.get("SSMAX_TINY_CL_FLOAT8", "1") != "0"


def tiling() -> bool:
  """Whether install() adds matmul_tile's schedule: with the float8 widths (`wide()`), unless SSMAX_TINY_CL_TILE=0."""
  return wide() and os.environ.get("SSMAX_TINY_CL_TILE", "1") != "0"


def on_cpu(name: str) -> bool:
  """Whether CL device `name` is a CPU (PoCL, say): the matmul tile, work-groups of one, is for a CPU's cores, not for a
  GPU's lanes (OpenCL's clGetDeviceInfo CL_DEVICE_TYPE)."""
  import ctypes

  import tinygrad.runtime.autogen.opencl as cl
  kind = ctypes.c_uint64()
  if cl.clGetDeviceInfo(Device[name].cl_dev, cl.CL_DEVICE_TYPE, ctypes.sizeof(kind), ctypes.byref(kind), None) != 0: return False
  return bool(kind.value & cl.CL_DEVICE_TYPE_CPU)


RENDERERS = (VectorizingOpenCLRenderer, WideOpenCLRenderer, TilingOpenCLRenderer)


def installed(name: str) -> bool: return Device[name].renderers[0] in RENDERERS


def install(devices=None) -> None:
  """Render the kernels of each CL device among `devices` (names; default: tinygrad's default device) with
  TilingOpenCLRenderer on a CPU (WideOpenCLRenderer on a GPU or when `tiling()` is false, VectorizingOpenCLRenderer
  when `wide()` is too), unless SSMAX_TINY_CL_VECTORIZE=0. Kernels compiled afterwards use it; steps captured before
  keep their kernels."""
  if not enabled(): return
  for name in cl_devices(devices):
    renderer = TilingOpenCLRenderer if tiling() and on_cpu(name) else WideOpenCLRenderer if wide() else VectorizingOpenCLRenderer
    if Device[name].renderers[0] is not renderer:
      Device[name].renderers = [renderer, *[r for r in Device[name].renderers if r not in RENDERERS]]


def uninstall(devices=None) -> None:
  """Back to tinygrad's renderer (bench/vectorize.py compares both in one process)."""
  for name in cl_devices(devices):
    Device[name].renderers = [r for r in Device[name].renderers if r not in RENDERERS]


def note(devices=None) -> str:
  """For a run's kernels line on screen, when the rule is on for a CL device among `devices`."""
  if not enabled() or not cl_devices(devices): return ""
  tile = ", a matmul tile (SSMAX_TINY_CL_TILE=0: tinygrad's heuristics)" if tiling() and all(map(on_cpu, cl_devices(devices))) else ""
  if wide(): width = f"float8 loads and stores (SSMAX_TINY_CL_FLOAT8=0: float4){tile}"
  elif _WIDE_COALESCING is None: width = "float4 loads and stores (this tinygrad's memory_coalescing lacks the line cl_vectorize widens)"
  else: width = "float4 loads and stores (SSMAX_TINY_CL_FLOAT8=0)"
  return f"; float arithmetic on vectors, {width} (SSMAX_TINY_CL_VECTORIZE=0 turns all off)"
