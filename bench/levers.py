"""One lever of the CL kernels against its alternative, on the Edifice default's training step, paired: the two steps
alternate in one process.

  DEV=CL python bench/levers.py --lever float8|tile|layout|pytorch [--model edifice|lm] [--tuned] [--repeats 10] [--out STEM]

Levers (ssmax_tiny/cl_vectorize.py, ssmax_tiny/model.py):
  float8   float8 loads and stores (WideOpenCLRenderer) against tinygrad's float4 (SSMAX_TINY_CL_FLOAT8=0); both
           without the matmul tile, so that only the widths differ
  tile     cl_vectorize.matmul_tile's schedule for plain matmuls against tinygrad's heuristics (SSMAX_TINY_CL_TILE=0);
           both with float8. Under --tuned it changes only the kernels make tune left to the heuristics
  layout   model.affine as it is (w^T copied, dy^T copied: dx, dW and the forward three plain products, db a sum along
           rows) against its previous layout (x w^T read along the reduction, dW with tokens innermost in both operands,
           `tokens_inner` below); both with float8 and the tile
  pytorch  tinygrad's step (all levers on) against PyTorch eager's step of the same model and weights (bench/torch_ref.py,
           the same loss and AdamW as bench.py's), Edifice default only; dropout's draws differ, so the losses do too
Both steps are bench.py's (the Edifice default, hidden 256, 6 layers, B = 32, T = 60, softmax, AdamW), from the same
weights and batch, or with --model lm make lm's SSMax + RoPE step (a train.Trainer, as bench/flag.py runs it), each
built and captured with its lever set; with --tuned both read make tune's kernel choices from tinygrad's cache
(`python bench/tune.py --devices CL` searches the Edifice default's, `make tune` make lm's). Reports the first losses
of both, the median step of each and the median of the paired ratios (the lever over its alternative, with quartiles). Writes OUT.json and
OUT.md (default bench/<lever>[_lm][_tuned]).
"""
import argparse
import contextlib
import json
import os
import statistics
import time
from pathlib import Path
from unittest import mock

from lm_step import paired
from tinygrad import Context, Device, Tensor, TinyJit
from tinygrad.function import function
from tinygrad.nn.state import get_parameters

import ssmax_tiny
from bench import CONFIG, batch_for, train_step_fn
from ssmax_tiny import cl_vectorize, model, tuning


def _tokens_inner_backward(grad_y, call):
  x, w, g = Tensor(call.src[1]), Tensor(call.src[2]), Tensor(grad_y)
  return (g @ w).uop, (g.T.contiguous() @ x.T.contiguous().T).uop, g.sum(0).uop   # dW: both operands tokens innermost


@function(grad_fxn=_tokens_inner_backward)
def tokens_inner(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
  """model.affine's layout before the matmul tile: x @ w^T read along the reduction, dW's operands copied tokens
  innermost, db summed over dy's rows."""
  return x @ w.T + b


def env(**values):
  """os.environ with these values inside (cl_vectorize.install() reads them)."""
  return mock.patch.dict(os.environ, values)


# lever: (alternative's name, its setting), (lever's name, its setting)
LEVERS = {
  "float8": (("float4", lambda: env(SSMAX_TINY_CL_FLOAT8="0", SSMAX_TINY_CL_TILE="0")),
             ("float8", lambda: env(SSMAX_TINY_CL_FLOAT8="1", SSMAX_TINY_CL_TILE="0"))),
  "tile": (("heuristics", lambda: env(SSMAX_TINY_CL_FLOAT8="1", SSMAX_TINY_CL_TILE="0")),
           ("tile", lambda: env(SSMAX_TINY_CL_FLOAT8="1", SSMAX_TINY_CL_TILE="1"))),
  "layout": (("tokens inner", lambda: mock.patch.object(model, "affine", tokens_inner)),
             ("plain", contextlib.nullcontext)),
  "pytorch": (("PyTorch eager", None), ("tinygrad", contextlib.nullcontext)),   # None: bench/torch_ref.py's model
}


def torch_step(m, x, t):
  """PyTorch eager's step of the same model: bench/torch_ref.py's TorchSSMaxTransformer with m's weights, the same
  loss and AdamW as bench.py's (its torch_side), on the same batch; returns the step and its first three losses."""
  import torch
  from tinygrad.nn.state import get_state_dict
  from torch_ref import TorchSSMaxTransformer, load_tinygrad_state
  ref = TorchSSMaxTransformer(**CONFIG, attention="softmax").train()
  load_tinygrad_state(ref, {k: v.numpy() for k, v in get_state_dict(m).items()})
  opt = torch.optim.AdamW(ref.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
  xt, tt = torch.from_numpy(x.numpy()), torch.from_numpy(t.numpy())

  def step():
    opt.zero_grad(); loss = (ref(xt) - tt).square().mean(); loss.backward(); opt.step()
    return loss.item()
  return step, [step() for _ in range(3)]


def edifice(lever: str, tuned: bool) -> tuple[dict, dict, str]:
  """bench.py's step of the Edifice default for each side of the lever: {name: step}, {name: first 3 losses}, a title."""
  T = 60
  B = batch_for(T)
  steps, losses = {}, {}
  for name, setting in LEVERS[lever]:
    if setting is None: continue   # PyTorch's, built beside tinygrad's below
    with setting():
      cl_vectorize.install()
      Tensor.manual_seed(0)
      m = ssmax_tiny.build(**CONFIG, window_size=T, attention="softmax")
      Tensor.realize(*get_parameters(m))
      Tensor.manual_seed(1)
      x, t = Tensor.randn(B, T, CONFIG["embed_dim"]).realize(), Tensor.randn(B, CONFIG["hidden_size"]).realize()
      jit = TinyJit(train_step_fn(m))
      with Context(TRAINING=1), (tuning.cached_beam(1) if tuned else Context()):
        losses[name] = [jit(x, t).item() for _ in range(3)]   # eager, captured, replayed
      steps[name] = lambda jit=jit, x=x, t=t: jit(x, t).item()
      if lever == "pytorch": steps["PyTorch eager"], losses["PyTorch eager"] = torch_step(m, x, t)   # dropout draws differ
  kernels = "make tune's kernels (bench/tune.py's search, from the cache)" if tuned else "the heuristics"
  return steps, losses, f"the Edifice default's training step (B {B}, T {T}, softmax) on {Device.DEFAULT}, {kernels}"


def lm(lever: str, tuned: bool) -> tuple[dict, dict, str]:
  """The same for make lm's SSMax + RoPE step (train.Trainer, as bench/flag.py runs it); tuned where make tune recorded
  the step (a Trainer reads its record), else the heuristics."""
  from lm_step import config_and_train

  from ssmax_tiny.lm import build_lm
  from ssmax_tiny.text import TextTask
  from ssmax_tiny.train import Trainer
  template, lm_config, train = config_and_train()
  steps, losses, kinds = {}, {}, set()
  for name, setting in LEVERS[lever]:
    with setting(), env(SSMAX_TINY_TUNED="1" if tuned else "0"):
      trainer = Trainer(build_lm(lm_config(template, "ssmax", "rope", train.train_length), 0), TextTask(), train)
      losses[name] = [trainer.train_step() for _ in range(3)]
    steps[name] = trainer.train_step
    kinds.add("make tune's kernels" if trainer.tuned else "the heuristics")
  return steps, losses, f"make lm's SSMax + RoPE training step on {Device.DEFAULT}, {' and '.join(sorted(kinds))}"


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--lever", choices=sorted(LEVERS), required=True)
  p.add_argument("--model", choices=["edifice", "lm"], default="edifice", help="whose training step (default edifice)")
  p.add_argument("--tuned", action="store_true", help="with the kernels make tune or bench/tune.py searched (from tinygrad's cache)")
  p.add_argument("--repeats", type=int, default=10, help="paired steps (default 10)")
  p.add_argument("--out", type=Path, default=None, help="output stem (default bench/<lever>[_lm][_tuned])")
  a = p.parse_args()
  if a.repeats < 2: p.error(f"--repeats {a.repeats} must be >= 2 (the paired ratios' quartiles need two pairs)")
  if a.lever == "pytorch" and a.model == "lm":
    p.error("--lever pytorch takes --model edifice only (bench/lm_step.py pairs make lm's step with PyTorch's)")
  if Device.DEFAULT.split(":")[0] != "CL": raise SystemExit(f"bench/levers.py measures the CL device (DEV=CL); the default is {Device.DEFAULT}")
  out_stem = a.out or Path(__file__).parent / (a.lever + ("_lm" if a.model == "lm" else "") + ("_tuned" if a.tuned else ""))
  steps, losses, title = (edifice if a.model == "edifice" else lm)(a.lever, a.tuned)
  times = {name: [] for name in steps}
  with Context(TRAINING=1):
    for _ in range(a.repeats):
      for name, step in steps.items():
        t0 = time.perf_counter(); step(); times[name].append(time.perf_counter() - t0)
  (alt, _), (lever, _) = LEVERS[a.lever]
  ratio = paired(times[lever], times[alt])
  results = dict(device=Device.DEFAULT, lever=a.lever, model=a.model, tuned=a.tuned, repeats=a.repeats, losses=losses, times=times, ratio=ratio)
  Path(f"{out_stem}.json").write_text(json.dumps(results, indent=1))
  md = "\n".join([
    f"{lever} against {alt} ({a.lever}), {title}, {a.repeats} alternating rounds.", "",
    f"| | {alt} s | {lever} s | paired ratio, {lever} / {alt} (quartiles) |", "|---|---:|---:|---|",
    f"| training step | {statistics.median(times[alt]):.3f} | {statistics.median(times[lever]):.3f} | "
    f"**x{ratio['median']:.3f}** ({ratio['q1']:.3f} to {ratio['q3']:.3f}) |", "",
    "First losses: " + "; ".join(f"{n} " + ", ".join(f"{v:.6f}" for v in ls) for n, ls in losses.items()), ""])
  Path(f"{out_stem}.md").write_text(md)
  print(md)


if __name__ == "__main__":
  main()
