import sys
from pathlib import Path

import numpy as np
import pytest
from tinygrad import Tensor

sys.path.insert(0, str(Path(__file__).parent))  # tests/reference.py, the float64 numpy reference

# on the OpenCL device the model's kernels are tested as a Trainer renders them: float arithmetic on vectors
# (ssmax_tiny/cl_vectorize.py; a no-op on other devices)
from ssmax_tiny import cl_vectorize  # noqa: E402

cl_vectorize.install()


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
