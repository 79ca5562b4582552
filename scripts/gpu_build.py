"""make gpu-build: every kernel of ssmax_tiny's GPU paths built by a GPU's own compiler, on a machine without a GPU.

tinygrad 0.14's NULL device renders and compiles each kernel with another device's renderer and compiler and runs nothing
(tinygrad/runtime/ops_null.py); reads return garbage (NULL_ALLOW_COPYOUT=1). So the Python paths a GPU user takes run
for real here, and every kernel they launch is built by the compiler a GPU would use:
- CUDA C through NVRTC, NVIDIA's runtime compiler (pip: nvidia-cuda-nvrtc-cu12, the extra 'gpu-build'), for sm_80 (A100)
  and sm_90 (H100);
- PTX through tinygrad's PTX renderer and nvJitLink (pip: nvidia-nvjitlink-cu12), for sm_90;
- AMD RDNA3 (gfx1100) through tinygrad's LLVM renderer and an LLVM with the AMDGPU target (Debian: libllvm19). AMD's
  own compiler library (comgr, tinygrad's HIP path) is not on PyPI; Metal needs macOS's compiler: neither is built.
Each job runs in a fresh process (two at a time) with tinygrad's compile cache off (CCACHE=0), so every kernel it
launches is compiled there; a job that takes longer than --timeout is reported as not built.

The jobs: the Edifice default's forward (TinyJit, B 32, T 60) and a training step written as tinygrad's examples write
one; make lm's training step through `Trainer`, in float32 and in bfloat16; KV-cache decoding through `Decoder`
(LanguageModel.generate) in both dtypes; make lm's model at T = 16,384 (attention in blocks of queries); and one cell of
make lm through the sweep's cell runner (train, evaluate, checkpoint). The table gives, per target and job, the kernels
built, how many use tensor cores (a WMMA in the kernel), and the seconds it took; the bfloat16 step's tensor-core kernels
are listed by name. Output: runs/bench/gpu_build.{json,md} (--out).

  python scripts/gpu_build.py [--targets cuda:sm_80,cuda:sm_90,ptx:sm_90,amd:gfx1100] [--jobs ...] [--out runs/bench/gpu_build]
"""
from __future__ import annotations

import argparse
import ctypes.util
import glob
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

TARGETS = {"cuda:sm_80": "NULL:CUDA:sm_80", "cuda:sm_90": "NULL:CUDA:sm_90", "ptx:sm_90": "NULL:PTX:sm_90", "amd:gfx1100": "NULL:AMDLLVM:gfx1100"}
JOBS = ("edifice_forward", "edifice_train_step", "lm_train_float32", "lm_train_bfloat16", "decode_float32", "decode_bfloat16",
        "long_context_16k", "sweep_cell")


def nvidia_lib(name: str) -> Path | None:
  """A library of NVIDIA's PyPI wheels (nvidia-*-cu12), found without importing anything that needs it."""
  spec = importlib.util.find_spec("nvidia")
  for root in (spec.submodule_search_locations if spec else []):
    if found := sorted(glob.glob(os.path.join(root, "*", "lib", name))): return Path(found[0])
  return None


def llvm_with_amdgpu() -> Path | None:
  """An LLVM shared library new enough for tinygrad's AMD renderer (LLVM 17 or later; Debian's libllvm19)."""
  for v in range(21, 16, -1):
    if (path := ctypes.util.find_library(f"LLVM-{v}")) is not None: return Path(path)
  return None


def environment(target: str) -> tuple[dict | None, str]:
  """The environment a target's process needs, or None and why it cannot be built here."""
  env = {**os.environ, "DEV": TARGETS[target], "NULL_ALLOW_COPYOUT": "1", "CCACHE": "0"}
  env.pop("SSMAX_TINY_POCL", None)
  if target.startswith(("cuda", "ptx")):
    nvrtc = nvidia_lib("libnvrtc.so.12")
    if nvrtc is None: return None, "NVRTC not found: pip install nvidia-cuda-nvrtc-cu12 (make gpu-build installs it)"
    env["NVRTC_PATH"] = str(nvrtc)
    libs = [str(nvrtc.parent)]
    if target.startswith("ptx"):
      if (jitlink := nvidia_lib("libnvJitLink.so.12")) is None: return None, "nvJitLink not found: pip install nvidia-nvjitlink-cu12"
      env["NVJITLINK_PATH"] = str(jitlink)
      libs.append(str(jitlink.parent))
    env["LD_LIBRARY_PATH"] = ":".join(libs + [env.get("LD_LIBRARY_PATH", "")]).rstrip(":")   # NVRTC loads its builtins from there
  if target.startswith("amd"):
    if (llvm := llvm_with_amdgpu()) is None: return None, "no LLVM 17+ with the AMDGPU target (Debian/Ubuntu: apt-get install libllvm19)"
    env["LLVM_PATH"] = str(llvm)
  return env, ""


# ---- in a target's process
def _programs() -> dict:
  import tinygrad.codegen
  return dict(tinygrad.codegen.to_program_cache)


def _tensor_core_inputs(prg) -> set[str]:
  """The input dtypes of the kernel's tensor-core operations (WMMA), none where it uses none."""
  from tinygrad.uop.ops import Ops
  return {u.arg[1].name for u in (prg.src[1].src if prg.src[1] is not None else ()) if u.op is Ops.WMMA}


def _name(prg) -> str: return re.sub(r"\x1b\[[0-9;]*m", "", prg.src[0].arg.name)


def job(name: str) -> None:
  """Run one job; the caller counts the kernels it built."""
  import numpy as np
  from tinygrad import Context, Tensor, TinyJit, nn

  import ssmax_tiny as st
  from ssmax_tiny import lm, sweep
  from ssmax_tiny.model import SSMaxConfig
  from ssmax_tiny.text import TextTask
  from ssmax_tiny.train import TrainConfig, Trainer
  lm_model = SSMaxConfig(embed_dim=64, hidden_size=64, num_heads=4, num_layers=2, dropout=0.0, window_size=128)
  lm_train = TrainConfig(steps=200, batch_size=16, train_length=128, lr=3e-3, warmup=20)
  Tensor.manual_seed(0)
  if name == "edifice_forward":
    model = st.build(64)
    for _ in range(3): model(Tensor.randn(32, 60, 64)).realize()              # eager, capture, replay
  elif name == "edifice_train_step":
    model = st.build(64)
    opt = nn.optim.AdamW(nn.state.get_parameters(model), lr=1e-3)

    @TinyJit
    def step(x: Tensor, y: Tensor) -> Tensor:
      with Context(TRAINING=1):
        opt.zero_grad()
        loss = (model(x) - y).square().mean().backward()
        opt.step()
        return loss.realize()
    for _ in range(3): step(Tensor.randn(32, 60, 64).realize(), Tensor.randn(32, 256).realize()).item()
  elif name.startswith("lm_train_"):
    dtype = name.removeprefix("lm_train_")
    config = lm.lm_config(replace(lm_model, dtype=dtype), "ssmax", "rope", 128)
    trainer = Trainer(lm.build_lm(config, 0), TextTask(), lm_train)
    for _ in range(3): trainer.train_step()
  elif name.startswith("decode_"):
    config = lm.lm_config(replace(lm_model, dtype=name.removeprefix("decode_")), "ssmax", "rope", 128)
    list(lm.build_lm(config, 0).generate(np.zeros((1, 16), np.int32), 8, temperature=0))
  elif name == "long_context_16k":
    model = lm.build_lm(lm.lm_config(lm_model, "ssmax", "rope", 128), 0)
    tokens = Tensor(np.zeros((1, 16384), np.int32))
    model.token_losses(tokens, tokens).realize()
  elif name == "sweep_cell":
    cell = lm.lm_cells(lm_model, TrainConfig(steps=2, batch_size=2, train_length=128, lr=3e-3, warmup=1), task=TextTask(),
                       attentions=("ssmax",), positionals=("rope",), seeds=(0,), factor=2, windows=1, samples=1)[0]
    sweep.run_cell(lm.run_cell, cell, Path(os.environ.get("GPU_BUILD_TMP", "/tmp")) / "gpu_build_cell")
  else: raise ValueError(f"job {name!r} is not one of {', '.join(JOBS)}")


def child(target: str, jobs: list[str]) -> None:
  """The jobs in turn in this process; one JSON line per job, with the distinct kernels the job launched (the NULL
  device's launches, recorded)."""
  from tinygrad.runtime.ops_null import NullProgram
  launched: set[str] = set()
  run = NullProgram.__call__
  NullProgram.__call__ = lambda self, *a, **k: launched.add(self.name) or run(self, *a, **k)
  for name in jobs:
    launched.clear()
    t0, error = time.perf_counter(), None
    try: job(name)
    except Exception as e:  # noqa: BLE001 (a job that fails is reported, and the others still run)
      error = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
    by_name = {p.src[0].arg.function_name: p for p in _programs().values()}
    new = [by_name[n] for n in launched if n in by_name]
    # float32 on NVIDIA's tensor cores is TF32, which tinygrad uses on a CUDA device only under ALLOW_TF32=1; its check
    # reads the target's device (codegen/opt/postrange.py), which is NULL here, so the NULL build has TF32 kernels a GPU
    # would not: counted apart
    tc = [p for p in new if _tensor_core_inputs(p) - {"float"}]
    tf32 = [p for p in new if "float" in _tensor_core_inputs(p)]
    print(json.dumps(dict(target=target, job=name, kernels=len(new), tensor_cores=len(tc), tf32_null_only=len(tf32),
                          seconds=round(time.perf_counter() - t0, 1), tensor_core_kernels=sorted({_name(p) for p in tc}), error=error)),
          flush=True)


# ---- the driver
def run_jobs(todo: list[tuple[str, str, dict]], timeout: float) -> list[dict]:
  """Each (target, job, environment) in a fresh process, two at a time, each stopped after `timeout` seconds."""
  rows, running = [], []
  while todo or running:
    while todo and len(running) < 2:
      target, name, env = todo.pop(0)
      proc = subprocess.Popen([sys.executable, __file__, "--child", target, "--jobs", name], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
      running.append((target, name, proc, time.monotonic()))
    time.sleep(0.5)
    for item in [r for r in running if r[2].poll() is not None or time.monotonic() - r[3] > timeout]:
      target, name, proc, t0 = item
      running.remove(item)
      if proc.poll() is None: proc.kill()
      stdout, stderr = proc.communicate()
      got = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
      if not got:
        timed_out = time.monotonic() - t0 > timeout
        why = f"not built within {timeout:.0f} s" if timed_out else (stderr.strip().splitlines() or ["no output"])[-1][:300]
        got = [dict(target=target, job=name, kernels=0, tensor_cores=0, tf32_null_only=0, seconds=round(time.monotonic() - t0),
                    tensor_core_kernels=[], error=why, timed_out=timed_out)]
      for r in got: print(f"{target:12} {r['job']:20} {r['kernels']:4} kernels, {r['tensor_cores']:3} with tensor cores, {r['seconds']:6.1f} s"
                          + (f"  FAILED: {r['error']}" if r["error"] else ""), flush=True)
      rows += got
  return rows


def table(rows: list[dict], skipped: dict) -> str:
  targets = list(dict.fromkeys(r["target"] for r in rows))
  lines = ["Kernels built by each GPU compiler, with no GPU (tinygrad's NULL device): built / with tensor cores (bfloat16) / seconds.",
           "Not counted as tensor-core kernels: float32 (TF32) ones, which the NULL build makes and a CUDA device makes only under ALLOW_TF32=1.", "",
           "| job | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
  for name in dict.fromkeys(r["job"] for r in rows):
    cells = []
    for t in targets:
      r = next((r for r in rows if r["target"] == t and r["job"] == name), None)
      cells.append("-" if r is None else f"FAILED: {r['error']}" if r["error"] else f"{r['kernels']} / {r['tensor_cores']} / {r['seconds']:.0f} s")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  for t in targets:
    total = [r for r in rows if r["target"] == t]
    lines.append(f"\n{t}: {sum(r['kernels'] for r in total)} kernels, {sum(r['tensor_cores'] for r in total)} with tensor cores, "
                 f"{sum(r['seconds'] for r in total):.0f} s")
  for r in rows:
    if r["job"] == "lm_train_bfloat16" and r["tensor_core_kernels"]:
      lines.append(f"\n{r['target']}, make lm's bfloat16 step, tensor-core kernels: " + ", ".join(r["tensor_core_kernels"]))
  for t, why in skipped.items(): lines.append(f"\n{t}: not built here: {why}")
  return "\n".join(lines) + "\n"


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, of {', '.join(TARGETS)} (default all)")
  p.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated, of {', '.join(JOBS)} (default all)")
  p.add_argument("--out", type=Path, default=Path("runs/bench/gpu_build"), help="writes OUT.json and OUT.md (default runs/bench/gpu_build)")
  p.add_argument("--timeout", type=float, default=300, help="seconds a job may take before it is reported as not built (default 300)")
  p.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = p.parse_args()
  jobs = [j for j in args.jobs.split(",") if j]
  if bad := [j for j in jobs if j not in JOBS]: p.error(f"--jobs: {bad[0]!r} is not one of {', '.join(JOBS)}")
  if args.child: child(args.child, jobs); return 0
  targets = [t for t in args.targets.split(",") if t]
  if bad := [t for t in targets if t not in TARGETS]: p.error(f"--targets: {bad[0]!r} is not one of {', '.join(TARGETS)}")
  skipped, todo = {}, []
  for target in targets:
    env, why = environment(target)
    if env is None:
      skipped[target] = why
      print(f"{target}: skipped ({why})", flush=True)
    else: todo += [(target, name, env) for name in jobs]
  t_start = time.perf_counter()
  rows = run_jobs(todo, args.timeout)
  rows.sort(key=lambda r: (targets.index(r["target"]), JOBS.index(r["job"])))
  print(f"all targets: {time.perf_counter() - t_start:.0f} s", flush=True)
  md = table(rows, skipped)
  sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
  import stamp
  stamp.write(args.out, dict(rows=rows, skipped=skipped), md, device_line="the NULL device (kernels built, nothing run) for " + ", ".join(targets))
  print("\n" + md + f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')}")
  # a job that ran past --timeout is a limit of this check (reported in the table); a compiler's or Python's error fails it
  for r in rows:
    if r.get("timed_out"): print(f"note: {r['target']} {r['job']} was not built within {args.timeout:.0f} s (docs/gpu.md)")
  return 1 if any(r["error"] and not r.get("timed_out") for r in rows) else 0


if __name__ == "__main__":
  sys.exit(main())
