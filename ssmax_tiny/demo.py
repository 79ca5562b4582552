"""`make demo`: SSMax against softmax when a model trained on short sequences must retrieve from longer ones.

For each position setting and seed, a softmax model and an SSMax model are trained with the same seed (same initial
weights for every shared parameter, same batches) and budget at one training length, then evaluated on the same
held-out sequences at each length. The table gives mean and spread (standard deviation over seeds); results.json has
every run. The models are variants of one SSMaxConfig and one TrainConfig (dataclasses.replace), as the command line
builds them.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

from tinygrad import Device
from tinygrad.nn.state import get_state_dict
from tqdm.auto import tqdm

from ssmax_tiny import report
from ssmax_tiny.model import POSITIONALS, SSMaxConfig
from ssmax_tiny.tasks import make_task
from ssmax_tiny.train import TrainConfig, Trainer, build_token_model, evaluate


def ssmax_label(model: SSMaxConfig) -> str:
  extras = [x for x, on in (("fixed s", not model.learn_s), ("+bias", model.learn_bias), ("per-head s", model.per_head),
                            ("n = T", model.n_mode == "sequence")) if on]
  return "ssmax" + (f" ({', '.join(extras)})" if extras else "")


def finetune(softmax_trainer: Trainer, steps: int, seed: int, progress: bool) -> Trainer:
  """The paper's switch (Section 4): a trained softmax model becomes an SSMax model and trains on. s starts at
  1/log(train_length), so at the training length's last row s log n = 1 and the model starts out computing what it did."""
  task, train = softmax_trainer.task, softmax_trainer.config
  config = replace(softmax_trainer.model.config, attention="ssmax", init_s=1.0 / math.log(train.train_length))
  model = build_token_model(task, config, seed)
  ours, theirs = get_state_dict(model), get_state_dict(softmax_trainer.model)
  for name, t in ours.items():
    if name in theirs: t.assign(theirs[name]).realize()
  trainer = Trainer(model, task, replace(train, steps=steps, seed=seed + 1000, warmup=min(train.warmup, steps // 5)))
  trainer.train(progress=progress, desc="finetune")
  return trainer


def run_demo(model: SSMaxConfig, train: TrainConfig, *, task: str = "needle", seeds=(0, 1, 2), lengths=(64, 128, 256, 512, 1024),
             samples: int = 96, positionals=("none", "rope"), finetune_steps: int = 0, out: Path = Path("runs/demo"),
             progress: bool = True) -> dict:
  """Train and evaluate the grid; print the table, verdicts and learned s; write results.json, results.md and plots.
  `model` and `train` are templates: each run replaces attention, positional and seed."""
  t_start = time.perf_counter()
  seeds, lengths = list(seeds), list(lengths)
  for p in positionals:
    if p not in POSITIONALS: raise ValueError(f"positionals entry {p!r} is not one of {', '.join(map(repr, POSITIONALS))}")
  the_task = make_task(task)
  if min(lengths) < the_task.min_length: raise ValueError(f"lengths {min(lengths)} is below the task's minimum {the_task.min_length}")
  label = ssmax_label(model)
  models = [("softmax", "softmax"), ("ssmax", label)] + ([("finetune", f"softmax -> ssmax (+{finetune_steps} steps)")] if finetune_steps else [])
  print(f"device: {Device.DEFAULT}  task: {the_task.name} ({the_task.num_pairs} pair(s), vocab {the_task.vocab_size})  "
        f"train length: {train.train_length}  steps: {train.steps}  seeds: {seeds}  lengths: {lengths}")
  runs = []
  bar = tqdm(total=len(positionals) * len(seeds) * len(models), desc="demo runs", disable=not progress, dynamic_ncols=True)
  for positional in positionals:
    for seed in seeds:
      softmax_trainer = None
      for attention, name in models:
        bar.set_postfix_str(f"{positional} seed {seed} {name}")
        if attention == "finetune":
          trainer = finetune(softmax_trainer, finetune_steps, seed, progress)
        else:
          config = replace(model, attention=attention, positional=positional)
          trainer = Trainer(build_token_model(the_task, config, seed), the_task, replace(train, seed=seed))
          trainer.train(progress=progress, desc=f"{name} s{seed}")
          if attention == "softmax": softmax_trainer = trainer
        acc = evaluate(trainer.model, the_task, lengths, num_samples=samples)
        tail = trainer.losses[-20:]
        runs.append(dict(positional=positional, seed=seed, model=name, accuracy={str(k): v for k, v in acc.items()},
                         final_loss=sum(tail) / len(tail), learned_s=trainer.model.transformer.learned_s()))
        bar.update(1)
  bar.close()
  summary = report.summarize(runs, lengths)
  table = report.table(summary, lengths)
  verdicts = report.verdicts(summary, lengths, train.train_length)
  print(f"\nRetrieval accuracy ({the_task.name}, trained at length {train.train_length}, mean ± sd over seeds {seeds}, "
        f"{samples} sequences per length)\n")
  print(table)
  print()
  for v in verdicts: print(v)
  for row in summary:
    if row["learned_s"]: print(f"learned s, positional={row['positional']}, {row['model']} (mean over seeds): {report.format_s(row['learned_s'])}")

  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  curve = report.fading_curve(0.43, 10_000)
  results = dict(device=Device.DEFAULT, task=the_task.to_dict(), model=asdict(model), train=asdict(train), samples=samples,
                 positionals=list(positionals), finetune_steps=finetune_steps, seeds=seeds, lengths=lengths, runs=runs,
                 summary=summary, verdicts=verdicts, fading=curve, seconds=round(time.perf_counter() - t_start, 1))
  (out / "results.json").write_text(json.dumps(results, indent=1))
  (out / "results.md").write_text(table + "\n\n" + "\n".join(f"- {v}" for v in verdicts) + "\n")
  (out / "fading.json").write_text(json.dumps(curve, indent=1))
  title = f"{the_task.name}: trained at {train.train_length} for {train.steps} steps, {len(seeds)} seeds"
  plotted = report.plot_accuracy(summary, lengths, train.train_length, out / "accuracy.png", title) and \
    report.plot_fading(curve, out / "fading.png")
  print(f"\nwrote {out / 'results.json'}, {out / 'results.md'}" + (f", {out / 'accuracy.png'}, {out / 'fading.png'}" if plotted else
        " (no plots: pip install matplotlib, the extra 'plot')") + f" in {results['seconds']:.0f} s")
  return results
