"""Float arithmetic on whole vectors in tinygrad's OpenCL kernels: exp2 of a float4 in one call, not four.

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

The rule lives in a subclass of tinygrad's OpenCL renderer, VectorizingOpenCLRenderer, which `install()` puts first in
the CL device's list of renderers. A class, not a rule added to the device's renderer object, because tinygrad renders
kernels in worker processes (tinygrad/engine/realize.py `lower_and_compile`) and sends them the renderer as its class
and target (Renderer.__reduce__); and it keys rendered programs by the renderer's type (`to_program_key`), so kernels
rendered both ways do not mix. BEAM's cache keys choices by kernel and device only, so `make tune`'s choices still apply.

Numerics: +, -, * and max are IEEE operations, the same per lane on vectors. exp2, log2, sqrt, the reciprocal and
division are within OpenCL's bounds either way (exp2: 3 ulp), and PoCL's vector exp2 and its scalar one differ by one
ulp on about 1% of float32 inputs (tests/test_cl_vectorize.py). Each is deterministic: a run is the same bits every
time. Kernels compiled before `install()` keep their scalar calls. `SSMAX_TINY_CL_VECTORIZE=0` turns it off.
"""
from __future__ import annotations

import os

from tinygrad import Device, dtypes
from tinygrad.renderer.cstyle import OpenCLRenderer
from tinygrad.uop.ops import Ops, PatternMatcher, UOp, UPat

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


def enabled() -> bool: return os.environ.get("SSMAX_TINY_CL_VECTORIZE", "1") != "0"


def installed(name: str) -> bool: return Device[name].renderers[0] is VectorizingOpenCLRenderer


def install(devices=None) -> None:
  """Render the kernels of each CL device among `devices` (names; default: tinygrad's default device) with
  VectorizingOpenCLRenderer, unless SSMAX_TINY_CL_VECTORIZE=0. Kernels compiled afterwards use it; steps captured before
  keep their kernels."""
  if not enabled(): return
  for name in cl_devices(devices):
    if not installed(name): Device[name].renderers = [VectorizingOpenCLRenderer, *Device[name].renderers]


def uninstall(devices=None) -> None:
  """Back to tinygrad's renderer (bench/vectorize.py compares both in one process)."""
  for name in cl_devices(devices):
    Device[name].renderers = [r for r in Device[name].renderers if r is not VectorizingOpenCLRenderer]


def note(devices=None) -> str:
  """For a run's kernels line on screen, when the rule is on for a CL device among `devices`."""
  if not enabled() or not cl_devices(devices): return ""
  return "; float arithmetic on float4s (SSMAX_TINY_CL_VECTORIZE=0 turns it off)"
