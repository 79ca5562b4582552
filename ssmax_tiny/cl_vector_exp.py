"""exp2 over whole vectors in tinygrad's OpenCL kernels: one call per float4, not four.

tinygrad writes every elementwise operation out per lane (tinygrad/codegen/__init__.py `do_devectorize`), so a kernel
that loads a float4 and stores exp of it calls exp2 four times on scalars and stacks the results for the store:

    *((__global float4*)(data0+alu0)) = (float4)(exp2(val0.x*K), exp2(val0.y*K), exp2(val0.z*K), exp2(val0.w*K));

OpenCL's exp2 takes vectors too. On PoCL (this machine's CPU) the vector call runs about 5x faster than the four scalar
ones, which are not vectorised by its compiler (`python bench/vector_exp.py`). The softmax's exp over the attention
scores is such a kernel (`contiguous` in model.py's attention), 8% of make lm's tuned step on CL. One rule among the OpenCL
renderer's final ones (`Renderer.extra_matcher`, applied in tinygrad/codegen/__init__.py): a STACK whose
lanes are all EXP2 becomes one EXP2 of the stacked arguments, which the C-style renderer writes as
`exp2((float4)(...))`. Only that pattern: an exp2 inside a longer expression per lane (the exact GELU's erf) keeps the
scalar calls.

The rule lives in a subclass of tinygrad's OpenCL renderer (VectorExpOpenCLRenderer), which `install()` puts first in
the CL device's list of renderers.

Numerics: PoCL's vector exp2 and its scalar one differ by one ulp on about 1% of float32 inputs (OpenCL allows exp2 3
ulp); each is deterministic, so a run is still the same bits every time. Kernels compiled before `install()` keep the
scalar calls. `SSMAX_TINY_CL_VECTOR_EXP=0` turns it off.
"""
from __future__ import annotations

import os

from tinygrad import Device
from tinygrad.renderer.cstyle import OpenCLRenderer
from tinygrad.uop.ops import Ops, PatternMatcher, UOp, UPat

VECTOR_WIDTHS = (2, 4, 8, 16)   # OpenCL C's vector types (3 aside)


def _vector_exp2(stack: UOp) -> UOp | None:
  if len(stack.src) not in VECTOR_WIDTHS or not all(u.op is Ops.EXP2 and u.dtype == stack.dtype for u in stack.src): return None
  return UOp(Ops.EXP2, stack.dtype, (stack.replace(src=tuple(u.src[0] for u in stack.src)),))


RULE = PatternMatcher([(UPat(Ops.STACK, src=(UPat(Ops.EXP2),), allow_any_len=True, name="stack"), _vector_exp2)])


class VectorExpOpenCLRenderer(OpenCLRenderer):
  """tinygrad's OpenCL renderer with the rule among its final ones. A class of its own, not a rule added to the device's
  renderer object: tinygrad renders kernels in worker processes (tinygrad/engine/realize.py `lower_and_compile`) and
  sends them the renderer as its class and target (Renderer.__reduce__), and it keys rendered programs by the
  renderer's type (tinygrad/codegen/__init__.py `to_program_key`)."""
  extra_matcher = RULE if OpenCLRenderer.extra_matcher is None else OpenCLRenderer.extra_matcher + RULE


def enabled() -> bool: return os.environ.get("SSMAX_TINY_CL_VECTOR_EXP", "1") != "0"


def _cl(devices) -> list[str]: return [n for n in devices or (Device.DEFAULT,) if n.split(":")[0] == "CL"]


def installed(name: str) -> bool: return Device[name].renderers[0] is VectorExpOpenCLRenderer


def install(devices=None) -> None:
  """Render the kernels of each CL device among `devices` (names; default: tinygrad's default device) with
  VectorExpOpenCLRenderer, unless SSMAX_TINY_CL_VECTOR_EXP=0. Kernels compiled afterwards use it; steps captured before
  keep their kernels."""
  if not enabled(): return
  for name in _cl(devices):
    if not installed(name): Device[name].renderers = [VectorExpOpenCLRenderer, *Device[name].renderers]


def uninstall(devices=None) -> None:
  """Back to tinygrad's renderer (bench/vector_exp.py compares both in one process)."""
  for name in _cl(devices):
    Device[name].renderers = [r for r in Device[name].renderers if r is not VectorExpOpenCLRenderer]


def note(devices=None) -> str:
  """For a run's kernels line on screen, when the rule is on for a CL device among `devices`."""
  if not enabled() or not _cl(devices): return ""
  return "; exp2 on whole vectors (SSMAX_TINY_CL_VECTOR_EXP=0 turns it off)"
