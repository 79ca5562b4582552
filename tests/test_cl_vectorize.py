"""cl_vectorize: float arithmetic on whole vectors in the OpenCL kernels. Kernels are rendered that way (exp and the
exact GELU), also when tinygrad renders them in its worker processes; exp stays within an ulp of the exact exp2 of the
same float32 argument, special values included, and the GELU within a few ulps of tinygrad's per-lane kernel. A matmul
tile of 16 columns loads and stores float8s, and its product stays within float32's bound of the float64 one; plain
matmuls get that tile without BEAM (matmul_tile), others tinygrad's heuristics. Runs on the OpenCL device only (make
test's DEV=CL run)."""
import numpy as np
import pytest
import tinygrad.codegen
from tinygrad import Context, Device, Tensor
from tinygrad.codegen.opt import Opt, OptOps

from ssmax_tiny import cl_vectorize

pytestmark = pytest.mark.skipif(Device.DEFAULT.split(":")[0] != "CL", reason="the rule is for tinygrad's OpenCL device (DEV=CL)")


@pytest.fixture(autouse=True)
def _as_it_was():
  """The tests switch the renderer; conftest.py installed it for the whole run, so each test leaves it installed."""
  yield
  cl_vectorize.install()


SPECIAL = [-np.inf, np.inf, np.nan, 0.0, -0.0, -87.0, -100.0, -104.0, 88.0, 89.0, 1e-30, -1e-30]


def _sources(name_part: str) -> list[str]:
  """The OpenCL sources tinygrad has rendered with cl_vectorize's renderers, of kernels whose source contains name_part."""
  return [s.arg for key, prg in tinygrad.codegen.to_program_cache.items() if key[1] in cl_vectorize.RENDERERS
          for s in prg.src if isinstance(s.arg, str) and name_part in s.arg]


def _exp(values: np.ndarray, scale: float) -> np.ndarray:
  return (Tensor(values).realize() * scale).exp().numpy()


def test_exp_is_rendered_on_vectors_and_stays_within_an_ulp():
  rng = np.random.default_rng(0)
  x = np.concatenate([rng.standard_normal(4096 - len(SPECIAL)).astype(np.float32) * 30, np.array(SPECIAL, np.float32)])
  cl_vectorize.uninstall()
  per_lane = _exp(x, 0.5)
  cl_vectorize.install()
  try: vector = _exp(x, 0.5)
  finally: cl_vectorize.uninstall()
  assert any(s.count("exp2(") == 1 for s in _sources("0.72134")), "exp2 is not called once per float4"   # 0.5 / ln 2
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
  cl_vectorize.install()
  try:
    xs = [Tensor.randn(4096).realize() for _ in range(3)]
    Tensor.realize(*[(x * (0.25 + 0.125 * i)).exp() for i, x in enumerate(xs)])
  finally: cl_vectorize.uninstall()
  assert {s.count("exp2(") for s in _sources("0.36067")} == {1}   # 0.25 / ln 2, the first kernel: one exp2 per float4


def test_the_exact_gelu_is_rendered_on_vectors_and_agrees_with_the_per_lane_kernel():
  x = Tensor(np.random.default_rng(1).standard_normal((64, 256)).astype(np.float32) * 4).realize()
  cl_vectorize.uninstall()
  per_lane = (x * 1.0).gelu(approximate="none").numpy()
  cl_vectorize.install()
  try: vector = (x * 1.0).gelu(approximate="none").numpy()
  finally: cl_vectorize.uninstall()
  assert {s.count("exp2(") for s in _sources("0.2316418")} == {1}   # erf's 0.3275911 / sqrt 2: one exp2 per float4
  # the same operations in the same order; exp2 and the reciprocal may differ by an ulp, which the sum can carry
  np.testing.assert_allclose(vector, per_lane, rtol=4 * np.finfo(np.float32).eps, atol=1e-7)


def test_a_matmul_tile_of_16_columns_loads_and_stores_float8s_and_stays_within_float32s_bound(monkeypatch):
  # [96, 64] x [64, 144] with 6 rows x 16 columns per work-item, a schedule BEAM can choose, given here by a stand-in for
  # beam_search (tinygrad/codegen/opt/postrange.py apply_opts calls it under BEAM >= 1); the output buffer's name,
  # data0_13824, marks the kernel
  import tinygrad.codegen.opt.search as search
  from tinygrad.codegen.opt.heuristic import hand_coded_optimizations

  def tile(s, *args, **kwargs):
    if tuple(s.full_shape) != (96, 144, 64): return hand_coded_optimizations(s)
    for opt in (Opt(OptOps.UPCAST, 0, 6), Opt(OptOps.UPCAST, 1, 16)): s.apply_opt(opt)
    return s
  monkeypatch.setattr(search, "beam_search", tile)
  rng = np.random.default_rng(2)
  a, b = rng.standard_normal((96, 64), dtype=np.float32), rng.standard_normal((64, 144), dtype=np.float32)
  products = {}
  for wide in ("0", "1"):
    monkeypatch.setenv("SSMAX_TINY_CL_FLOAT8", wide)
    cl_vectorize.install()
    with Context(BEAM=1): products[wide] = (Tensor(a) @ Tensor(b)).numpy()
  cl_vectorize.uninstall()
  four, eight = sorted(set(_sources("data0_13824")), key=lambda src: "float8" in src)
  assert "float4" in four and "float8" not in four, "without the widths: float4s"
  assert "float8" in eight and "float4" not in eight, "the 16 columns are not loaded and stored as two float8s"
  exact = a.astype(np.float64) @ b.astype(np.float64)
  # any order of the 64 products' sum is within 64 eps |a| |b| of the exact one (the standard bound, gamma_n)
  bound = 64 * np.finfo(np.float32).eps * (np.abs(a).astype(np.float64) @ np.abs(b))
  for product in products.values(): assert (np.abs(product - exact) <= bound).all()


@pytest.mark.skipif(Device.DEFAULT.split(":")[0] != "CL" or not cl_vectorize.on_cpu(Device.DEFAULT), reason="the tile is for a CPU's OpenCL")
def test_plain_matmuls_get_the_tile_others_the_heuristics_and_products_stay_within_float32s_bound():
  # tinygrad's heuristics, no BEAM: the kernel's name is its loop sizes, r_<M / 6>_<N / 16>_6_16_<K> for the tile
  rng = np.random.default_rng(3)
  a, b, c = (rng.standard_normal(shape, dtype=np.float32) for shape in ((96, 128), (128, 160), (96, 192)))
  d = rng.standard_normal((192, 160), dtype=np.float32)
  cl_vectorize.install()
  plain = (Tensor(a) @ Tensor(b)).numpy()
  fused = ((Tensor(c) * 2 + 1) @ Tensor(d)).numpy()                         # elementwise work fused into the left operand
  read_along_k = (Tensor(a) @ Tensor(np.ascontiguousarray(b.T)).T).numpy()   # b^T's rows innermost: along the reduction
  assert len(_sources("r_16_10_6_16_128(")) == 1 and len(_sources("r_16_10_6_16_192(")) == 1, "no 6 x 16 tile"
  assert "float8" in _sources("r_16_10_6_16_128(")[0]
  names = {s.split("(")[0].split()[-1] for s in _sources("data0_15360")}   # every kernel writing a [96, 160] output
  assert len(names) == 3 and not any(n.endswith("_128") and "_6_16_" in n for n in names - {"r_16_10_6_16_128"}), names
  for left, right, product in ((a, b, plain), (2 * c.astype(np.float64) + 1, d, fused), (a, b, read_along_k)):
    exact = left.astype(np.float64) @ right.astype(np.float64)
    # gamma_n bound of a float32 sum of K products, plus the rounding of 2c + 1 (an ulp of it, times |d|)
    bound = (left.shape[1] + 1) * np.finfo(np.float32).eps * (np.abs(left).astype(np.float64) @ np.abs(right))
    assert (np.abs(product - exact) <= bound).all()


def test_switches():
  first = cl_vectorize.TilingOpenCLRenderer if cl_vectorize.on_cpu("CL") else cl_vectorize.WideOpenCLRenderer   # PoCL: a CPU
  cl_vectorize.install(); cl_vectorize.install()
  assert Device["CL"].renderers[0] is first
  assert sum(r in cl_vectorize.RENDERERS for r in Device["CL"].renderers) == 1
  cl_vectorize.uninstall()
  assert not cl_vectorize.installed("CL")
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("SSMAX_TINY_CL_VECTORIZE", "0")
    cl_vectorize.install()
    assert not cl_vectorize.installed("CL") and cl_vectorize.note() == ""
    mp.setenv("SSMAX_TINY_CL_VECTORIZE", "1"); mp.setenv("SSMAX_TINY_CL_FLOAT8", "0")
    cl_vectorize.install()   # vectors, tinygrad's widths
    assert Device["CL"].renderers[0] is cl_vectorize.VectorizingOpenCLRenderer and "float4 loads" in cl_vectorize.note()
    mp.setenv("SSMAX_TINY_CL_FLOAT8", "1"); mp.setenv("SSMAX_TINY_CL_TILE", "0")
    cl_vectorize.install()   # float8, tinygrad's heuristics for matmuls
    assert Device["CL"].renderers[0] is cl_vectorize.WideOpenCLRenderer and "matmul tile" not in cl_vectorize.note()
  cl_vectorize.install()     # tinygrad's line was found and widened
  assert Device["CL"].renderers[0] is first and "float8 loads and stores" in cl_vectorize.note()
  assert ("a matmul tile" in cl_vectorize.note()) == (first is cl_vectorize.TilingOpenCLRenderer)
  assert sum(r in cl_vectorize.RENDERERS for r in Device["CL"].renderers) == 1
