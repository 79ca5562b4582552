"""Freed host memory given back to the system during long-context inference (glibc only; elsewhere nothing changes).

PoCL (tinygrad's CL device on a CPU) allocates each buffer with malloc. After a large block is freed, glibc raises its
mmap threshold to that block's size (up to 32 MiB, DEFAULT_MMAP_THRESHOLD_MAX on 64-bit), and later blocks of up to
that size come from its heap. Blocks whose size keeps changing, as in blocked attention (each query block sees more
keys), fragment the heap, and glibc gives none of it back: make lm's model held 1.6 GiB after two forward passes at
T = 8192 instead of 0.27. Inside `returned()` the threshold is fixed at glibc's initial 128 KiB,
so large blocks are mapped and unmapped; on leaving, it is set to 32 MiB (where glibc's own adjustment ends after such
blocks) and the heap is trimmed. Not for the whole process: PyTorch's CPU tensors also come from malloc, and with a
128 KiB threshold its training step took 1.8x as long (bench/lm_step.py runs both in one process).
tinygrad's CPU device maps its buffers itself (tinygrad/runtime/ops_cpu.py) and never needed this.
"""
import contextlib
import ctypes
import os
import platform

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
INSIDE, AFTER = 128 * 1024, 32 * 1024 * 1024
# a threshold the user set in the environment is theirs to keep
_libc = ctypes.CDLL(None) if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc" and \
  "MALLOC_MMAP_THRESHOLD_" not in os.environ else None


@contextlib.contextmanager
def returned():
  """Large blocks freed inside this context go back to the system at once (glibc), and so does the free heap on leaving."""
  if _libc is None:
    yield
    return
  _libc.mallopt(M_MMAP_THRESHOLD, INSIDE)
  try:
    yield
  finally:
    _libc.mallopt(M_MMAP_THRESHOLD, AFTER)
    _libc.malloc_trim(0)
