"""`make demo`: SSMax against softmax when a model trained on short windows must retrieve from longer ones.

For each position setting and seed, a softmax model and an SSMax model are trained with the same seed (same initial
weights for every shared parameter, same batches) and budget at one window, then evaluated on the same held-out
sequences at each length. The table gives mean and spread (standard deviation over seeds); results.json has every run.
"""
from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path

from tinygrad.nn.state import get_state_dict
from tqdm.auto import tqdm

from ssmax_tiny.cli import _device, _fmt_s, _model_config, _plot_fading, _pyplot, _train_config, fading_curve
from ssmax_tiny.tasks import make_task
from ssmax_tiny.train import TrainConfig, Trainer, build_token_model, evaluate


def _ssmax_label(args) -> str:
  extras = [x for x, on in (("fixed s", args.fixed_s), ("+bias", args.learn_bias), ("per-head s", args.per_head),
                            ("n = T", args.seq_len_mode == "window")) if on]
  return "ssmax" + (f" ({', '.join(extras)})" if extras else "")


def _finetune(softmax_trainer: Trainer, args, seed: int, positional: str) -> Trainer:
  """The paper's switch (Section 4): a trained softmax model becomes an SSMax model and trains on. s starts at
  1/log(window), so at the training length's last row s log n = 1 and the model starts out computing what it did."""
  task = softmax_trainer.task
  config = _model_config(args, "ssmax", positional, init_s=1.0 / math.log(args.window))
  model = build_token_model(task, config, seed)
  ours, theirs = get_state_dict(model), get_state_dict(softmax_trainer.model)
  for name, t in ours.items():
    if name in theirs: t.assign(theirs[name]).realize()
  steps = args.finetune
  train = TrainConfig.from_dict({**_train_config(args, seed + 1000, steps).__dict__, "warmup": min(args.warmup, steps // 5)})
  trainer = Trainer(model, task, train, config)
  trainer.train(progress=not args.no_progress, desc="finetune")
  return trainer


def _summary(runs: list[dict], lengths: list[int]) -> list[dict]:
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


def _table(summary: list[dict], lengths: list[int]) -> str:
  head = "| positional | model | " + " | ".join(f"{L}" for L in lengths) + " | final loss |"
  lines = [head, "|" + "---|" * (len(lengths) + 3)]
  for row in summary:
    cells = [f"{row['mean'][str(L)]:.3f} ± {row['std'][str(L)]:.3f}" for L in lengths]
    lines.append(f"| {row['positional']} | {row['model']} | " + " | ".join(cells) + f" | {row['final_loss']:.3f} |")
  return "\n".join(lines)


def _verdicts(summary: list[dict], lengths: list[int], window: int) -> list[str]:
  """Where SSMax does and does not beat softmax, per position setting and length (by more than the spread)."""
  lines = []
  for positional in dict.fromkeys(r["positional"] for r in summary):
    base = next(r for r in summary if r["positional"] == positional and r["model"] == "softmax")
    for row in (r for r in summary if r["positional"] == positional and r["model"] != "softmax"):
      better, worse, tied = [], [], []
      for L in lengths:
        d = row["mean"][str(L)] - base["mean"][str(L)]
        noise = max(row["std"][str(L)], base["std"][str(L)], 1e-9)
        (better if d > noise else worse if d < -noise else tied).append(f"{L} ({d:+.3f})")
      lines.append(f"positional={positional}, {row['model']} vs softmax (trained at {window}): "
                   f"better at {', '.join(better) or 'no length'}; worse at {', '.join(worse) or 'no length'}; "
                   f"within the seed spread at {', '.join(tied) or 'no length'}.")
  return lines


def _plot_accuracy(summary: list[dict], lengths: list[int], window: int, path: Path, title: str) -> bool:
  if (plt := _pyplot()) is None: return False
  positionals = list(dict.fromkeys(r["positional"] for r in summary))
  fig, axes = plt.subplots(1, len(positionals), figsize=(5 * len(positionals), 3.8), squeeze=False, sharey=True)
  for ax, positional in zip(axes[0], positionals):
    for row in (r for r in summary if r["positional"] == positional):
      ax.errorbar(lengths, [row["mean"][str(L)] for L in lengths], yerr=[row["std"][str(L)] for L in lengths], marker="o", capsize=3,
                  label=row["model"])
    ax.axvline(window, color="grey", ls=":", lw=1)
    ax.set_xscale("log", base=2); ax.set_xticks(lengths); ax.set_xticklabels([str(L) for L in lengths])
    ax.set_ylim(-0.02, 1.02); ax.set_xlabel("evaluation length (trained at the dotted line)"); ax.set_title(f"positional = {positional}")
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel("retrieval accuracy (mean ± sd over seeds)")
  axes[0][-1].legend(loc="lower left")
  fig.suptitle(title, fontsize=10)
  fig.tight_layout(); fig.savefig(path, dpi=120); plt.close(fig)
  return True


def run_demo(args) -> int:
  t_start = time.perf_counter()
  seeds = args.seeds
  positionals = [p.strip() for p in args.positionals.split(",") if p.strip()]
  for p in positionals:
    if p not in ("none", "rope"): raise ValueError(f"--positionals entry {p!r} is not one of 'none', 'rope'")
  task = make_task(args.task)
  if min(args.lengths) < task.min_length: raise ValueError(f"--lengths {min(args.lengths)} is below the task's minimum {task.min_length}")
  label = _ssmax_label(args)
  models = [("softmax", "softmax"), ("ssmax", label)] + ([("finetune", f"softmax -> ssmax (+{args.finetune} steps)")] if args.finetune else [])
  print(f"device: {_device()}  task: {task.name} ({task.num_pairs} pair(s), vocab {task.vocab_size})  window: {args.window}  "
        f"steps: {args.steps}  seeds: {seeds}  lengths: {args.lengths}")
  runs = []
  bar = tqdm(total=len(positionals) * len(seeds) * len(models), desc="demo runs", disable=args.no_progress, dynamic_ncols=True)
  for positional in positionals:
    for seed in seeds:
      softmax_trainer = None
      for kind, name in models:
        bar.set_postfix_str(f"{positional} seed {seed} {name}")
        if kind == "finetune":
          trainer = _finetune(softmax_trainer, args, seed, positional)
        else:
          config = _model_config(args, kind, positional)
          trainer = Trainer(build_token_model(task, config, seed), task, _train_config(args, seed), config)
          trainer.train(progress=not args.no_progress, desc=f"{name} s{seed}")
          if kind == "softmax": softmax_trainer = trainer
        acc = evaluate(trainer.model, task, args.lengths, num_samples=args.samples)
        tail = trainer.losses[-20:]
        runs.append(dict(positional=positional, seed=seed, model=name, accuracy={str(k): v for k, v in acc.items()},
                         final_loss=sum(tail) / len(tail), learned_s=trainer.model.body.learned_s()))
        bar.update(1)
  bar.close()
  summary = _summary(runs, args.lengths)
  table = _table(summary, args.lengths)
  verdicts = _verdicts(summary, args.lengths, args.window)
  print(f"\nRetrieval accuracy ({task.name}, trained at window {args.window}, mean ± sd over seeds {seeds}, {args.samples} sequences per length)\n")
  print(table)
  print()
  for v in verdicts: print(v)
  for row in summary:
    if row["learned_s"]: print(f"learned s, positional={row['positional']}, {row['model']} (mean over seeds): {_fmt_s(row['learned_s'])}")

  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  curve = fading_curve(0.43, 10_000)
  results = dict(device=_device(), task=task.to_dict(), args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                 seeds=seeds, lengths=args.lengths, runs=runs, summary=summary, verdicts=verdicts, fading=curve,
                 seconds=round(time.perf_counter() - t_start, 1))
  (out / "results.json").write_text(json.dumps(results, indent=1))
  (out / "results.md").write_text(table + "\n\n" + "\n".join(f"- {v}" for v in verdicts) + "\n")
  (out / "fading.json").write_text(json.dumps(curve, indent=1))
  title = f"{task.name}: trained at {args.window} for {args.steps} steps, {len(seeds)} seeds"
  plotted = _plot_accuracy(summary, args.lengths, args.window, out / "accuracy.png", title) and _plot_fading(curve, out / "fading.png")
  print(f"\nwrote {out / 'results.json'}, {out / 'results.md'}" + (f", {out / 'accuracy.png'}, {out / 'fading.png'}" if plotted else
        " (no plots: pip install matplotlib, the extra 'plot')") + f" in {results['seconds']:.0f} s")
  return 0
