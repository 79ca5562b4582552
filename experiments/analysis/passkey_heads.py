"""Where a pass key model's heads look, inside the training length and beyond it: why retrieval stops past L.

  python experiments/analysis/passkey_heads.py [--run runs/lm-passkey] [--samples 4] [--out runs/passkey_heads]

For each cell's checkpoint under RUN/cells: pass key sequences of length L and 4L (depth 0.9: the key 90 positions back
at 4L, a distance seen in training) through the model, and for every head of every layer:
- its weight on the key's first digit from the position that predicts the answer's first digit (the retrieval);
- the distance back of that position's largest weight, as the most common value over the samples (a head that reads
  "two bytes back" at L should still read two back at 4L);
- its mean weight on the previous byte, over query rows [L/2, L) and over the last L/2 rows: the previous-token heads that
  an induction circuit needs (the key's digits are found by what precedes them).
Writes OUT.json and OUT.md.
"""
import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
from tinygrad import Tensor

from ssmax_tiny.lm import passkey_batch, positional_name
from ssmax_tiny.sweep import checkpoints
from ssmax_tiny.tasks import batch_rng
from ssmax_tiny.train import load_token_model


def heads(model, task, length: int, samples: int, depth: float = 0.9) -> list[dict]:
  seq, key_at, first = passkey_batch(task, batch_rng(40_000, 0, stream=length), samples, length + 1, depth)
  weights: list[Tensor] = []
  model.transformer.hidden(model.embed(Tensor(seq[:, :first])), weights=weights)
  L, T, out = model.config.train_length, first, []
  for layer, w in enumerate(x.numpy() for x in weights):                        # (B, H, T, T)
    rows = np.arange(1, T)
    prev = w[:, :, rows, rows - 1]                                               # (B, H, T-1): weight on the byte before
    for h in range(w.shape[1]):
      q = w[:, h, first - 1]                                                     # (B, T): the answer query's weights
      back = Counter((first - 1 - q.argmax(-1)).tolist()).most_common(1)[0][0]
      out.append(dict(length=length, layer=layer, head=h, on_key=float(q[:, key_at].mean()), argmax_back=int(back),
                      prev_inside=float(prev[:, h, L // 2 - 1:L - 1].mean()), prev_last=float(prev[:, h, -(L // 2):].mean())))
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--run", type=Path, default=Path("runs/lm-passkey"), help="a comparison's output folder (default runs/lm-passkey: make passkey)")
  p.add_argument("--samples", type=int, default=4, help="pass keys per length (default 4)")
  p.add_argument("--out", type=Path, default=Path("runs") / "passkey_heads")
  a = p.parse_args()
  rows = []
  for path in checkpoints(a.run):
    model, task, meta = load_token_model(path)
    c = model.config
    label = dict(positional=positional_name(c), attention=c.attention, seed=meta["train"]["seed"])
    for length in (c.train_length, 4 * c.train_length):
      rows += [dict(label, **r) for r in heads(model, task, length, a.samples)]
    print(f"{label}: done", flush=True)
  rows.sort(key=lambda r: (r["positional"], r["attention"], r["seed"], r["layer"], r["head"], r["length"]))
  lines = [f"Each head's look from the answer position (depth 0.9), and its weight on the previous byte; "
           f"{a.samples} pass keys per length; `{a.run}`.", "",
           "| positional | attention | seed | head | length | weight on key | largest weight, distance back | "
           "on previous byte, rows [L/2, L) | last L/2 rows |", "|---|---|---|---|---|---|---|---|---|"]
  lines += [f"| {r['positional']} | {r['attention']} | {r['seed']} | L{r['layer']}h{r['head']} | {r['length']} | {r['on_key']:.2f} | "
            f"{r['argmax_back']} | {r['prev_inside']:.2f} | {r['prev_last']:.2f} |" for r in rows]
  a.out.with_suffix(".json").write_text(json.dumps(dict(run=str(a.run), samples=a.samples, rows=rows), indent=1))
  a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  try: main()
  except FileNotFoundError as e: raise SystemExit(f"error: {e}") from None  # no checkpoints under --run
