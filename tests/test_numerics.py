"""Numerics: half-precision inputs, logits across each dtype's range, n up to 1e6, and memory at T = 4096."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import reference as ref
from tinygrad import Tensor, dtypes

from ssmax_tiny import compute

ROOT = Path(__file__).parent.parent
# Against float64 on the same (rounded) inputs, only the rounding of the returned weights in [0, 1] remains:
# half a unit in the last place at 1.0, 2^-11 for float16 (10-bit mantissa) and 2^-8 for bfloat16 (7-bit mantissa).
# The sum over a row of 16 weights can add up to 16 such roundings.
TOLERANCE = {dtypes.float16: 2.0**-11, dtypes.bfloat16: 2.0**-8, dtypes.float32: 1e-6}
FINFO_MAX = {dtypes.float16: 65504.0, dtypes.bfloat16: 3.3895313892515355e38, dtypes.float32: 3.4028234663852886e38}


@pytest.mark.parametrize("dtype", [dtypes.float16, dtypes.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("s, n", [(1.0, 64), (0.43, 10_000), (-0.5, 100)])
def test_half_precision_inputs_against_float64(dtype, s, n):
  z = Tensor(np.random.randn(4, 16).astype(np.float32) * 3).cast(dtype)
  w = compute(z, s, n)
  assert w.dtype == dtype
  expected = ref.ssmax(z.float().numpy().astype(np.float64), s, n)   # the rounded inputs, in float64
  np.testing.assert_allclose(w.float().numpy(), expected, atol=TOLERANCE[dtype])
  np.testing.assert_allclose(w.float().numpy().sum(-1), 1.0, atol=16 * TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [dtypes.float16, dtypes.bfloat16, dtypes.float32], ids=["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("s", [1.0, 0.0, -1.0])
def test_no_nan_or_inf_across_the_dtype_range(dtype, s):
  big = FINFO_MAX[dtype]
  z = np.array([[big, -big, 0.0, 1.0], [big, big * 0.5, -big, -1.0], [-big, -big, -big, -big]], np.float64)
  n = np.array([[1], [10**6], [1000]])          # n = 1 gives a scale of 0 whatever s is
  w = compute(Tensor(z, dtype=dtype), s, Tensor(n)).float().numpy()
  assert np.isfinite(w).all(), w
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=4 * TOLERANCE[dtype] + 1e-6)
  if s > 0: assert w[1, 0] > 0.99       # the largest logit wins at n = 1e6
  if s < 0: assert w[1, 2] > 0.99       # s < 0 inverts: the smallest wins
  np.testing.assert_allclose(w[0], 0.25, atol=TOLERANCE[dtype])   # n = 1: scale 0, uniform


def test_masked_rows_with_extreme_logits():
  z = Tensor(np.array([[3e38, -3e38, 1.0, 2.0]], np.float32))
  mask = Tensor(np.array([[False, True, True, True]]))
  w = compute(z, 1.0, 10**6, mask=mask).numpy()
  assert np.isfinite(w).all() and w[0, 0] == 0 and w[0, 3] > 0.99


def test_long_sequence_memory_stays_within_readme_bound():
  # README: at T = 4096, B = 1 (hidden 32, 2 heads) an eager forward pass realises each block's output before the next
  # block, so one attention matrix (128 MiB) is alive at a time, whatever the layers: measured 2.13 matrices above the
  # memory it started with at 1, 2 and 3 layers (one forward pass as one schedule held one per layer plus one: 3.15 at 2).
  # On the CPU device, whose buffers live in this process (PoCL also compiles in-process, which adds noise)
  out = subprocess.run([sys.executable, "tests/memory_probe.py", "--T", "4096", "--layers", "3"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600, env={**os.environ, "DEV": "CPU"})
  assert out.returncode == 0, out.stderr
  r = json.loads(out.stdout.strip().splitlines()[-1])
  assert r["finite"]
  assert r["peak_rss_mib"] - r["rss_before_forward_mib"] < 2.5 * r["attention_matrix_mib"], r
