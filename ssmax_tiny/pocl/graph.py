"""A TinyJit graph for tinygrad's OpenCL device: a captured step's kernels launched from one tight loop.

tinygrad replays a TinyJit's kernels one by one through its generic path (tinygrad/engine/realize.py `run_linear`,
`exec_kernel`): each launch resolves its buffers, launch sizes and runtime in Python, tens of microseconds a kernel on a
2-core CPU, while the OpenCL calls themselves take a few. CUDA, Metal and AMD have graph runners that batch launches
(tinygrad/runtime/graph/); CL has none, and on PoCL that Python time is taken from the cores the kernels run on.

`CLGraph`, modelled on tinygrad/runtime/graph/metal.py, resolves each kernel's cl_kernel, cl_mem arguments and launch
sizes once at capture; a replay sets the arguments and enqueues, the JIT's inputs and symbolic sizes filled in per call.
The OpenCL calls are CLProgram.__call__'s (tinygrad/runtime/ops_cl.py), in the same order on the same in-order queue,
so the results are the same bits (tests/test_pocl.py). A step captured with it replays its kernels in batches, so
DEBUG=2 times a batch, not a kernel: capture inside `disabled()` for a per-kernel profile (bench/profile_step.py).
"""
from __future__ import annotations

import contextlib
import ctypes
import time

from tinygrad import Device
from tinygrad.engine.jit import GraphException, GraphRunner
from tinygrad.helpers import is_image_shape
from tinygrad.uop.ops import Ops


class CLGraph(GraphRunner):
  def __init__(self, linear, input_uops=()):
    super().__init__(linear, input_uops)
    from tinygrad.runtime.autogen import opencl as cl
    from tinygrad.runtime.ops_cl import check
    self.cl, self.check = cl, check
    self.queue = Device[self.calls[0][2][0].device].queue
    self.launches = []
    for j, ((_, prg, bufs, _), rt, replace) in enumerate(zip(self.calls, self.runtimes, self.uop_replace)):
      info, inputs = prg.arg, dict(replace)   # inputs: argument position -> the JIT input's slot
      args = []   # (position, what, value): a fixed buffer's cl_mem, the JIT input's slot, or the index of a Variable's value
      for i, (_, slot, dt, shape) in enumerate(rt.signature):
        if is_image_shape(shape): raise GraphException("CLGraph does not bind images")
        if slot >= len(info.globals): args.append((i, getattr(ctypes, f"c_int{dt.bitsize}"), slot - len(info.globals)))
        elif (pos := info.globals[slot]) in inputs: args.append((i, "input", inputs[pos]))
        else: args.append((i, "buffer", bufs[pos].get_buf(bufs[pos].device)))
      dynamic = j in self.var_vals_replace or j in self.launch_dims_replace
      self.launches.append((rt.kernel, info, args, None if dynamic else self._sizes(info, {})))

  def _sizes(self, info, var_vals: dict):
    global_size, local_size = info.launch_dims(var_vals)
    if local_size is not None: global_size = tuple(int(g * l) for g, l in zip(global_size, local_size))
    return (len(global_size), (ctypes.c_size_t * len(global_size))(*global_size),
            (ctypes.c_size_t * len(local_size))(*local_size) if local_size else None)

  def __call__(self, input_uops, var_vals: dict, wait=False):
    cl, check = self.cl, self.check
    st = time.perf_counter()
    for kernel, info, args, sizes in self.launches:
      vals = info.vals(var_vals) if info.vars else ()
      for i, what, value in args:
        if what == "buffer": arg = value
        elif what == "input": arg = input_uops[value].buffer.get_buf(input_uops[value].buffer.device)
        else: arg = what(vals[value])
        check(cl.clSetKernelArg(kernel, i, ctypes.sizeof(arg), ctypes.byref(arg)))
      dims, global_size, local_size = sizes if sizes is not None else self._sizes(info, var_vals)
      check(cl.clEnqueueNDRangeKernel(self.queue, kernel, dims, None, global_size, local_size, 0, None, None))
    if not wait: return None
    check(cl.clFinish(self.queue))
    return time.perf_counter() - st


_disabled = 0   # inside disabled(): the kit installs no graph


def enabled() -> bool: return not _disabled


@contextlib.contextmanager
def disabled(devices=None):
  """Steps captured inside launch their kernels one by one (DEBUG=2 then times each kernel)."""
  global _disabled
  saved = {n: Device[n].graph for n in devices or (Device.DEFAULT,) if n.split(":")[0] == "CL"}
  for n in saved: Device[n].graph = None
  _disabled += 1
  try: yield
  finally:
    _disabled -= 1
    for n, g in saved.items(): Device[n].graph = g


def uncounted(jit) -> int:
  """Kernels of one replay of a captured TinyJit that tinygrad's GlobalCounters.kernel_count misses: it counts a graph
  batch as one kernel (tinygrad/engine/realize.py `get_call_kernels`). Add this to get the launches."""
  calls = jit.captured.linear.src if jit.captured is not None else ()
  return sum(len(c.src[0].src[0].src) - 1 for c in calls if c.src[0].op is Ops.CUSTOM_FUNCTION and c.src[0].arg == "graph")
