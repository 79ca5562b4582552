"""Kernels for OpenCL on a CPU: float arithmetic on whole vectors, float8 loads and stores, and a matmul tile.

Three renderers, each a subclass of tinygrad's OpenCLRenderer and of the one before:
- VectorizingOpenCLRenderer: tinygrad writes every elementwise op per lane (tinygrad/codegen/__init__.py,
  `do_devectorize`), so a float4 store of exp calls exp2 four times on scalars. One rule among the renderer's final ones
  (`Renderer.extra_matcher`) rewrites a STACK whose lanes all apply the same float32 op into that op on STACKs of the
  lanes' operands: STACK(EXP2(a), .., EXP2(d)) -> EXP2(STACK(a, .., d)). Comparisons, selects and casts stay per lane.
- WideOpenCLRenderer: tinygrad folds neighbouring loads and stores into float4 at most (codegen/late/coalesce.py,
  `memory_coalescing`, lengths [4, 2]); AVX2 holds 8 floats. For this renderer, memory_coalescing is tinygrad's own
  function with float8 added to that list (`_widened`: its source, one line changed, compiled again).
- TilingOpenCLRenderer: tinygrad's heuristics (codegen/opt/heuristic.py) give a matmul a 4 x 4 upcast and work-groups of
  up to 8 x 16, and PoCL runs a work-group on one core; for this renderer a plain matmul gets `matmul_tile`'s schedule.

Why renderer classes: tinygrad renders kernels in worker processes and sends them the renderer as its class and target
(Renderer.__reduce__), and keys rendered programs by the renderer's type, so kernels rendered both ways never mix. The
two hooks tinygrad has no setting for (its module-level `memory_coalescing` and `hand_coded_optimizations`) are set by
`patch()`, which `ssmax_tiny.pocl.install()` calls, and in a worker process when it unpickles one of these renderers
(`_rebuilt`); both hand every other renderer tinygrad's own function. `unpatch()` restores them. Importing this module
changes nothing. Measured effects and numerics: docs/speed.md; tests: tests/test_pocl.py.
"""
from __future__ import annotations

import ctypes
import inspect

import tinygrad.codegen
import tinygrad.codegen.late.coalesce as coalesce
import tinygrad.codegen.opt.heuristic as heuristic
from tinygrad import Context, Device, dtypes
from tinygrad.codegen.opt import Opt, OptOps
from tinygrad.helpers import prod
from tinygrad.renderer.cstyle import OpenCLRenderer
from tinygrad.uop.ops import AxisType, Ops, PatternMatcher, UOp, UPat

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


def _rebuilt(cls, target):
  """How a worker process rebuilds one of these renderers: with the hooks set there too."""
  patch()
  return cls(target)


class VectorizingOpenCLRenderer(OpenCLRenderer):
  """tinygrad's OpenCL renderer with RULE among its final rules."""
  extra_matcher = RULE if OpenCLRenderer.extra_matcher is None else OpenCLRenderer.extra_matcher + RULE
  def __reduce__(self): return _rebuilt, (self.__class__, self.target)


class WideOpenCLRenderer(VectorizingOpenCLRenderer):
  """VectorizingOpenCLRenderer whose kernels load and store float8s too (`_coalesce`)."""


class TilingOpenCLRenderer(WideOpenCLRenderer):
  """WideOpenCLRenderer whose plain matmuls get `matmul_tile`'s schedule instead of tinygrad's heuristics."""


RENDERERS = (VectorizingOpenCLRenderer, WideOpenCLRenderer, TilingOpenCLRenderer)


def _widened(fn):
  """tinygrad's memory_coalescing with float8 among the widths it folds float loads and stores into; None when its
  source no longer has the one line this changes."""
  old, new = "else [4,2]", "else [8,4,2]"
  src = inspect.getsource(fn)
  if src.count(old) != 1: return None
  namespace = dict(vars(coalesce))
  exec(compile(src.replace(old, new), coalesce.__file__, "exec"), namespace)
  return namespace[fn.__name__]


TINYGRAD_COALESCING = coalesce.memory_coalescing
TINYGRAD_HEURISTICS = heuristic.hand_coded_optimizations
_wide_coalescing = None   # built by patch(), the first time


def _coalesce(sink, ren):
  return (_wide_coalescing if isinstance(ren, WideOpenCLRenderer) else TINYGRAD_COALESCING)(sink, ren)


# a matmul's tile for a CPU's OpenCL: rows of the output per work-item (the first of these that divides M) by 16 columns
TILE_ROWS, TILE_COLS = (6, 4, 3, 2), 16
TILE_MIN_WORK = 1 << 20   # M * N * K; below it tinygrad's heuristics


def _unit_stride(index: UOp, rng: UOp) -> bool:
  """Whether `rng` is a term of a buffer's flat index (an INDEX): consecutive values of it address consecutive elements."""
  return any(c is rng for c in index.src[1].get_idx().split_uop(Ops.ADD))


def matmul_tile(k):
  """The schedule a plain matmul C[M, N] = sum_K A[M, K] B[K, N] (or a batch of them, the attention's) gets on
  TilingOpenCLRenderer: each work-item computes rows x 16 outputs (UPCAST of M by rows, N by 16), no work-groups; None for
  any other kernel. B's and C's rows are read and written as float8s, and the multiply-adds run 8 wide (AVX2). Plain:
  global axes (batch..., M, N) then one reduced (K), a sum of products, N the innermost axis of C and of every buffer read
  along it (elementwise work fused into A stays as it is), M divisible by one of TILE_ROWS, N by 16, the work at least
  TILE_MIN_WORK."""
  g = len(k.axis_types) - 1
  if g < 2 or k.axis_types != [AxisType.GLOBAL] * g + [AxisType.REDUCE] or prod(k.full_shape) < TILE_MIN_WORK: return None
  if (red := k.reduceop) is None or red.arg[0] is not Ops.ADD or red.src[0].op is not Ops.MUL: return None
  m, n = k.full_shape[g - 2], k.full_shape[g - 1]
  n_rng = k.rngs[g - 1]
  along_n = [b for b in k.bufs if n_rng in b.src[1].get_idx().backward_slice]   # C and B (elementwise inputs fused in too)
  if len(along_n) < 2 or not all(_unit_stride(b, n_rng) for b in along_n) or n % TILE_COLS: return None
  rows = next((r for r in TILE_ROWS if m % r == 0), None)
  if rows is None: return None
  k = k.copy()
  for opt in (Opt(OptOps.UPCAST, g - 2, rows), Opt(OptOps.UPCAST, g - 1, TILE_COLS)): k.apply_opt(opt)
  return k


ROWS_MIN, ROW_MIN = 256, 1024   # a long row reduction: at least this many outputs, each over at least this many values


def row_reduction(k):
  """A long row reduction (the attention's max and sum over keys at long context) on TilingOpenCLRenderer: tinygrad's
  heuristics without their work-group split. They split a reduction across a work-group of 16 (GROUPTOP) whenever its
  output has at most 2048 elements, and PoCL runs a work-group on one core; with NOLOCALS (tinygrad's own switch) they
  do not. None for any other kernel, which keeps tinygrad's heuristics as they are."""
  if (red := k.reduceop) is None or red.src[0].op is Ops.MUL or AxisType.REDUCE not in k.axis_types: return None
  reduced = prod(s for s, t in zip(k.full_shape, k.axis_types) if t is AxisType.REDUCE)
  if reduced < ROW_MIN or prod(k.full_shape) // reduced < ROWS_MIN: return None
  with Context(NOLOCALS=1): return TINYGRAD_HEURISTICS(k)


ELEMENTWISE_MIN = 1 << 20   # elements (a megafloat): the attention's scores and exp, and a training step's largest activations


def elementwise(k):
  """A large elementwise kernel (the exp over the attention's scores at long context) on TilingOpenCLRenderer: 8
  neighbouring elements per work-item along the innermost axis (float8 loads and stores, and RULE makes exp2 one call on
  a float8), no work-groups. tinygrad's heuristics give such kernels work-groups of 8 x 16 and an upcast of 3 or 4 by the
  shape, which PoCL runs on one core each, per lane. None for any other kernel."""
  if AxisType.REDUCE in k.axis_types or not k.axis_types or prod(k.full_shape) < ELEMENTWISE_MIN: return None
  axis = len(k.full_shape) - 1
  if k.full_shape[axis] % 8 or not all(_unit_stride(b, k.rngs[axis]) for b in k.bufs if k.rngs[axis] in b.src[1].get_idx().backward_slice):
    return None
  k = k.copy()
  for opt in (Opt(OptOps.NOLOCALS), Opt(OptOps.UPCAST, axis, 8)): k.apply_opt(opt)
  return k


def _heuristics(k):
  """matmul_tile's, row_reduction's or elementwise's schedule for TilingOpenCLRenderer's kernels of fixed shape, tinygrad's
  heuristics otherwise (a decoding step's kernels have a symbolic number of keys)."""
  if isinstance(k.ren, TilingOpenCLRenderer) and all(isinstance(s, int) for s in k.full_shape):
    for schedule in (matmul_tile, row_reduction, elementwise):
      if (scheduled := schedule(k)) is not None: return scheduled
  return TINYGRAD_HEURISTICS(k)


def patch() -> None:
  """Set the two hooks in tinygrad: its codegen calls `memory_coalescing` by module-level name
  (tinygrad/codegen/__init__.py), and apply_opts imports `hand_coded_optimizations` at each call
  (codegen/opt/postrange.py). Raises when tinygrad's memory_coalescing lacks the line `_widened` changes."""
  global _wide_coalescing
  if _wide_coalescing is None and (_wide_coalescing := _widened(TINYGRAD_COALESCING)) is None:
    raise RuntimeError("ssmax_tiny.pocl: this tinygrad's memory_coalescing lacks the line the float8 widths change")
  tinygrad.codegen.memory_coalescing = _coalesce
  heuristic.hand_coded_optimizations = _heuristics


def unpatch() -> None:
  """tinygrad's own functions back."""
  tinygrad.codegen.memory_coalescing = TINYGRAD_COALESCING
  heuristic.hand_coded_optimizations = TINYGRAD_HEURISTICS


def on_cpu(name: str) -> bool:
  """Whether CL device `name` runs on a CPU (PoCL, say): OpenCL's clGetDeviceInfo CL_DEVICE_TYPE."""
  import tinygrad.runtime.autogen.opencl as cl
  kind = ctypes.c_uint64()
  if cl.clGetDeviceInfo(Device[name].cl_dev, cl.CL_DEVICE_TYPE, ctypes.sizeof(kind), ctypes.byref(kind), None) != 0: return False
  return bool(kind.value & cl.CL_DEVICE_TYPE_CPU)


def use(name: str, renderer=TilingOpenCLRenderer) -> None:
  """Render CL device `name`'s kernels with `renderer` (one of RENDERERS). Kernels compiled afterwards use it."""
  Device[name].renderers = [renderer, *[r for r in Device[name].renderers if r not in RENDERERS]]


def drop(name: str) -> None:
  """Back to tinygrad's renderer for CL device `name`."""
  Device[name].renderers = [r for r in Device[name].renderers if r not in RENDERERS]
