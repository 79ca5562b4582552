"""Figures and tables for the experiments: the attention-fading curve, accuracy against length, the summary table and
its verdicts, learned s. Plots need matplotlib (the extra 'plot'); without it they are skipped and the caller says so."""
from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
from tinygrad import Tensor

from ssmax_tiny.model import compute


def pyplot():
  """matplotlib.pyplot drawing to files, or None when matplotlib (the extra 'plot') is not installed."""
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    return None
  return plt


def format_s(s_list: list[list[float]]) -> str:
  """Learned s per layer (one value, or one per head), e.g. 'L0: 1.061  L1: 1.150'."""
  return "  ".join(f"L{i}: " + ",".join(f"{v:.3f}" for v in layer) for i, layer in enumerate(s_list))


def fading_curve(s: float, max_n: int) -> dict:
  """The paper's Figure 1 setting: logits all -2 but the last, +3. Largest weight of softmax and SSMax against n."""
  ns = sorted({int(round(x)) for x in np.logspace(1, math.log10(max_n), 13)} | {10, max_n})
  rows = []
  for n in ns:
    z = np.full((1, n), -2.0, np.float32); z[0, -1] = 3.0
    rows.append(dict(n=n, softmax=float(Tensor(z).softmax(-1)[0, -1].item()), ssmax=float(compute(Tensor(z), s, n)[0, -1].item())))
  return dict(s=s, logits="-2 everywhere, +3 at one key", rows=rows)


def plot_fading(curve: dict, path: Path) -> bool:
  if (plt := pyplot()) is None: return False
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ns = [r["n"] for r in curve["rows"]]
  ax.plot(ns, [r["softmax"] for r in curve["rows"]], "o-", label="softmax")
  ax.plot(ns, [r["ssmax"] for r in curve["rows"]], "s-", label=f"SSMax, s = {curve['s']}")
  ax.set_xscale("log"); ax.set_ylim(0, 1.05); ax.set_xlabel("n (number of keys)"); ax.set_ylabel("largest attention weight")
  ax.set_title("Attention fading (arXiv:2501.19399 Fig. 1)"); ax.grid(alpha=0.3); ax.legend()
  fig.tight_layout(); fig.savefig(path, dpi=120); plt.close(fig)
  return True


def summarize(runs: list[dict], lengths: list[int]) -> list[dict]:
  """One row per (positional, model): mean and standard deviation over seeds of the accuracy at each length."""
  rows = {}
  for r in runs: rows.setdefault((r["positional"], r["model"]), []).append(r)
  out = []
  for (positional, model), rs in rows.items():
    acc = {L: [r["accuracy"][str(L)] for r in rs] for L in lengths}
    out.append(dict(positional=positional, model=model, seeds=[r["seed"] for r in rs],
                    mean={str(L): statistics.fmean(v) for L, v in acc.items()},
                    std={str(L): (statistics.stdev(v) if len(v) > 1 else 0.0) for L, v in acc.items()},
                    final_loss=statistics.fmean(r["final_loss"] for r in rs),
                    learned_s=[[statistics.fmean(r["learned_s"][i][j] for r in rs) for j in range(len(layer))]
                               for i, layer in enumerate(rs[0]["learned_s"])] if rs[0]["learned_s"] else []))
  return out


def table(summary: list[dict], lengths: list[int]) -> str:
  head = "| positional | model | " + " | ".join(f"{L}" for L in lengths) + " | final loss |"
  lines = [head, "|" + "---|" * (len(lengths) + 3)]
  for row in summary:
    cells = [f"{row['mean'][str(L)]:.3f} ± {row['std'][str(L)]:.3f}" for L in lengths]
    lines.append(f"| {row['positional']} | {row['model']} | " + " | ".join(cells) + f" | {row['final_loss']:.3f} |")
  return "\n".join(lines)


def verdicts(summary: list[dict], lengths: list[int], train_length: int) -> list[str]:
  """Where each model does and does not beat softmax, per position setting and length (by more than the seed spread)."""
  lines = []
  for positional in dict.fromkeys(r["positional"] for r in summary):
    base = next(r for r in summary if r["positional"] == positional and r["model"] == "softmax")
    for row in (r for r in summary if r["positional"] == positional and r["model"] != "softmax"):
      better, worse, tied = [], [], []
      for L in lengths:
        d = row["mean"][str(L)] - base["mean"][str(L)]
        noise = max(row["std"][str(L)], base["std"][str(L)], 1e-9)
        (better if d > noise else worse if d < -noise else tied).append(f"{L} ({d:+.3f})")
      lines.append(f"positional={positional}, {row['model']} vs softmax (trained at {train_length}): "
                   f"better at {', '.join(better) or 'no length'}; worse at {', '.join(worse) or 'no length'}; "
                   f"within the seed spread at {', '.join(tied) or 'no length'}.")
  return lines


def plot_accuracy(summary: list[dict], lengths: list[int], train_length: int, path: Path, title: str) -> bool:
  if (plt := pyplot()) is None: return False
  positionals = list(dict.fromkeys(r["positional"] for r in summary))
  fig, axes = plt.subplots(1, len(positionals), figsize=(5 * len(positionals), 3.8), squeeze=False, sharey=True)
  for ax, positional in zip(axes[0], positionals):
    for row in (r for r in summary if r["positional"] == positional):
      ax.errorbar(lengths, [row["mean"][str(L)] for L in lengths], yerr=[row["std"][str(L)] for L in lengths], marker="o", capsize=3,
                  label=row["model"])
    ax.axvline(train_length, color="grey", ls=":", lw=1)
    ax.set_xscale("log", base=2); ax.set_xticks(lengths); ax.set_xticklabels([str(L) for L in lengths])
    ax.set_ylim(-0.02, 1.02); ax.set_xlabel("evaluation length (trained at the dotted line)"); ax.set_title(f"positional = {positional}")
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel("retrieval accuracy (mean ± sd over seeds)")
  axes[0][-1].legend(loc="lower left")
  fig.suptitle(title, fontsize=10)
  fig.tight_layout(); fig.savefig(path, dpi=120); plt.close(fig)
  return True


# ---- the language-model comparison (ssmax_tiny/lm.py)
def _mean_sd(values: list[float]) -> tuple[float, float]:
  return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def lm_groups(results: dict) -> dict[tuple[str, str], list[dict]]:
  groups: dict = {}
  for r in results["runs"]: groups.setdefault((r["positional"], r["attention"]), []).append(r)
  return groups


def lm_table(results: dict) -> str:
  """Mean ± sd over seeds per (positional, attention): loss at [L/2, L) and [8L, 16L), their ratio, pass key accuracy at
  L and at factor * L (mean over depths), the weight on the key at those lengths, learned s."""
  L, F = results["train_length"], results["factor"]
  near, far = f"[{L // 2},{L})", f"[{F * L // 2},{F * L})"
  head = (f"| positional | attention | seeds | loss {near} | loss {far} | degradation | pass key @{L} | pass key @{F * L} | "
          f"weight on key @{L} | @{F * L} | learned s |")
  lines = [f"Byte-level LM on {results['data']}, trained at L = {L}; loss in nats/byte on held-out text "
           f"({results['windows']} windows), pass key over {results['samples']} samples x {len(results['runs'][0]['passkey_depths'])} depths. "
           "Mean ± sd over seeds.", "", head, "|" + "---|" * 11]
  fmt = lambda v: f"{v[0]:.3f} ± {v[1]:.3f}"
  for (p, a), rs in lm_groups(results).items():
    s = [statistics.fmean(layer) for layer in rs[0]["learned_s"]] if rs[0]["learned_s"] else []
    s_all = ", ".join(f"{statistics.fmean(statistics.fmean(r['learned_s'][i]) for r in rs):.2f}" for i in range(len(s))) or "-"
    lines.append(f"| {p} | {a} | {len(rs)} | {fmt(_mean_sd([r['buckets'][near] for r in rs]))} | "
                 f"{fmt(_mean_sd([r['buckets'][far] for r in rs]))} | {fmt(_mean_sd([r['degradation'] for r in rs]))} | "
                 f"{fmt(_mean_sd([r['passkey_by_length'][0] for r in rs]))} | {fmt(_mean_sd([r['passkey_by_length'][-1] for r in rs]))} | "
                 f"{fmt(_mean_sd([r['attention_on_key'][0] for r in rs]))} | {fmt(_mean_sd([r['attention_on_key'][-1] for r in rs]))} | {s_all} |")
  return "\n".join(lines) + "\n" + "\n" + lm_passkey_table(results)


def lm_passkey_table(results: dict) -> str:
  """Pass key accuracy at every evaluated length (mean over depths), each seed apart: with two or three seeds a mean ± sd
  hides whether one seed retrieves and the other does not."""
  lengths = results["runs"][0]["passkey_lengths"]
  lines = ["Pass key accuracy by length, each seed (" + ", ".join(str(r["seed"]) for r in next(iter(lm_groups(results).values()))) + "):", "",
           "| positional | attention | " + " | ".join(f"@{n}" for n in lengths) + " |", "|" + "---|" * (2 + len(lengths))]
  for (p, a), rs in lm_groups(results).items():
    lines.append(f"| {p} | {a} | " + " | ".join(" / ".join(f"{r['passkey_by_length'][i]:.2f}" for r in rs) for i in range(len(lengths))) + " |")
  return "\n".join(lines) + "\n"


def plot_lm(results: dict, out: Path) -> list[Path]:
  """loss_by_position.png (log-spaced bins, mean over seeds), passkey.png (a heatmap per model: length x depth),
  attention_on_key.png (weight on the key against length), learned_s.png (s per layer and head of the models that learn
  it, each seed; the dotted line is make lm's initial s, 1/log L)."""
  if (plt := pyplot()) is None: return []
  L, groups = results["train_length"], lm_groups(results)
  positionals = list(dict.fromkeys(p for p, _ in groups))
  paths = []
  fig, axes = plt.subplots(1, len(positionals), figsize=(5.5 * len(positionals), 3.8), squeeze=False, sharey=True)
  for ax, p in zip(axes[0], positionals):
    for (pp, a), rs in groups.items():
      if pp != p: continue
      per = np.mean([r["per_position"] for r in rs], axis=0)
      edges = np.unique(np.geomspace(1, len(per), 40).astype(int))
      ax.plot(edges[:-1], [per[a0:b0].mean() for a0, b0 in zip(edges, edges[1:])], label=a)
    ax.axvline(L, color="grey", ls=":", lw=1)
    ax.set_xscale("log"); ax.set_xlabel("position (trained at the dotted line)"); ax.set_title(f"positional = {p}"); ax.grid(alpha=0.3)
  axes[0][0].set_ylabel("held-out loss (nats/byte)"); axes[0][-1].legend(fontsize=8)
  fig.tight_layout(); fig.savefig(out / "loss_by_position.png", dpi=120); plt.close(fig); paths.append(out / "loss_by_position.png")
  fig, axes = plt.subplots(len(positionals), len(groups) // len(positionals), figsize=(3.2 * len(groups) // len(positionals), 2.8 * len(positionals)),
                           squeeze=False)
  for i, p in enumerate(positionals):
    for ax, ((_, a), rs) in zip(axes[i], [(k, v) for k, v in groups.items() if k[0] == p]):
      grid = np.mean([r["passkey"] for r in rs], axis=0)
      ax.imshow(grid.T, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower")
      ax.set_xticks(range(len(rs[0]["passkey_lengths"]))); ax.set_xticklabels(rs[0]["passkey_lengths"], fontsize=7)
      ax.set_yticks(range(len(rs[0]["passkey_depths"]))); ax.set_yticklabels(rs[0]["passkey_depths"], fontsize=7)
      for (x, y), v in np.ndenumerate(grid): ax.text(x, y, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w")
      ax.set_title(f"{p}: {a}", fontsize=8); ax.set_xlabel("length", fontsize=7); ax.set_ylabel("depth", fontsize=7)
  fig.tight_layout(); fig.savefig(out / "passkey.png", dpi=120); plt.close(fig); paths.append(out / "passkey.png")
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  for (p, a), rs in groups.items():
    ax.plot(rs[0]["passkey_lengths"], np.mean([r["attention_on_key"] for r in rs], axis=0), marker="o", label=f"{p}: {a}")
  ax.set_xscale("log", base=2); ax.set_xlabel("context length"); ax.set_ylabel("largest weight on the key (mean)")
  ax.grid(alpha=0.3); ax.legend(fontsize=7)
  fig.tight_layout(); fig.savefig(out / "attention_on_key.png", dpi=120); plt.close(fig); paths.append(out / "attention_on_key.png")
  learned = [(k, rs) for k, rs in groups.items() if rs[0]["learned_s"]]
  if learned:  # learned_s.png: s per layer (and head, with --per-head), a bar for the mean over seeds, a dot for each seed
    fig, axes = plt.subplots(1, len(learned), figsize=(4 * len(learned), 3.2), squeeze=False, sharey=True)
    for ax, ((p, a), rs) in zip(axes[0], learned):
      s = np.array([r["learned_s"] for r in rs])                               # (seeds, layers, heads)
      labels = [f"L{i}" + (f"h{j}" if s.shape[2] > 1 else "") for i in range(s.shape[1]) for j in range(s.shape[2])]
      x, flat = np.arange(len(labels)), s.reshape(len(rs), -1)
      ax.bar(x, flat.mean(0), color="tab:orange", alpha=0.6)
      for seed_values in flat: ax.plot(x, seed_values, "k.", ms=4)
      ax.axhline(1 / np.log(L), color="grey", ls=":", lw=1, label="1/log L (initial)")
      ax.set_xticks(x); ax.set_xticklabels(labels, fontsize=7); ax.set_title(f"{p}: {a}", fontsize=8); ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel("learned s"); axes[0][0].legend(fontsize=7)
    fig.tight_layout(); fig.savefig(out / "learned_s.png", dpi=120); plt.close(fig); paths.append(out / "learned_s.png")
  return paths
