"""Attention in blocks of queries (memory that does not grow with T squared) equals the materialised attention; rows with
no key to attend get zero weights and finite gradients; bad block sizes are refused."""
import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import reference as ref
from conftest import TINY
from tinygrad import Tensor
from tinygrad.nn.state import get_state_dict

import ssmax_tiny as st
from ssmax_tiny.model import attend_blocked, default_query_block, masked_softmax

ROOT = Path(__file__).parent.parent
TOL = 1e-5  # the bound; float32 through 2 layers of O(1) activations measured ~5e-7

VARIANTS = [dict(), dict(per_head=True, learn_bias=True), dict(n_mode="sequence"), dict(positional="rope"), dict(attention="softmax")]


def _model(query_block, **opts):
  Tensor.manual_seed(3)
  model = st.build(8, **{**TINY, "window_size": 64}, output_mode="all", query_block=query_block, **opts)
  for layer in model.ssmax_layers():  # s away from 1 (and a bias), so that a wrong n in a block would show
    layer.s.assign(Tensor.uniform(*layer.s.shape, low=0.3, high=2.0)).realize()
    if layer.bias is not None: layer.bias.assign(Tensor.uniform(*layer.bias.shape, low=-0.5, high=0.5)).realize()
  return model


# every attention option with a block that does not divide T; then blocks that divide T, of one query, larger than T
CASES = [(opts, 20, 7) for opts in VARIANTS] + [(dict(), 16, 4), (dict(positional="rope"), 9, 1), (dict(), 13, 16)]


def _id(v): return (",".join(f"{k}={x}" for k, x in v.items()) or "default") if isinstance(v, dict) else str(v)


@pytest.mark.parametrize("opts,T,block", CASES, ids=_id)
def test_blocked_equals_materialised_and_the_float64_reference(opts, T, block):
  blocked = _model(block, **opts)
  assert blocked.query_block(2, T) == block
  x = Tensor.randn(2, T, 8).realize()
  got = blocked.forward(x).numpy()
  params = {k: v.numpy() for k, v in get_state_dict(blocked).items()}
  np.testing.assert_allclose(got, ref.model(x.numpy(), params, asdict(blocked.config)), atol=TOL)
  np.testing.assert_allclose(got, blocked.forward(x, fold_scale=False).numpy(), atol=TOL)   # the explicit path materialises


def test_blocked_prefill_then_decoding_steps_equal_a_full_recompute():
  model = _model(3, positional="rope", per_head=True)
  x = Tensor.randn(2, 12, 8).realize()
  full = model.forward(x).numpy()
  dec = st.Decoder(model, batch_size=2, max_len=12)
  np.testing.assert_allclose(dec.prefill(x[:, :8].contiguous()).numpy(), full[:, :8], atol=TOL)   # 8 queries in blocks of 3
  for pos in range(8, 12):
    np.testing.assert_allclose(dec.step(x[:, pos:pos + 1]).numpy(), full[:, pos], atol=TOL)


def test_attend_blocked_after_cached_positions():
  q, k, v = (Tensor.randn(1, 2, n, 4).realize() for n in (5, 9, 9))   # 4 positions cached, then 5 new queries
  want = st.attend(q, k, v, causal=True, start_pos=4).numpy()
  np.testing.assert_allclose(attend_blocked(q, k, v, 2, start_pos=4).numpy(), want, atol=TOL)


def test_default_block_keeps_one_block_of_scores_within_budget():
  assert default_query_block(1, 4, 4096, 4096) == 4096                  # 2^26 floats: the whole matrix, materialised
  for B, H, T in [(1, 4, 8192), (1, 4, 65536), (3, 2, 10_000), (64, 16, 65536)]:
    c = default_query_block(B, H, T, T)
    assert 16 <= c < T and c % 16 == 0 and (c == 16 or B * H * c * T <= st.model.SCORE_BUDGET), (B, H, T, c)
  assert st.build(8, **TINY).query_block(1, 6) == 6



def test_blocks_of_one_shape_share_their_kernels():
  # each block's first query is a bound Variable, so blocks with the same number of keys run the same compiled kernels;
  # with the offset a constant, twice the blocks compiled twice the kernels (held in memory; at T = 65,536, 512 sets)
  from tinygrad.codegen import to_program_cache
  q, k, v = (Tensor.randn(1, 2, 64, 12).realize() for _ in range(3))
  want = st.attend(q, k, v, causal=True).numpy()
  compiled = {}
  for block in (8, 4):   # 8 and 16 blocks; both cut the keys at multiples of 8 (8 lengths)
    before = len(to_program_cache)
    np.testing.assert_allclose(attend_blocked(q, k, v, block).numpy(), want, atol=TOL)
    compiled[block] = len(to_program_cache) - before
  assert 0 < compiled[4] <= compiled[8], compiled

def test_rows_with_no_key_get_zero_weights_and_finite_gradients():
  z = Tensor.randn(2, 3, 4, 5).realize()
  mask = Tensor(np.array([[True] * 5, [False] * 5, [True, False, True, False, False], [False] * 5]))
  for weights in (masked_softmax(z, mask), st.compute(z, 0.7, Tensor([[1.0], [2.0], [3.0], [4.0]]), mask=mask)):
    w = weights.numpy()
    assert np.isfinite(w).all() and (w[:, :, [1, 3]] == 0).all()
    np.testing.assert_allclose(w[:, :, [0, 2]].sum(-1), 1.0, atol=1e-6)
  q, k, v = (Tensor.randn(2, 3, n, 8).realize() for n in (4, 5, 5))
  out = st.attend(q, k, v, mask)
  assert (out.numpy()[:, :, [1, 3]] == 0).all()
  grads = (out * Tensor.randn(*out.shape)).sum().gradient(q, k, v)
  assert all(np.isfinite(g.numpy()).all() for g in grads)
  zs = Tensor.randn(3, 5).realize()
  gz = st.compute(zs, 1.3, 5, mask=mask[1:]).square().sum().gradient(zs)[0].numpy()
  assert np.isfinite(gz).all() and (gz[0] == 0).all()                  # the empty row contributes nothing


@pytest.mark.parametrize("bad", [0, -4, 2.5, True])
def test_bad_query_block_is_refused(bad):
  with pytest.raises(ValueError, match=f"query_block={bad!r} must be an int >= 1"): st.build(8, **TINY, query_block=bad)
  attn = st.build_ssmax_attention(16, 2)
  with pytest.raises(ValueError, match=f"query_block={bad!r}"): attn(Tensor.zeros(1, 4, 16), query_block=bad)


def _peak(*args):
  out = subprocess.run([sys.executable, "tests/memory_probe.py", "--T", "4096", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env={**os.environ, "DEV": "CPU"})
  assert out.returncode == 0, out.stderr
  r = json.loads(out.stdout.strip().splitlines()[-1])
  assert r["finite"]
  return r, r["peak_rss_mib"] - r["rss_before_forward_mib"]


@pytest.mark.slow
def test_blocked_forward_needs_less_memory_than_the_materialised_one():
  # measured on the CPU device, whose buffers live in this process (PoCL also compiles in-process, which adds noise):
  # T = 4096, 2 heads, 2 layers, one attention matrix 128 MiB. Materialised: one matrix per layer plus one (~400 MiB);
  # blocks of 256 queries: 68 MiB measured. Bound: under half a matrix plus what the materialised path needs at most
  materialised, grew_m = _peak()
  blocked, grew_b = _peak("--query-block", "256")
  assert materialised["query_block"] == 4096 and blocked["query_block"] == 256
  assert grew_b < 0.6 * materialised["attention_matrix_mib"] and grew_b < grew_m / 3, (grew_b, grew_m)


HOST_MEMORY = """
import ctypes
from ssmax_tiny.pocl import memory
libc = ctypes.CDLL(None); libc.malloc.restype = ctypes.c_void_p; libc.free.argtypes = [ctypes.c_void_p]
def rss(): return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) / 1024
def touch_and_free(mib):
  p = libc.malloc(mib << 20); ctypes.memset(p, 1, mib << 20); libc.free(p)
touch_and_free(24)   # a mapped block freed: glibc raises its mmap threshold to 24 MiB
r0 = rss(); touch_and_free(8); kept = rss() - r0
with memory.returned():
  r1 = rss(); touch_and_free(8); kept_inside = rss() - r1
print(kept, kept_inside)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists() or platform.libc_ver()[0] != "glibc", reason="glibc on Linux")
def test_host_memory_freed_inside_returned_goes_back_to_the_system():
  # what PoCL's buffers go through (ssmax_tiny/pocl/memory.py): after a large block is freed, glibc keeps blocks up to that size in
  # its heap when they are freed; inside returned() they are unmapped at once. In a fresh process, so the heap is known
  env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
  out = subprocess.run([sys.executable, "-c", HOST_MEMORY], capture_output=True, text=True, timeout=60, env=env)
  assert out.returncode == 0, out.stderr
  kept, kept_inside = map(float, out.stdout.split())
  assert kept > 7 and kept_inside < 1, (kept, kept_inside)
