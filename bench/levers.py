"""Does each speed lever pay? A lever against its alternative on a training step, paired: the two steps alternate in one
process, from the same weights and batch, and the ratio is taken round by round.

  DEV=CL python bench/levers.py --lever kit|float8|tile|layout|autograd|pytorch [--model edifice|lm] [--tuned] [--repeats 10]
                                [--out runs/bench/levers_<lever>]          (2 to 4 minutes each on 2 CPU cores)

Runnable here (the Edifice default's step, hidden 256, 6 layers, B 32, T 60, softmax, AdamW, as bench.py's; or with
--model lm make lm's SSMax + RoPE step through train.Trainer):
  kit      the OpenCL-on-CPU kit (ssmax_tiny/pocl: all its levers) against plain tinygrad
  float8   float8 loads and stores (pocl.vectorize.WideOpenCLRenderer) against tinygrad's float4, both without the tile
  tile     the kit's matmul tile for plain matmuls against tinygrad's heuristics, both with float8
  layout   model.affine (W^T and dy^T copied: the forward, dx and dW three plain products) against the layout it replaced
           (`tokens_inner`: x W^T read along the reduction, dW's operands copied tokens innermost), both with the kit
  autograd model.affine's hand-written Linear backward against autograd's (Linear.HAND_BACKWARD_MIN = None), on any
           device, plain tinygrad unless SSMAX_TINY_POCL=1: the measurement a GPU needs (make gpu-check runs it)
  pytorch  tinygrad with the kit against PyTorch eager's step of the same model and weights (bench/torch_ref.py)
--tuned reads make tune's kernels from tinygrad's cache (make tune searches make lm's and make demo's steps).

Every lever that landed, its question, the paired result when it landed (2-core AMD EPYC, DEV=CL, make lm's or the
Edifice default's step as named) and the decision. The one-off A/B scripts are in git: `git show 1324391:bench/NAME.py`.
- Learning rate as a step input (train.Trainer): does assigning the lr outside the TinyJit cost a schedule per step?
  make lm x0.897 heuristics, x0.866 tuned (launch.py). Kept.
- CL graph (pocl.graph): do a replay's Python launches cost? make lm x0.948 / x0.918 (launch.py). Kept, in the kit.
- Inputs kept on the device (Trainer._input): do new input Tensors each step cost? make lm x0.904 / x0.841 (launch.py). Kept.
- Float arithmetic on vectors (pocl.vectorize's rule): exp kernel x0.29, exact GELU x0.42, make lm x0.868 heuristics and
  tuned (vectorize.py). Kept, in the kit.
- float8 loads and stores: Edifice x0.997 heuristics (neutral), x0.839 tuned (--lever float8). Kept, in the kit.
- Matmul tile without BEAM: Edifice x0.382 heuristics, x1.047 tuned (neutral), make lm x0.839 (--lever tile; one-kernel
  table in matmul_tile.py: 25 to 76 GFLOP/s against 7 to 17). Kept, in the kit, on a CPU's OpenCL only.
- Plain Linear layout (model.affine): Edifice x0.788 heuristics, x0.658 tuned (--lever layout). Kept.
- Hand-written Linear backward against autograd: the Edifice default's step x0.75 on CL, x0.65 on CPU; per layer x0.40
  to x0.84 from 65,536 weights up, but up to x1.9 below (its copies cost more than they save), so only large layers take
  it (linear_backward.py). Kept from 65,536 weights (model.Linear.HAND_BACKWARD_MIN).
- Attention weights realised before they meet v (model.attend against Tensor.scaled_dot_product_attention): one
  attention's forward and backward 1.6x to 3.3x faster (attention_layout.py). Kept.
- RoPE tables realised, and the softmax's backward written out: make lm x0.792 and x0.929 heuristics (x0.740 both),
  x0.853 tuned (transcendentals.py). Kept.
- FUSE_OPTIM=1 (tinygrad's fused optimizer): make lm x0.993 tuned; TRANSCENDENTAL=2 (tinygrad's polynomial exp2 and
  sin): x1.010 tuned, x0.984 heuristics (flag.py). Not adopted: within the spread.
- CPU device compilers: clang-19 x1.012 of clang 14, CPU:LLVM (libLLVM 19) x0.823, tinygrad's X86 back end x2.79
  (compilers.py). Not adopted: the CL device on both cores is faster still.
- make tune timing BEAM's choice against the heuristics' (pocl.tuning.faster_of): the heuristics' choice was faster for
  7 of make lm's 57 searched kernels. Kept, in the kit.
- A hand-written cross-entropy (9.9 ms against tinygrad's 7.4 on make lm's logits) and NOLOCALS=1 (2%, within the
  spread): probes, not adopted.
Writes OUT.json and OUT.md, stamped (bench/stamp.py).
"""
import argparse
import contextlib
import statistics
import time
from pathlib import Path

import stamp
from lm_step import paired
from tinygrad import Context, Device, Tensor, TinyJit
from tinygrad.function import function

import ssmax_tiny
from bench import CONFIG, batch_for, train_step_fn
from ssmax_tiny import model, pocl
from ssmax_tiny.pocl import tuning, vectorize


def _tokens_inner_backward(grad_y, call):
  x, w, g = Tensor(call.src[1]), Tensor(call.src[2]), Tensor(grad_y)
  return (g @ w).uop, (g.T.contiguous() @ x.T.contiguous().T).uop, g.sum(0).uop   # dW: both operands tokens innermost


@function(grad_fxn=_tokens_inner_backward)
def tokens_inner(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
  """model.affine's layout before the matmul tile: x @ w^T read along the reduction, dW's operands copied tokens
  innermost, db summed over dy's rows."""
  return x @ w.T + b


@contextlib.contextmanager
def kit(renderer=None):
  """The kit installed (with this renderer in place of its first, where given), uninstalled afterwards."""
  pocl.install()
  if renderer is not None: vectorize.use(Device.DEFAULT, renderer)
  try: yield
  finally: pocl.uninstall()


@contextlib.contextmanager
def plain():
  pocl.uninstall()
  yield


@contextlib.contextmanager
def on_autograd():
  from unittest import mock
  with mock.patch.object(model.Linear, "HAND_BACKWARD_MIN", None): yield


@contextlib.contextmanager
def as_set():
  """The device as the environment sets it up: the kit where SSMAX_TINY_POCL=1 asks for it."""
  pocl.use()
  try: yield
  finally: pocl.uninstall()


@contextlib.contextmanager
def old_layout():
  with kit(), contextlib.ExitStack() as stack:
    from unittest import mock
    stack.enter_context(mock.patch.object(model, "affine", tokens_inner))
    yield


@contextlib.contextmanager
def _both(a, b):
  with a, b: yield


# lever: (alternative's name, its setting), (lever's name, its setting)
LEVERS = {
  "kit": (("plain tinygrad", plain), ("kit", kit)),
  "float8": (("float4", lambda: kit(vectorize.VectorizingOpenCLRenderer)), ("float8", lambda: kit(vectorize.WideOpenCLRenderer))),
  "tile": (("heuristics", lambda: kit(vectorize.WideOpenCLRenderer)), ("tile", kit)),
  "layout": (("tokens inner", old_layout), ("plain", kit)),
  "autograd": (("autograd", lambda: _both(as_set(), on_autograd())), ("affine", as_set)),
  "pytorch": (("PyTorch eager", None), ("tinygrad", kit)),   # None: bench/torch_ref.py's model
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
      Tensor.manual_seed(0)
      m = ssmax_tiny.build(**CONFIG, window_size=T, attention="softmax")
      Tensor.manual_seed(1)
      x, t = Tensor.randn(B, T, CONFIG["embed_dim"]).realize(), Tensor.randn(B, CONFIG["hidden_size"]).realize()
      jit = TinyJit(train_step_fn(m))
      with Context(TRAINING=1), (tuning.cached_beam(1) if tuned else Context()):
        losses[name] = [jit(x, t).item() for _ in range(3)]   # eager, captured, replayed
      steps[name] = lambda jit=jit, x=x, t=t: jit(x, t).item()
      if lever == "pytorch": steps["PyTorch eager"], losses["PyTorch eager"] = torch_step(m, x, t)   # dropout draws differ
  kernels = "make tune's kernels where tinygrad's cache has them" if tuned else "the heuristics"
  return steps, losses, f"the Edifice default's training step (B {B}, T {T}, softmax) on {Device.DEFAULT}, {kernels}"


def lm(lever: str, tuned: bool) -> tuple[dict, dict, str]:
  """The same for make lm's SSMax + RoPE step (train.Trainer); tuned where make tune recorded the step and the kit is on."""
  from unittest import mock

  from lm_step import config_and_train

  from ssmax_tiny.lm import build_lm
  from ssmax_tiny.text import TextTask
  from ssmax_tiny.train import Trainer
  template, lm_config, train = config_and_train()
  steps, losses, kinds = {}, {}, set()
  for name, setting in LEVERS[lever]:
    with setting(), (contextlib.nullcontext() if tuned else mock.patch.object(tuning, "tuned_beam", lambda signature: None)):
      trainer = Trainer(build_lm(lm_config(template, "ssmax", "rope", train.train_length), 0), TextTask(), train)
      losses[name] = [trainer.train_step() for _ in range(3)]
    steps[name] = trainer.train_step
    kinds.add("make tune's kernels" if (trainer.capture_notes or {}).get("tuned") else "the heuristics")
  return steps, losses, f"make lm's SSMax + RoPE training step on {Device.DEFAULT}, {' and '.join(sorted(kinds))}"


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--lever", choices=sorted(LEVERS), required=True)
  p.add_argument("--model", choices=["edifice", "lm"], default="edifice", help="whose training step (default edifice)")
  p.add_argument("--tuned", action="store_true", help="with the kernels make tune searched (from tinygrad's cache)")
  p.add_argument("--repeats", type=int, default=10, help="paired steps (default 10)")
  p.add_argument("--out", type=Path, default=None, help="output stem (default runs/bench/levers_<lever>[_lm][_tuned])")
  a = p.parse_args()
  if a.repeats < 2: p.error(f"--repeats {a.repeats} must be >= 2 (the paired ratios' quartiles need two pairs)")
  if a.lever == "pytorch" and a.model == "lm":
    p.error("--lever pytorch takes --model edifice only (bench/lm_step.py pairs make lm's step with PyTorch's)")
  if a.lever not in ("autograd",) and not pocl.targets():
    raise SystemExit(f"--lever {a.lever} measures the OpenCL-on-CPU kit (DEV=CL on a CPU); the default is {Device.DEFAULT}")
  out = a.out or stamp.RUNS / ("levers_" + a.lever + ("_lm" if a.model == "lm" else "") + ("_tuned" if a.tuned else ""))
  steps, losses, title = (edifice if a.model == "edifice" else lm)(a.lever, a.tuned)
  times = {name: [] for name in steps}
  with Context(TRAINING=1):
    for _ in range(a.repeats):
      for name, step in steps.items():
        t0 = time.perf_counter(); step(); times[name].append(time.perf_counter() - t0)
  (alt, _), (lever, _) = LEVERS[a.lever]
  ratio = paired(times[lever], times[alt])
  results = dict(device=Device.DEFAULT, lever=a.lever, model=a.model, tuned=a.tuned, repeats=a.repeats, losses=losses, times=times, ratio=ratio)
  md = "\n".join([
    f"{lever} against {alt} ({a.lever}), {title}, {a.repeats} alternating rounds.", "",
    f"| | {alt} s | {lever} s | paired ratio, {lever} / {alt} (quartiles) |", "|---|---:|---:|---|",
    f"| training step | {statistics.median(times[alt]):.3f} | {statistics.median(times[lever]):.3f} | "
    f"**x{ratio['median']:.3f}** ({ratio['q1']:.3f} to {ratio['q3']:.3f}) |", "",
    "First losses: " + "; ".join(f"{n} " + ", ".join(f"{v:.6f}" for v in ls) for n, ls in losses.items()), ""])
  stamp.write(out, results, md, device_line=f"{Device.DEFAULT}, each side as the table names it")
  print(md)


if __name__ == "__main__":
  main()
