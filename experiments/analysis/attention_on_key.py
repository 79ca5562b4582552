"""The attention on the key, over more samples than `make lm` and `make passkey` spend on it (2 per length): a figure
rather than a picture, from the checkpoints a comparison wrote.

  python experiments/analysis/attention_on_key.py [--run runs/lm-passkey] [--samples 16] [--out runs/attention_on_key]

For each cell's checkpoint under RUN/cells (and each softmax model again with Qwen's log-n at inference, as the
comparison evaluates it): lm.weights_on_key, the largest weight (over layers and heads) that the position predicting
the answer's first digit puts on the key's first digit, at depth 0.5 of a held-out haystack, at L, 4L and 16L, as the
mean over SAMPLES pass keys, with its standard error over those samples. The samples are drawn as the comparison draws
its own (batch_rng, seed 40,000, one stream per length), in batches of 4 to bound memory. Writes OUT.json and OUT.md.
"""
import argparse
import json
import math
import statistics
from pathlib import Path

from ssmax_tiny.lm import positional_name, weights_on_key
from ssmax_tiny.model import with_options
from ssmax_tiny.sweep import checkpoints
from ssmax_tiny.train import load_token_model

CHUNK = 4  # pass keys per forward pass: 16 at 2048 positions would hold 2 GiB of attention weights


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--run", type=Path, default=Path("runs/lm-passkey"), help="a comparison's output folder (default runs/lm-passkey)")
  p.add_argument("--samples", type=int, default=16, help="pass keys per length (default 16)")
  p.add_argument("--out", type=Path, default=Path("runs") / "attention_on_key")
  a = p.parse_args()
  rows = []
  for path in checkpoints(a.run):
    model, task, meta = load_token_model(path)
    c, seed = model.config, meta["train"]["seed"]
    L = c.train_length
    variants = [(c.attention, model)] + ([("softmax + qwen_logn", with_options(model, attention="qwen_logn"))] if c.attention == "softmax" else [])
    for label, m in variants:
      row = dict(positional=positional_name(c), attention=label, seed=seed, lengths=[L, 4 * L, 16 * L], mean=[], sem=[])
      for length in row["lengths"]:
        w = weights_on_key(m, task, length, a.samples, chunk=CHUNK).tolist()
        row["mean"].append(statistics.mean(w)); row["sem"].append(statistics.stdev(w) / math.sqrt(len(w)))
      rows.append(row)
      print(json.dumps(row), flush=True)
  rows.sort(key=lambda r: (r["positional"], r["attention"], r["seed"]))
  L = rows[0]["lengths"][0]
  lines = [f"Largest weight on the key (depth 0.5), mean ± standard error over {a.samples} pass keys; `{a.run}`.", "",
           f"| positional | attention | seed | @{L} | @{4 * L} | @{16 * L} |", "|---|---|---|---|---|---|"]
  lines += [f"| {r['positional']} | {r['attention']} | {r['seed']} | " + " | ".join(f"{m:.2f} ± {s:.2f}" for m, s in zip(r["mean"], r["sem"])) + " |"
            for r in rows]
  a.out.with_suffix(".json").write_text(json.dumps(dict(run=str(a.run), samples=a.samples, rows=rows), indent=1))
  a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  try: main()
  except FileNotFoundError as e: raise SystemExit(f"error: {e}") from None  # no checkpoints under --run
