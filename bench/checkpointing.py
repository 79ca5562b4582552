"""Activation checkpointing (TrainConfig.checkpoint) against the ordinary training step: peak memory and time per step,
each configuration in a fresh process (peak RSS is per process), on the language model at longer training lengths.

  python bench/checkpointing.py [--lengths 512,1024,2048] [--steps 3] [--out bench/checkpointing]

The ordinary step is one TinyJit (timed on replays); the checkpointed step runs eagerly, stage by stage (it realises
each block before the next, which one TinyJit cannot capture), so its time includes tinygrad's scheduling each step.
Model: byte-level LM, hidden 128, 4 heads, 4 layers, SSMax + RoPE, batch 4. Writes JSON and a Markdown table.
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def one(length: int, checkpoint: bool, steps: int) -> dict:
  from tinygrad import Device

  from ssmax_tiny.lm import build_lm
  from ssmax_tiny.model import SSMaxConfig
  from ssmax_tiny.text import TextTask
  from ssmax_tiny.train import TrainConfig, Trainer
  config = SSMaxConfig(embed_dim=128, hidden_size=128, num_heads=4, num_layers=4, dropout=0.1, positional="rope", window_size=length)
  trainer = Trainer(build_lm(config, 0), TextTask(), TrainConfig(steps=steps + 2, batch_size=4, train_length=length, warmup=1, checkpoint=checkpoint))
  trainer.train_step(); trainer.train_step()           # compile (and for the jit, capture)
  t0 = time.perf_counter()
  for _ in range(steps): trainer.train_step()
  return dict(device=Device.DEFAULT, length=length, checkpoint=checkpoint, s_per_step=round((time.perf_counter() - t0) / steps, 2),
              peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, loss=trainer.losses[-1])


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--lengths", default="512,1024,2048")
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--out", type=Path, default=Path(__file__).parent / "checkpointing")
  p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.one: print(json.dumps(one(int(a.one[0]), a.one[1] == "1", a.steps))); return
  rows = []
  for length in (int(x) for x in a.lengths.split(",")):
    for ck in (False, True):
      out = subprocess.run([sys.executable, __file__, "--one", str(length), str(int(ck)), "--steps", str(a.steps)], capture_output=True, text=True)
      if out.returncode: print(out.stderr[-2000:]); raise SystemExit(out.returncode)
      rows.append(json.loads(out.stdout.strip().splitlines()[-1])); print(json.dumps(rows[-1]), flush=True)
  a.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
  md = [f"Activation checkpointing on {rows[0]['device']} (`python bench/checkpointing.py`): byte-level LM, hidden 128, 4 layers, batch 4.", "",
        "| T | ordinary s/step | checkpointed s/step | time ratio | ordinary peak MiB | checkpointed peak MiB | memory ratio |",
        "|---|---|---|---|---|---|---|"]
  for plain, ck in zip(rows[::2], rows[1::2]):
    md.append(f"| {plain['length']} | {plain['s_per_step']} | {ck['s_per_step']} | {ck['s_per_step'] / plain['s_per_step']:.2f} | "
              f"{plain['peak_rss_mib']} | {ck['peak_rss_mib']} | {ck['peak_rss_mib'] / plain['peak_rss_mib']:.2f} |")
  a.out.with_suffix(".md").write_text("\n".join(md) + "\n")
  print("\n".join(md))


if __name__ == "__main__":
  main()
