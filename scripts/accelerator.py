"""Prints the tinygrad device make test runs its core tests on besides the CPU device: the first GPU device that opens
(CUDA, NV, AMD, METAL), else the OpenCL device (PoCL on a CPU, or an OpenCL GPU), else nothing."""
import contextlib
import io

from tinygrad import Device

for name in ("CUDA", "NV", "AMD", "METAL", "CL"):
  try:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()): Device[name]
  except Exception:  # noqa: BLE001 (a device that does not open, for any reason, is not used)
    continue
  print(name)
  break
