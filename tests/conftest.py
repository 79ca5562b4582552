import sys
from pathlib import Path

import numpy as np
import pytest
from tinygrad import Tensor

sys.path.insert(0, str(Path(__file__).parent))  # tests/reference.py, the float64 numpy reference

# SSMAX_TINY_POCL=1 runs the suite with the OpenCL-on-CPU kit installed (ssmax_tiny/pocl; it installs only where the device
# is OpenCL on a CPU, and make test's CL run runs the core tests both ways); otherwise plain tinygrad
from ssmax_tiny import pocl  # noqa: E402

pocl.use()


@pytest.fixture(autouse=True)
def _seed():
  Tensor.manual_seed(0)
  np.random.seed(0)


TINY = dict(hidden_size=16, num_heads=2, num_layers=2, window_size=6)  # small enough to compile in seconds


def as_numpy(tensors) -> list[np.ndarray]:
  """Realise tensors in one schedule, then read them: read one by one, each (a gradient, say) recomputes the lazy work
  it shares with the others, which made gradient tests several times slower."""
  tensors = list(tensors)
  Tensor.realize(*tensors)
  return [t.numpy() for t in tensors]
