"""cl_vector_exp: exp2 on whole vectors in the OpenCL kernels. The kernels are rendered that way, also when tinygrad
renders them in its worker processes, and their values stay within an ulp of the exact exp2 of the same float32
argument, special values included. Runs on the OpenCL device only (make test's DEV=CL run)."""
import numpy as np
import pytest
import tinygrad.codegen
from tinygrad import Device, Tensor

from ssmax_tiny import cl_vector_exp

pytestmark = pytest.mark.skipif(Device.DEFAULT.split(":")[0] != "CL", reason="the rule is for tinygrad's OpenCL device (DEV=CL)")

SPECIAL = [-np.inf, np.inf, np.nan, 0.0, -0.0, -87.0, -100.0, -104.0, 88.0, 89.0, 1e-30, -1e-30]


def _sources(name_part: str) -> list[str]:
  """The OpenCL sources tinygrad has rendered with the vector renderer, of kernels whose source contains name_part."""
  return [s.arg for key, prg in tinygrad.codegen.to_program_cache.items() if key[1] is cl_vector_exp.VectorExpOpenCLRenderer
          for s in prg.src if isinstance(s.arg, str) and name_part in s.arg]


def _exp(values: np.ndarray, scale: float) -> np.ndarray:
  return (Tensor(values).realize() * scale).exp().numpy()


def test_exp_is_rendered_on_vectors_and_stays_within_an_ulp():
  rng = np.random.default_rng(0)
  x = np.concatenate([rng.standard_normal(4096 - len(SPECIAL)).astype(np.float32) * 30, np.array(SPECIAL, np.float32)])
  cl_vector_exp.uninstall()
  per_lane = _exp(x, 0.5)
  cl_vector_exp.install()
  try: vector = _exp(x, 0.5)
  finally: cl_vector_exp.uninstall()
  assert any("exp2((float4)" in s for s in _sources("exp2(")), "no kernel with exp2 on a float4"
  # both compute exp2(float32(float32(x * 0.5) * float32(1 / ln 2))), tinygrad's exp
  arg = (x * np.float32(0.5)) * np.float32(1 / np.log(2))
  exact = np.exp2(arg.astype(np.float64))
  finite = np.isfinite(exact) & (exact > np.finfo(np.float32).tiny) & (exact < np.finfo(np.float32).max)
  for got in (per_lane, vector):
    ulps = np.abs(got[finite] - exact[finite]) / np.spacing(exact[finite].astype(np.float32))
    assert ulps.max() <= 1.0, ulps.max()
    np.testing.assert_array_equal(got[~finite & ~np.isnan(exact)], exact[~finite & ~np.isnan(exact)].astype(np.float32))
    assert np.isnan(got[np.isnan(x)]).all()
  assert (np.abs(vector[finite] - per_lane[finite]) <= np.spacing(np.abs(per_lane[finite]))).all()   # at most an ulp apart
  assert (vector != per_lane).any(), "the two renderings gave the same bits: was the vector one used?"


def test_kernels_rendered_in_tinygrads_worker_processes_get_the_rule_too():
  # several kernels at once are rendered in a pool of worker processes, which get the renderer as its class and target
  cl_vector_exp.install()
  try:
    xs = [Tensor.randn(4096).realize() for _ in range(3)]
    Tensor.realize(*[(x * (0.25 + 0.125 * i)).exp() for i, x in enumerate(xs)])
  finally: cl_vector_exp.uninstall()
  assert sum("exp2((float4)" in s for s in _sources("0.36067")) >= 1   # 0.25 / ln 2, from the first kernel


def test_switches():
  cl_vector_exp.install(); cl_vector_exp.install()
  assert cl_vector_exp.installed("CL") and Device["CL"].renderers.count(cl_vector_exp.VectorExpOpenCLRenderer) == 1
  cl_vector_exp.uninstall()
  assert not cl_vector_exp.installed("CL")
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("SSMAX_TINY_CL_VECTOR_EXP", "0")
    cl_vector_exp.install()
    assert not cl_vector_exp.installed("CL") and cl_vector_exp.note() == ""
