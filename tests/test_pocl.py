"""The OpenCL-on-CPU kit (ssmax_tiny/pocl): it installs only where asked and only on OpenCL on a CPU, gives tinygrad its
own functions back, and what it installs computes what tinygrad computes: exp within an ulp of the exact exp2 of the same
float32 argument (kernels rendered in tinygrad's worker processes too), the GELU within a few ulps, products within
float32's bound of float64, and training steps and decoding through the CL graph equal to the bit. The kernel tests run
on tinygrad's OpenCL device on a CPU (make test's DEV=CL run)."""
import contextlib
import importlib.metadata
from dataclasses import asdict

import numpy as np
import pytest
import reference as ref
import tinygrad.codegen
import tinygrad.codegen.opt.heuristic as heuristic
from conftest import TINY
from tinygrad import Context, Device, Tensor, TinyJit, Variable
from tinygrad.codegen.opt import Opt, OptOps
from tinygrad.nn.optim import SGD
from tinygrad.nn.state import get_parameters, get_state_dict

import ssmax_tiny as st
from ssmax_tiny import pocl
from ssmax_tiny.pocl import attention, graph, memory, vectorize

pytestmark = pytest.mark.kit
ON_CL_CPU = Device.DEFAULT.split(":")[0] == "CL" and vectorize.on_cpu(Device.DEFAULT)
cl_cpu = pytest.mark.skipif(not ON_CL_CPU, reason="the kit's kernels are for tinygrad's OpenCL device on a CPU (DEV=CL)")
ONE_LAYER = {**TINY, "num_layers": 1}
SPECIAL = [-np.inf, np.inf, np.nan, 0.0, -0.0, -87.0, -100.0, -104.0, 88.0, 89.0, 1e-30, -1e-30]


@pytest.fixture(autouse=True)
def _as_it_was():
  """Each test installs and uninstalls the kit; the run goes on as conftest.py set it up (SSMAX_TINY_POCL)."""
  yield
  pocl.uninstall()
  pocl.use()


def _sources(name_part: str, since: set | None = None) -> list[str]:
  """The OpenCL sources rendered with the kit's renderers, of kernels whose source contains name_part (and, with `since`,
  rendered after that snapshot of the cache's keys: other tests render kernels of their own)."""
  return [s.arg for key, prg in tinygrad.codegen.to_program_cache.items() if key[1] in vectorize.RENDERERS and (since is None or key not in since)
          for s in prg.src if isinstance(s.arg, str) and name_part in s.arg]


def test_uninstall_gives_tinygrad_its_own_functions_back():
  pocl.uninstall()
  assert (tinygrad.codegen.memory_coalescing, heuristic.hand_coded_optimizations) == (vectorize.TINYGRAD_COALESCING, vectorize.TINYGRAD_HEURISTICS)
  installed = pocl.install()
  assert installed == pocl.targets() and (installed != []) == ON_CL_CPU   # nothing on the CPU device, CUDA, an OpenCL GPU
  if ON_CL_CPU:
    assert Device[Device.DEFAULT].renderers[0] is vectorize.TilingOpenCLRenderer and Device[Device.DEFAULT].graph is graph.CLGraph
    assert tinygrad.codegen.memory_coalescing is not vectorize.TINYGRAD_COALESCING and st.model.inference_memory is memory.returned
    assert st.model.streaming_attention is attention.attend and attention.devices == set(installed)
  pocl.install()                                                           # twice: one renderer, one graph
  assert sum(r in vectorize.RENDERERS for n in installed for r in Device[n].renderers) == len(installed)
  pocl.uninstall()
  assert (tinygrad.codegen.memory_coalescing, heuristic.hand_coded_optimizations) == (vectorize.TINYGRAD_COALESCING, vectorize.TINYGRAD_HEURISTICS)
  assert st.model.inference_memory is contextlib.nullcontext and st.model.streaming_attention is None and not attention.devices
  for n in installed:
    assert not any(r in vectorize.RENDERERS for r in Device[n].renderers) and Device[n].graph is None


def test_the_switch_and_the_tinygrad_version(monkeypatch):
  pocl.uninstall()
  monkeypatch.setenv(pocl.SWITCH, "0")
  assert pocl.use() == [] and not pocl.installed()
  monkeypatch.setenv(pocl.SWITCH, "yes")
  with pytest.raises(ValueError, match="SSMAX_TINY_POCL='yes' must be 0"): pocl.use()
  monkeypatch.setenv(pocl.SWITCH, "1")
  assert pocl.use() == pocl.targets()
  pocl.uninstall()
  if ON_CL_CPU:
    monkeypatch.setattr(pocl, "version", lambda name: "0.15.0")
    with pytest.raises(RuntimeError, match="written for tinygrad 0.14.0.*this is tinygrad 0.15.0"): pocl.install()
    assert not pocl.installed()
  assert importlib.metadata.version("tinygrad") == pocl.TINYGRAD


def _exp(values: np.ndarray, scale: float) -> np.ndarray:
  return (Tensor(values).realize() * scale).exp().numpy()


@cl_cpu
def test_exp_is_rendered_on_vectors_and_stays_within_an_ulp():
  rng = np.random.default_rng(0)
  x = np.concatenate([rng.standard_normal(4096 - len(SPECIAL)).astype(np.float32) * 30, np.array(SPECIAL, np.float32)])
  pocl.uninstall()
  per_lane = _exp(x, 0.5)
  pocl.install()
  before = set(tinygrad.codegen.to_program_cache)
  vector = _exp(x, 0.5)
  assert any(s.count("exp2(") == 1 for s in _sources("0.72134", before)), "exp2 is not called once per float4"   # 0.5 / ln 2
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


@cl_cpu
def test_kernels_rendered_in_tinygrads_worker_processes_get_the_kit_too():
  # several kernels at once are rendered in a pool of worker processes, which get the renderer as its class and target
  # and set the kit's hooks there when they unpickle it (vectorize._rebuilt)
  pocl.install()
  xs = [Tensor.randn(4096).realize() for _ in range(3)]
  Tensor.realize(*[(x * (0.25 + 0.125 * i)).exp() for i, x in enumerate(xs)])
  assert {s.count("exp2(") for s in _sources("0.36067")} == {1}   # 0.25 / ln 2, the first kernel: one exp2 per float4
  # the hooks tinygrad has no setting for (float8 widths, the matmul tile) are set in the workers too
  rng = np.random.default_rng(4)
  a = Tensor(rng.standard_normal((96, 128), dtype=np.float32)).realize()
  Tensor.realize(*[a @ Tensor(rng.standard_normal((128, 176 + 16 * i), dtype=np.float32)).realize() for i in range(3)])
  tiles = [s for i in range(3) for s in _sources(f"r_16_{11 + i}_6_16_128(")]
  assert len(tiles) == 3 and all("float8" in s for s in tiles)


@cl_cpu
def test_the_exact_gelu_is_rendered_on_vectors_and_agrees_with_the_per_lane_kernel():
  x = Tensor(np.random.default_rng(1).standard_normal((64, 256)).astype(np.float32) * 4).realize()
  pocl.uninstall()
  per_lane = (x * 1.0).gelu(approximate="none").numpy()
  pocl.install()
  before = set(tinygrad.codegen.to_program_cache)
  vector = (x * 1.0).gelu(approximate="none").numpy()
  assert {s.count("exp2(") for s in _sources("0.2316418", before)} == {1}   # erf's 0.3275911 / sqrt 2: one exp2 per float4
  # the same operations in the same order; exp2 and the reciprocal may differ by an ulp, which the sum can carry
  np.testing.assert_allclose(vector, per_lane, rtol=4 * np.finfo(np.float32).eps, atol=1e-7)


@cl_cpu
def test_a_matmul_tile_of_16_columns_loads_and_stores_float8s_and_stays_within_float32s_bound(monkeypatch):
  # [96, 64] x [64, 144] with 6 rows x 16 columns per work-item, a schedule BEAM can choose, given here by a stand-in for
  # beam_search (tinygrad/codegen/opt/postrange.py apply_opts calls it under BEAM >= 1), rendered by tinygrad's float4
  # widths (VectorizingOpenCLRenderer) and the kit's float8 ones; the output buffer's name, data0_13824, marks the kernel
  import tinygrad.codegen.opt.search as search

  def tile(s, *args, **kwargs):
    if tuple(s.full_shape) != (96, 144, 64): return vectorize.TINYGRAD_HEURISTICS(s)
    for opt in (Opt(OptOps.UPCAST, 0, 6), Opt(OptOps.UPCAST, 1, 16)): s.apply_opt(opt)
    return s
  monkeypatch.setattr(search, "beam_search", tile)
  rng = np.random.default_rng(2)
  a, b = rng.standard_normal((96, 64), dtype=np.float32), rng.standard_normal((64, 144), dtype=np.float32)
  pocl.install()
  products = {}
  for renderer in (vectorize.VectorizingOpenCLRenderer, vectorize.WideOpenCLRenderer):
    vectorize.use(Device.DEFAULT, renderer)
    with Context(BEAM=1): products[renderer] = (Tensor(a) @ Tensor(b)).numpy()
  four, eight = sorted(set(_sources("data0_13824")), key=lambda src: "float8" in src)
  assert "float4" in four and "float8" not in four, "without the widths: float4s"
  assert "float8" in eight and "float4" not in eight, "the 16 columns are not loaded and stored as two float8s"
  exact = a.astype(np.float64) @ b.astype(np.float64)
  # any order of the 64 products' sum is within 64 eps |a| |b| of the exact one (the standard bound, gamma_n)
  bound = 64 * np.finfo(np.float32).eps * (np.abs(a).astype(np.float64) @ np.abs(b))
  for product in products.values(): assert (np.abs(product - exact) <= bound).all()


@cl_cpu
def test_plain_matmuls_get_the_tile_others_the_heuristics_and_products_stay_within_float32s_bound():
  # tinygrad's heuristics, no BEAM: the kernel's name is its loop sizes, r_<M / 6>_<N / 16>_6_16_<K> for the tile
  rng = np.random.default_rng(3)
  a, b, c = (rng.standard_normal(shape, dtype=np.float32) for shape in ((96, 128), (128, 160), (96, 192)))
  d = rng.standard_normal((192, 160), dtype=np.float32)
  pocl.install()
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


def _train(with_graph: bool, xs: list[Tensor]):
  Tensor.manual_seed(0)
  model = st.build(8, **ONE_LAYER, dropout=0.0)
  opt = SGD(get_parameters(model), lr=0.5)

  def step(x: Tensor) -> Tensor:
    opt.zero_grad()
    loss = model.forward(x).square().mean()
    loss.backward()
    Tensor.realize(loss, *opt.schedule_step())
    return loss

  with graph.disabled() if not with_graph else Context():
    pocl.install()
    jit = TinyJit(step)
    with Context(TRAINING=1): losses = [jit(x).item() for x in xs]   # a new input each call: the graph rebinds it
  pocl.uninstall()
  return jit, losses, {k: v.numpy() for k, v in get_state_dict(model).items()}


@cl_cpu
def test_training_steps_through_the_graph_equal_kernel_by_kernel_to_the_bit():
  xs = [Tensor.randn(2, 6, 8).realize() for _ in range(4)]   # call 0 runs eagerly, 1 captures, 2 and 3 replay
  (plain_jit, plain, plain_w), (graph_jit, graphed, graph_w) = _train(False, xs), _train(True, xs)
  assert graph.uncounted(plain_jit) == 0
  assert graph.uncounted(graph_jit) > 0, "the step was not captured into CL graph batches: the test would compare nothing"
  assert plain == graphed
  for k in plain_w: np.testing.assert_array_equal(plain_w[k], graph_w[k], err_msg=k)
  assert len(set(plain)) == len(plain)   # each call saw its own input and moved the weights


@cl_cpu
def test_decoding_after_a_long_cache_keeps_tinygrads_heuristics_for_its_symbolic_kernels():
  # a step's keys number start_pos + 1, a bound Variable up to max_len: the kit's schedules, which compare sizes with their
  # thresholds, leave such kernels to tinygrad (2,000 positions: the thresholds fall inside the Variable's range)
  model = st.build(16, **{**ONE_LAYER, "hidden_size": 32}, output_mode="all")
  rng = np.random.default_rng(0)
  cache = [rng.standard_normal(layer.shape).astype(np.float32) for layer in st.KVCache(model, 1, 2048).layers]
  x = Tensor(rng.standard_normal((1, 1, 16)).astype(np.float32)).realize()

  def steps():
    dec = st.Decoder(model, batch_size=1, max_len=2048)
    for layer, values in zip(dec.cache.layers, cache): layer.assign(Tensor(values)).realize()
    dec.pos = 2000
    return np.stack([dec.step(x).numpy() for _ in range(3)])   # eager, capture, replay: positions 2000 to 2002

  pocl.install()
  got = steps()
  pocl.uninstall()
  want = steps()
  # the same kernels but for the kit's renderer (vectors, exp2 on float8 within an ulp): float32 sums over 2,000 keys
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


@cl_cpu
def test_decoding_through_the_graph_equals_kernel_by_kernel(monkeypatch):
  # the decoder's TinyJit binds its position as a Variable: the graph fills it in, and what depends on it, per call
  replays, run = [], graph.CLGraph.__call__
  monkeypatch.setattr(graph.CLGraph, "__call__", lambda self, *a, **k: replays.append(self) or run(self, *a, **k))
  model = st.build(8, **ONE_LAYER, output_mode="all", positional="rope", per_head=True, learn_bias=True)
  x = Tensor.randn(2, 9, 8).realize()
  steps = {}
  for with_graph in (False, True):
    with graph.disabled() if not with_graph else Context():
      pocl.install()
      dec = st.Decoder(model, batch_size=2, max_len=9)
      dec.prefill(x[:, :3].contiguous())
      steps[with_graph] = [dec.step(x[:, pos:pos + 1]).numpy() for pos in range(3, 9)]
      pocl.uninstall()
  assert any(g.vars for g in replays), "no decoding step replayed through the graph with its position bound"
  for a, b in zip(steps[False], steps[True]): np.testing.assert_array_equal(a, b)


@cl_cpu
def test_batched_products_get_the_tile_and_long_row_reductions_no_work_groups():
  # the attention's shapes at inference: [B, H, C, d] x [B, H, d, T_k] (k^T copied) and [B, H, C, T_k] x [B, H, T_k, d], and
  # the row max and sum over T_k keys. The tile shows in the kernel's name (_6_16_), a work-group split in its source
  # (__local memory for the partial sums): plain tinygrad splits these reductions, the kit does not
  rng = np.random.default_rng(5)
  q, kt = rng.standard_normal((1, 4, 96, 16), dtype=np.float32), rng.standard_normal((1, 4, 16, 2048), dtype=np.float32)
  v = rng.standard_normal((1, 4, 2048, 16), dtype=np.float32)

  def attention_parts():
    def new_since(before): return [p for key, p in tinygrad.codegen.to_program_cache.items() if key not in before]
    before = set(tinygrad.codegen.to_program_cache)
    s = (Tensor(q) @ Tensor(kt)).contiguous().realize()
    o = (s @ Tensor(v)).realize()
    products, before = new_since(before), set(tinygrad.codegen.to_program_cache)
    m, total = s.max(-1), s.exp().sum(-1)
    Tensor.realize(m, total)
    return [t.numpy() for t in (s, m, total, o)], [p.src[0].arg.function_name for p in products], [p.src[2].arg for p in new_since(before)]
  pocl.uninstall()
  _, _, plain = attention_parts()
  assert plain and all("__local" in src for src in plain), "plain tinygrad did not split the reductions: the test would compare nothing"
  pocl.install()
  (s_, m_, total_, o_), names, reductions = attention_parts()
  assert any("_6_16_16" in n for n in names) and any("_6_16_2048" in n for n in names), names   # both products tiled
  assert len(reductions) == 2 and not any("__local" in src for src in reductions)
  exact_s = q.astype(np.float64) @ kt.astype(np.float64)
  assert (np.abs(s_ - exact_s) <= 16 * np.finfo(np.float32).eps * (np.abs(q).astype(np.float64) @ np.abs(kt))).all()
  np.testing.assert_array_equal(m_, s_.max(-1))
  np.testing.assert_allclose(total_, np.exp(s_.astype(np.float64)).sum(-1), rtol=2048 * np.finfo(np.float32).eps)
  exact_o = s_.astype(np.float64) @ v.astype(np.float64)
  assert (np.abs(o_ - exact_o) <= 2048 * np.finfo(np.float32).eps * (np.abs(s_).astype(np.float64) @ np.abs(v))).all()


def _causal_attention(q, k, v, start_pos):
  """float64: softmax(q k^T / sqrt(d)) v, query row i at position start_pos + i seeing keys 0 .. start_pos + i."""
  q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
  scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
  T, T_k = scores.shape[-2:]
  scores = np.where(np.arange(T_k)[None, :] <= np.arange(T)[:, None] + start_pos, scores, -np.inf)
  w = np.exp(scores - scores.max(-1, keepdims=True))
  return (w / w.sum(-1, keepdims=True)) @ v


@cl_cpu
@pytest.mark.parametrize("B,H,T,d,start_pos", [(2, 3, 37, 16, 0), (1, 2, 64, 64, 0), (1, 2, 40, 8, 25),
                                               (1, 1, 300, 16, 0), (2, 1, 50, 12, 3)])
def test_streaming_attention_equals_float64_and_the_materialised_path(B, H, T, d, start_pos):
  # rows that are not a multiple of the kernel's 32, whole key blocks and the masked rest, a cache before the queries, head
  # sizes 8 to 64; scores of a few units (q, k ~ 3 N(0, 1)), so that the running maximum moves as blocks arrive
  rng = np.random.default_rng(T)
  q = rng.standard_normal((B, H, T, d)).astype(np.float32) * 3
  k, v = (rng.standard_normal((B, H, start_pos + T, d)).astype(np.float32) * s for s in (3, 1))
  pocl.install()
  got = attention.attend(Tensor(q), Tensor(k), Tensor(v), start_pos).numpy()
  want = _causal_attention(q, k, v, start_pos)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  pocl.uninstall()
  plain = st.model.attend(Tensor(q), Tensor(k), Tensor(v), causal=True, start_pos=start_pos).numpy()
  np.testing.assert_allclose(got, plain, rtol=1e-5, atol=1e-5)


def test_streaming_attention_declines_what_it_does_not_compute():
  q = Tensor.zeros(1, 1, 4, 16)
  pocl.uninstall()
  assert attention.attend(q, q, q, 0) is None                         # no kit on this device
  attention.devices.add(q.device)
  try:
    assert attention.attend(q.cast("bfloat16"), q, q, 0) is None       # half precision: the model's own path
    assert attention.attend(q, q[:, :, :2], q[:, :, :2], 0) is None    # fewer keys than the rows see
    # a decoding step whose head size is not a power of two
    assert attention.decode(Tensor.zeros(1, 1, 1, 12), Tensor.zeros(2, 1, 1, 8, 12), Variable("p", 0, 7).bind(3)) is None
  finally:
    attention.devices.discard(q.device)


def _id(opts): return ",".join(f"{k}={v}" for k, v in opts.items()) or "default"


@cl_cpu
@pytest.mark.parametrize("opts", [dict(attention="softmax"), dict(positional="rope", per_head=True, learn_bias=True),
                                  dict(attention="llama4", train_length=8), dict(n_mode="sequence")], ids=_id)
def test_a_model_with_the_streaming_attention_equals_the_float64_reference_padding_included(opts):
  # attentions whose scale folds into q: none, SSMax per head with a bias, a scale by position, SSMax with the sequence's
  # own n (scale-invariant's distance term keeps the model's path); right padding: the second sequence's last rows see no
  # key and give zeros, as in the model's own path
  Tensor.manual_seed(5)
  pocl.install()
  ran = []
  st.model.streaming_attention = lambda *args: ran.append(out := attention.attend(*args)) or out
  model = st.build(8, **{**TINY, "window_size": 64}, output_mode="all", **opts)
  x = Tensor(np.random.default_rng(1).standard_normal((2, 21, 8)).astype(np.float32))
  lengths = np.array([21, 13])
  got = model.forward(x, lengths=lengths).numpy()
  assert len(ran) == TINY["num_layers"] and all(out is not None for out in ran), "the kit's attention did not run in every layer"
  params = {k: v.numpy() for k, v in get_state_dict(model).items()}
  np.testing.assert_allclose(got, ref.model(x.numpy(), params, asdict(model.config), lengths=lengths), atol=1e-5)


@cl_cpu
def test_decoding_with_the_streaming_attention_equals_the_float64_reference():
  # prefill through the one-kernel attention, then steps through the decoding kernel, whose number of keys changes each
  # step under one TinyJit (eager, capture, replays); head size 64, 300 positions: several blocks of 16 keys in each
  # chunk, the last one partial
  Tensor.manual_seed(7)
  pocl.install()
  ran = []

  def spy(q, k, v, start_pos, cache):
    ran.append((isinstance(start_pos, int), out := attention.attend(q, k, v, start_pos, cache)))
    return out
  st.model.streaming_attention = spy
  model = st.build(8, hidden_size=64, num_heads=1, num_layers=2, window_size=400, output_mode="all", positional="rope", per_head=True)
  x = np.random.default_rng(2).standard_normal((2, 300, 8)).astype(np.float32)
  dec = st.Decoder(model, batch_size=2, max_len=320)
  got = [dec.prefill(Tensor(x[:, :290])).numpy()] + [dec.step(Tensor(x[:, p:p + 1])).numpy()[:, None] for p in range(290, 300)]
  assert len(ran) > 2 * 2 and all(out is not None for _, out in ran) and not all(prefill for prefill, _ in ran)
  params = {k: v.numpy() for k, v in get_state_dict(model).items()}
  np.testing.assert_allclose(np.concatenate(got, axis=1), ref.model(x, params, asdict(model.config)), atol=1e-5)
