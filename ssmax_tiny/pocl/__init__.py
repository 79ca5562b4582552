"""The OpenCL-on-CPU kit: opt-in speed code for tinygrad's CL device where it runs on a CPU (PoCL, say).

ssmax_tiny runs on plain tinygrad. On a CPU without a GPU, tinygrad's CL device through PoCL uses every core where its
CPU device uses one, and this kit makes it faster there (docs/speed.md has each lever's paired figure):
- `vectorize`: float arithmetic on whole vectors, float8 loads and stores, and a matmul tile, as OpenCL renderers;
- `graph`: a TinyJit graph runner for CL, so a replay launches its kernels from one loop;
- `tuning`: `make tune`'s BEAM-searched kernels, read back when a Trainer captures a searched step;
- `attention`: causal attention at inference in one kernel that never stores a score (an online softmax in OpenCL C),
  through `model.streaming_attention`;
- `memory`: host memory given back during long-context inference (glibc; PoCL allocates with malloc), through
  `model.inference_memory`. These two are the hooks of ssmax_tiny's own that the kit sets.

Nothing here runs on import. `install()` puts it in place for the CL devices among `devices` that are CPUs and does
nothing anywhere else (CPU, CUDA, Metal, AMD, an OpenCL GPU); `uninstall()` gives tinygrad its own functions back. The
one switch is the environment variable SSMAX_TINY_POCL=1: the command line, the sweep's worker processes and the tests
call `use()`, which installs when it is set. The kit reaches inside tinygrad (two module-level functions, a renderer
list, a device's graph, and in `tuning` private search functions), so it refuses any tinygrad but the one it was
written for.
"""
from __future__ import annotations

import contextlib
import os
from importlib.metadata import version

from tinygrad import Device

from ssmax_tiny import model
from ssmax_tiny.pocl import attention, graph, memory, vectorize

SWITCH = "SSMAX_TINY_POCL"
TINYGRAD = "0.14.0"
_installed: dict[str, object] = {}   # device name -> its graph before install()


def check_tinygrad() -> None:
  if (found := version("tinygrad")) != TINYGRAD:
    raise RuntimeError(f"ssmax_tiny.pocl was written for tinygrad {TINYGRAD} and reaches inside it; this is tinygrad {found}. "
                       f"Unset {SWITCH} to run on plain tinygrad, or pip install tinygrad=={TINYGRAD}")


def wanted() -> bool:
  """Whether the switch is on: SSMAX_TINY_POCL=1."""
  value = os.environ.get(SWITCH, "0")
  if value not in ("0", "1"): raise ValueError(f"{SWITCH}={value!r} must be 0 (plain tinygrad) or 1 (the OpenCL-on-CPU kit)")
  return value == "1"


def targets(devices=None) -> list[str]:
  """The CL devices among `devices` (names; default tinygrad's default device) that run on a CPU."""
  return [n for n in devices or (Device.DEFAULT,) if n.split(":")[0] == "CL" and vectorize.on_cpu(n)]


def install(devices=None) -> list[str]:
  """Put the kit in place for the CL devices among `devices` (default: tinygrad's default device) that are CPUs; returns
  their names (none: nothing changed). Kernels compiled and TinyJits captured afterwards use it."""
  names = targets(devices)
  if not names: return []
  check_tinygrad()
  # PoCL compiles tinygrad's kernels with clang and prints "1 warning generated." for many; -w silences its compiler only
  os.environ.setdefault("POCL_EXTRA_BUILD_FLAGS", "-w")
  vectorize.patch()
  model.inference_memory = memory.returned
  model.streaming_attention = attention.attend
  attention.devices.update(names)
  for name in names:
    vectorize.use(name)
    if name not in _installed:
      _installed[name] = Device[name].graph
      if graph.enabled() and Device[name].graph is None: Device[name].graph = graph.CLGraph
  return names


def uninstall() -> None:
  """tinygrad as it was: its renderers, graphs, memory_coalescing and hand_coded_optimizations. TinyJits captured with
  the kit keep their kernels."""
  for name, before in _installed.items():
    vectorize.drop(name)
    Device[name].graph = before
  _installed.clear()
  vectorize.unpatch()
  model.inference_memory = contextlib.nullcontext
  model.streaming_attention = None
  attention.devices.clear()


def installed(devices=None) -> bool:
  """Whether the kit is in place for every CL-on-CPU device among `devices` (and there is one)."""
  names = [n for n in devices or (Device.DEFAULT,) if n.split(":")[0] == "CL"]
  return bool(names) and all(n in _installed for n in names)


def use(devices=None) -> list[str]:
  """install(devices) when the switch is on (SSMAX_TINY_POCL=1); what the command line and the tests call."""
  return install(devices) if wanted() else []


@contextlib.contextmanager
def capturing(trainer):
  """Around a Trainer's TinyJit capture: make tune's searched kernels for this step, read from tinygrad's cache
  (tuning.py). Yields what it did, or None where the kit is not installed."""
  if not installed(trainer.devices):
    yield None
    return
  from ssmax_tiny.pocl import tuning
  with tuning.capturing(trainer) as notes: yield notes


def note(devices=None, signatures=()) -> str:
  """One line for a run's screen: plain tinygrad, or the kit and the share of training steps with tuned kernels."""
  if not installed(devices):
    hint = f" ({SWITCH}=1: the OpenCL-on-CPU kit)" if targets(devices) else ""
    return f"kernels: plain tinygrad{hint}"
  from ssmax_tiny.pocl import tuning
  return "kernels: the OpenCL-on-CPU kit (vectors, float8, matmul tile, CL graph); " + tuning.summary(list(signatures))
