"""`make passkey`'s RoPE models evaluated again with RoPE changed at evaluation only (the same weights, `with_options`):
is it the unseen rotary distances that stop retrieval beyond the training length?

- rope_base raised by the NTK-aware rule (base x factor^(d / (d - 2)) for head size d, factor = the length over L: the
  lowest frequency then spans the longer context as it spanned L in training; bloc97 2023, as in YaRN, arXiv:2309.00071);
- compressed positions (position interpolation, arXiv:2306.15595) are not an option of the model, and not run.

  python experiments/analysis/passkey_rope.py [--run runs/lm-passkey] [--samples 16] [--out runs/passkey_rope]

Reads the cells' checkpoints that `make passkey` wrote; pass key accuracy at L (as trained: the check that the harness
reads the models right), 4L and 16L, depths 0.1 / 0.5 / 0.9, with the base as trained and raised for each length.
Writes OUT.json and OUT.md.
"""
import argparse
import json
from pathlib import Path

from ssmax_tiny.lm import passkey_grid
from ssmax_tiny.model import with_options
from ssmax_tiny.sweep import checkpoints
from ssmax_tiny.train import load_token_model


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--run", type=Path, default=Path("runs/lm-passkey"), help="make passkey's output folder (default runs/lm-passkey)")
  p.add_argument("--samples", type=int, default=16, help="samples per length and depth (default 16, as make passkey)")
  p.add_argument("--out", type=Path, default=Path("runs") / "passkey_rope")
  a = p.parse_args()
  rows = []
  for path in checkpoints(a.run):
    model, task, meta = load_token_model(path)
    c = model.config
    if c.positional != "rope" or c.rope_fraction != 1: continue  # full RoPE only: partial RoPE's slow dimensions do not rotate
    L, d = c.train_length, c.hidden_size // c.num_heads
    for factor in (1, 4, 16):
      for label, base in (("as trained", c.rope_base), ("NTK-aware", c.rope_base * factor ** (d / (d - 2))))[:1 if factor == 1 else 2]:
        m = model if base == c.rope_base else with_options(model, rope_base=base)
        acc = passkey_grid(m, task, [factor * L], [0.1, 0.5, 0.9], a.samples)[0]
        rows.append(dict(attention=c.attention, seed=meta["train"]["seed"],
                         length=factor * L, rope=label, base=round(base), by_depth=acc.tolist(), accuracy=float(acc.mean())))
        print(rows[-1], flush=True)
  lines = ["| attention | seed | length | RoPE base | depth 0.1 | 0.5 | 0.9 | mean |", "|---|---|---|---|---|---|---|---|"]
  lines += [f"| {r['attention']} | {r['seed']} | {r['length']} | {r['base']:,} ({r['rope']}) | " + " | ".join(f"{x:.2f}" for x in r["by_depth"])
            + f" | {r['accuracy']:.2f} |" for r in sorted(rows, key=lambda r: (r["attention"], str(r["seed"]), r["length"], r["base"]))]
  a.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
  a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  try: main()
  except FileNotFoundError as e: raise SystemExit(f"error: {e}") from None  # no checkpoints under --run
