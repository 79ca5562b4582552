"""How fast is `make lm`'s training step, in tokens per second, against PyTorch's on the same machine and weights?

  python bench/lm_step.py [--devices CL,CPU] [--repeats 10] [--beam 0,tuned,2] [--dtype float32,bfloat16] [--no-compile]
                          [--out runs/bench/lm_step]    (3 to 5 minutes per device and setting on 2 CPU cores)

The model and budget are `make lm`'s (ssmax_tiny/cli.py LM_TRAIN and lm.lm_config): byte-level, hidden 64, 4 heads,
2 layers, RoPE, tied head, L = 128, 16 sequences a step, AdamW with the paper's recipe and global-norm clipping. For
each tinygrad device present, in a process of its own (DEV=...), each dtype and each BEAM setting (0: tinygrad's heuristics;
tuned: what `make lm` runs after `make tune` with the OpenCL-on-CPU kit, the large kernels searched and read from tinygrad's
cache (ssmax_tiny/pocl/tuning.py); N: JITBEAM=N, every kernel searched once): the step as `make lm` runs it (train.Trainer: the batch
from numpy, one TinyJit step, the loss read back), SSMax and softmax, their steps alternating, median over --repeats steps after warm-up;
kernels per step; and the share of the step by kernel (bench/profile_step.py's DEBUG=2 replay). When PyTorch is
installed, its eager step of the same model runs in the same process, alternating with tinygrad's, for a paired ratio
(in bfloat16 under torch.autocast, as nanoGPT trains); then, in the main process, the same model with the same weights
(logits checked to 1e-4 first), trained eager and under torch.compile with the same optimizer. SSMAX_TINY_POCL=1 runs
tinygrad with the OpenCL-on-CPU kit. Writes OUT.json and OUT.md, stamped (bench/stamp.py).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import stamp  # bench/stamp.py: python puts the script's folder first on sys.path

HERE = Path(__file__).parent
ATTENTIONS = ("softmax", "ssmax")


def config_and_train():
  from ssmax_tiny.cli import LM_TRAIN
  from ssmax_tiny.lm import lm_config
  from ssmax_tiny.model import SSMaxConfig
  template = SSMaxConfig(embed_dim=64, hidden_size=64, num_heads=4, num_layers=2, dropout=0.0, window_size=LM_TRAIN.train_length)
  return template, lm_config, LM_TRAIN


def alternate(trainers: dict, repeats: int) -> tuple[dict, dict]:
  """Each Trainer's step times over `repeats` rounds, their steps alternating so that a slow spell of the machine
  reaches all of them alike (paired ratios), and then each one's kernels per step."""
  from tinygrad import GlobalCounters

  from ssmax_tiny.pocl import graph
  times = {name: [] for name in trainers}
  for _ in range(repeats):
    for name, t in trainers.items():
      t0 = time.perf_counter(); t.train_step(); times[name].append(time.perf_counter() - t0)
  kernels = {}
  for name, t in trainers.items():   # launches per step (a CL graph batch counts its kernels); tinygrad's trainers only
    if hasattr(t, "_jit"): GlobalCounters.reset(); t.train_step(); kernels[name] = GlobalCounters.kernel_count + graph.uncounted(t._jit)
  return times, kernels


def paired(num: list[float], den: list[float]) -> dict:
  """The paired ratio of two series of step times taken alternately: the median of num[i] / den[i], with its quartiles."""
  r = [a / b for a, b in zip(num, den)]
  q = statistics.quantiles(r, n=4)
  return dict(median=statistics.median(r), q1=q[0], q3=q[2])


def worker(args) -> dict:
  from dataclasses import replace
  from unittest import mock

  import numpy as np
  from profile_step import kernel_table, step_kernel_times
  from tinygrad import Device, Tensor
  from tinygrad.nn.state import get_state_dict

  from ssmax_tiny import pocl
  from ssmax_tiny.lm import build_lm
  from ssmax_tiny.pocl import tuning
  from ssmax_tiny.text import TextTask
  from ssmax_tiny.train import Trainer
  template, lm_config, train = config_and_train()
  template = replace(template, dtype=args.dtype)
  pocl.use()
  beam = os.environ.get("JITBEAM") or args.beam
  if beam == "tuned" and not pocl.installed():
    raise SystemExit("--beam tuned: make tune's kernels are the OpenCL-on-CPU kit's (SSMAX_TINY_POCL=1, DEV=CL)")
  if beam == "0": mock.patch.object(tuning, "tuned_beam", lambda signature: None).start()   # the heuristics, even where make tune ran
  task = TextTask()
  out = dict(device=Device.DEFAULT + (" with the OpenCL-on-CPU kit" if pocl.installed() else ""), beam=beam, dtype=args.dtype, rows=[])
  trainers, warmups = {}, {}
  for attention in ATTENTIONS:
    trainer = trainers[attention] = Trainer(build_lm(lm_config(template, attention, "rope", train.train_length), 0), task, train)
    if attention == "ssmax" and args.state_out:  # the weights and one batch's logits, for PyTorch's parity check
      tokens = Tensor(task.heldout(np.random.default_rng(0), 2, train.train_length))
      np.savez(args.state_out, tokens=tokens.numpy(), logits=trainer.model(tokens).numpy(),
               **{k: v.numpy() for k, v in get_state_dict(trainer.model).items()})
    t0 = time.perf_counter()
    for _ in range(3): trainer.train_step()  # capture and warm-up (JITBEAM searches here, once per kernel)
    warmups[attention] = time.perf_counter() - t0
  # PyTorch eager's step in this process too, alternating with tinygrad's: its time moves by about 25% between runs on
  # this machine, so the ratio is taken step by step (paired), not between medians of different runs
  try: torch_trainers = {f"torch {a}": TorchTrainer(a, args.dtype) for a in ATTENTIONS}
  except ImportError: torch_trainers = {}
  for t in torch_trainers.values():
    for _ in range(3): t.train_step()
  times, kernel_counts = alternate({**trainers, **torch_trainers}, args.repeats)
  for attention, trainer in trainers.items():
    kernels = kernel_counts[attention]
    step_s = statistics.median(times[attention])
    row = dict(attention=attention, step_s=step_s, tokens_per_s=train.batch_size * train.train_length / step_s, kernels=kernels,
               warmup_s=warmups[attention], capture=trainer.capture_notes)
    if f"torch {attention}" in times:
      row["vs_torch_paired"] = dict(paired(times[attention], times[f"torch {attention}"]),
                                    torch_step_s=statistics.median(times[f"torch {attention}"]))
    if beam == "tuned" and not (trainer.capture_notes or {}).get("tuned"):
      raise SystemExit(f"--beam tuned: `make tune` has not recorded {attention}'s step on {Device.DEFAULT}")
    if attention == "ssmax":
      per = step_kernel_times(lambda: Trainer(build_lm(lm_config(template, attention, "rope", train.train_length), 0), task, train))
      row["profile"] = kernel_table(per, args.top)
      # SSMax over softmax, paired: the median over repeats of each SSMax step's time over the softmax step's beside it
      row["paired_ratio"] = paired(times["ssmax"], times["softmax"])["median"]
    out["rows"].append(row)
    print(json.dumps({k: v for k, v in row.items() if k != "profile"}), file=sys.stderr, flush=True)
  return out


def torch_step(model, train, mode: str = "eager", dtype: str = "float32"):
  """PyTorch's training step for `model` (torch_ref.TorchLM), as make lm's: AdamW with the same groups, clipping,
  the loss read back, in bfloat16 under torch.autocast; on one random batch. Returns the step (a function returning the loss)."""
  import contextlib

  import torch
  import torch.nn.functional as F
  from torch_ref import device
  B, L, V = train.batch_size, train.train_length, 256
  model.to(device())
  params = list(model.parameters())
  groups = [dict(params=[p for p in params if p.dim() >= 2], weight_decay=train.weight_decay),
            dict(params=[p for p in params if p.dim() < 2], weight_decay=0.0)]
  x, y = torch.randint(0, V, (B, L), device=device()), torch.randint(0, V, (B, L), device=device())
  opt = torch.optim.AdamW(groups, lr=train.lr, betas=train.betas)
  forward = torch.compile(model) if mode == "compile" else model

  def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device().type, dtype=torch.bfloat16) if dtype == "bfloat16" else contextlib.nullcontext():
      logits = forward(x)
    loss = F.cross_entropy(logits.float().reshape(-1, V), y.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, train.clip)
    opt.step()
    return loss.item()
  return step


class TorchTrainer:
  """PyTorch eager's step of make lm's model, with a train_step like train.Trainer's, for `alternate`."""
  def __init__(self, attention: str, dtype: str = "float32"):
    import torch
    from torch_ref import TorchLM
    template, _, self.train = config_and_train()
    torch.manual_seed(0)
    self.model = TorchLM(256, template.hidden_size, template.num_heads, template.num_layers, attention=attention, positional="rope")
    self.train_step = torch_step(self.model, self.train, dtype=dtype)


def torch_side(args, state_file: Path) -> dict:
  try:
    import torch
  except ImportError:
    return dict(skipped="PyTorch is not installed: pip install -e '.[torch]' (the CPU build: pip install torch==2.13.0)")
  import numpy as np
  from torch_ref import TorchLM, device, load_tinygrad_state
  template, _, train = config_and_train()
  saved = dict(np.load(state_file))
  tokens0, logits0 = saved.pop("tokens"), saved.pop("logits")
  out = dict(version=torch.__version__, threads=torch.get_num_threads(), device=str(device()), rows=[])
  B, L, V = train.batch_size, train.train_length, 256
  for attention in ATTENTIONS:
    torch.manual_seed(0)
    model = TorchLM(V, template.hidden_size, template.num_heads, template.num_layers, attention=attention, positional="rope")
    if attention == "ssmax":
      load_tinygrad_state(model, saved)
      with torch.no_grad(): out["parity_max_abs_diff"] = float(np.abs(model(torch.from_numpy(tokens0).long()).numpy() - logits0).max())
      out["parity_ok"] = out["parity_max_abs_diff"] < 1e-4
    for mode in ("eager", "compile") if args.compile else ("eager",):
      step = torch_step(model, train, mode, args.dtypes[0])
      try:
        t0 = time.perf_counter()
        for _ in range(3): step()
        warmup_s = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats):
          t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
        s = statistics.median(times)
        out["rows"].append(dict(attention=attention, mode=mode, step_s=s, tokens_per_s=B * L / s, warmup_s=warmup_s))
      except Exception as e:  # torch.compile needs a working C++ toolchain; report, do not fail
        out["rows"].append(dict(attention=attention, mode=mode, error=f"{type(e).__name__}: {str(e)[:200]}"))
      print(json.dumps({"torch": out["rows"][-1]}), file=sys.stderr, flush=True)
  return out


def label(dev: dict) -> str:
  beam = dev["beam"]
  return f", {dev['dtype']}" + (" (heuristics)" if beam in (0, "0") else " (make tune)" if beam == "tuned" else f", JITBEAM={beam}")


def report(results: dict) -> str:
  _, _, train = config_and_train()
  t = results["torch"]
  trow = {(r["attention"], r["mode"]): r for r in t.get("rows", []) if "step_s" in r}
  lines = [f"`make lm`'s training step (byte-level, hidden 64, 4 heads, 2 layers, RoPE, tied head, L = {train.train_length}, "
           f"B = {train.batch_size}: {train.batch_size * train.train_length} tokens a step); median of "
           f"{results['repeats']} steps after warm-up.", ""]
  if "parity_max_abs_diff" in t:
    lines.append(f"PyTorch {t['version']} ({t['threads']} threads): logits parity {t['parity_max_abs_diff']:.1e} max abs difference "
                 f"({'ok' if t['parity_ok'] else 'FAILED'}, bound 1e-4).")
  else: lines.append(f"PyTorch: {t.get('skipped', 'not run')}")
  lines += ["", "| runs on | attention | step ms | tokens/s | kernels | vs PyTorch eager, paired (quartiles) | vs PyTorch eager (time) "
            "| vs torch.compile (time) | warm-up s |", "|---|---|---:|---:|---:|---|---:|---:|---:|"]
  for dev in results["tinygrad"]:
    for r in dev["rows"]:
      e, c = trow.get((r["attention"], "eager")), trow.get((r["attention"], "compile"))
      pt = r.get("vs_torch_paired")
      vs_torch = f"**x{pt['median']:.2f}** ({pt['q1']:.2f} to {pt['q3']:.2f}; PyTorch {1e3 * pt['torch_step_s']:.1f} ms)" if pt else "-"
      lines.append(f"| tinygrad {dev['device']}{label(dev)} | {r['attention']} | "
                   f"{1e3 * r['step_s']:.1f} | {r['tokens_per_s']:,.0f} | {r['kernels']} | {vs_torch} | "
                   f"{'x%.2f' % (r['step_s'] / e['step_s']) if e else '-'} | {'x%.2f' % (r['step_s'] / c['step_s']) if c else '-'} | "
                   f"{r['warmup_s']:.0f} |")
  for (att, mode), r in trow.items():
    lines.append(f"| PyTorch {mode} | {att} | {1e3 * r['step_s']:.1f} | {r['tokens_per_s']:,.0f} | - | - | - | - | {r['warmup_s']:.0f} |")
  for r in t.get("rows", []):
    if "error" in r: lines.append(f"\nPyTorch {r['mode']} ({r['attention']}) failed: {r['error']}")
  lines += ["", "Paired: PyTorch eager's step (same model and optimizer) runs in tinygrad's process, alternating with its steps; "
            "the ratio is the median over the rounds of each tinygrad step over the PyTorch step beside it. The other two "
            "ratio columns divide medians of separate runs (PyTorch's, after tinygrad's)."]
  for dev in results["tinygrad"]:
    ssmax = {r["attention"]: r for r in dev["rows"]}
    lines += ["", f"tinygrad {dev['device']}{label(dev)}: SSMax over softmax "
              f"x{ssmax['ssmax']['step_s'] / ssmax['softmax']['step_s']:.3f} in time"
              + (f" (paired, steps alternating: x{ssmax['ssmax']['paired_ratio']:.3f})" if "paired_ratio" in ssmax["ssmax"] else "")
              + f", {ssmax['ssmax']['kernels'] - ssmax['softmax']['kernels']:+d} "
              f"kernels per step. Where the SSMax step's time goes (DEBUG=2, kernels one at a time):", "", ssmax["ssmax"]["profile"]]
  return "\n".join(lines) + "\n"


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--devices", default=None, help="tinygrad devices, comma-separated (default: each present of CPU, CL, METAL, CUDA, NV, AMD)")
  p.add_argument("--beam", default="0", help="settings to run, comma-separated: 0 (tinygrad's heuristics), tuned (make tune's kernels), "
                 "N (JITBEAM=N: every kernel searched); default 0, e.g. 0,tuned")
  p.add_argument("--repeats", type=int, default=10, help="timed steps after warm-up (default 10)")
  p.add_argument("--top", type=int, default=12, help="kernels in the profile table (default 12)")
  p.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile")
  p.add_argument("--dtype", dest="dtypes", default="float32", help="dtypes to run, comma-separated: float32, bfloat16 (default float32); "
                 "PyTorch's separate runs use the first")
  p.add_argument("--out", type=Path, default=HERE.parent / "runs" / "bench" / "lm_step", help="OUT.json and OUT.md (default runs/bench/lm_step)")
  p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--dtype-one", dest="dtype", default="float32", help=argparse.SUPPRESS)
  p.add_argument("--state-out", default=None, help=argparse.SUPPRESS)
  args = p.parse_args()
  beams = args.beam.split(",")
  if not all(b == "tuned" or (b.isdigit()) for b in beams):
    p.error(f"--beam {args.beam!r} must be comma-separated settings, each 0, tuned or an integer >= 1, e.g. 0,tuned")
  if args.repeats < 2: p.error(f"--repeats {args.repeats} must be >= 2 (the paired ratios' quartiles need two pairs)")
  if args.top < 1: p.error(f"--top {args.top} must be >= 1")
  args.dtypes = args.dtypes.split(",")
  if bad := [d for d in args.dtypes if d not in ("float32", "bfloat16")]: p.error(f"--dtype {bad[0]!r} is not one of float32, bfloat16")
  sys.path.insert(0, str(HERE))
  if args.worker:
    print(json.dumps(worker(args)))
    return 0
  from bench import tinygrad_devices
  state_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"ssmax_tiny_lm_step_{os.getpid()}.npz"
  results = dict(repeats=args.repeats, tinygrad=[])
  for dev in tinygrad_devices(args.devices.split(",") if args.devices else None):
    for dtype in args.dtypes:
      for beam in beams:
        print(f"tinygrad {dev} {dtype} --beam {beam} ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, __file__, "--worker", "--repeats", str(args.repeats), "--top", str(args.top), "--beam", beam, "--dtype-one", dtype]
        if not state_file.exists() and dtype == "float32": cmd += ["--state-out", str(state_file)]
        env = {k: v for k, v in os.environ.items() if k != "JITBEAM"} | {"DEV": dev} | ({"JITBEAM": beam} if beam not in ("0", "tuned") else {})
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
          print(f"tinygrad {dev} failed (exit {proc.returncode})", file=sys.stderr); continue
        results["tinygrad"].append(json.loads(proc.stdout.strip().splitlines()[-1]))
  results["torch"] = torch_side(args, state_file) if state_file.exists() else dict(skipped="no float32 tinygrad run to check parity with")
  state_file.unlink(missing_ok=True)
  md = report(results)
  stamp.write(args.out, results, md, device_line=", ".join(dict.fromkeys(dev["device"] for dev in results["tinygrad"])) or None)
  print(md)
  return 1 if results["torch"].get("parity_ok") is False else 0


if __name__ == "__main__":
  sys.exit(main())
