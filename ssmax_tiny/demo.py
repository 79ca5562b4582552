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

from ssmax_tiny import pocl, report
from ssmax_tiny.model import POSITIONALS, SSMaxConfig
from ssmax_tiny.pocl import tuning
from ssmax_tiny.sweep import run_grid, runner_name
from ssmax_tiny.tasks import make_task
from ssmax_tiny.train import TrainConfig, Trainer, build_token_model, evaluate, task_from_dict


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


def demo_cells(model: SSMaxConfig, train: TrainConfig, *, task: str = "needle", seeds=(0, 1, 2), lengths=(64, 128, 256, 512, 1024),
               samples: int = 96, positionals=("none", "rope"), finetune_steps: int = 0) -> list[dict]:
  """The grid: positional x seed x (softmax, SSMax[, softmax -> SSMax fine-tuned]), each cell described in full (sweep.py).
  `model` and `train` are templates: each cell replaces attention, positional and seed."""
  for p in positionals:
    if p not in POSITIONALS: raise ValueError(f"positionals entry {p!r} is not one of {', '.join(map(repr, POSITIONALS))}")
  the_task = make_task(task)
  if min(lengths) < the_task.min_length: raise ValueError(f"lengths {min(lengths)} is below the task's minimum {the_task.min_length}")
  attentions = ["softmax", "ssmax"] + (["finetune"] if finetune_steps else [])
  return [dict(kind="demo", model=replace(model, attention="softmax" if a == "finetune" else a, positional=p).to_dict(),
               train=asdict(replace(train, seed=seed)), task=the_task.to_dict(), lengths=[int(x) for x in lengths], samples=samples,
               finetune_steps=finetune_steps if a == "finetune" else 0)
          for p in positionals for seed in seeds for a in attentions]


def cell_signature(cell: dict) -> str:
  """The training step a cell runs, as tuning.py records it."""
  task = task_from_dict(cell["task"])
  return tuning.step_signature(SSMaxConfig.from_options(**cell["model"]), dict(kind="classifier", vocab_size=task.vocab_size,
                               num_classes=task.num_classes), TrainConfig.from_dict(cell["train"]), Device.DEFAULT)


def cell_trainer(cell: dict) -> Trainer:
  """A cell's model, freshly initialised from its seed, in its Trainer."""
  task, config, train = task_from_dict(cell["task"]), SSMaxConfig.from_options(**cell["model"]), TrainConfig.from_dict(cell["train"])
  return Trainer(build_token_model(task, config, train.seed), task, train)


def run_cell(cell: dict, progress: bool = False) -> tuple[list[dict], Trainer]:
  """One cell of the grid from its description (the experiment that sweep.run_sweep runs): train, fine-tune if asked (the cell trains
  its own softmax model first: a cell depends on nothing but its description), evaluate."""
  trainer = cell_trainer(cell)
  task, config, train = trainer.task, trainer.model.config, trainer.config
  name = ssmax_label(config) if config.attention == "ssmax" else config.attention
  trainer.train(progress=progress, desc=f"{name} s{train.seed}")
  if cell["finetune_steps"]:
    trainer = finetune(trainer, cell["finetune_steps"], train.seed, progress)
    name = f"softmax -> ssmax (+{cell['finetune_steps']} steps)"
  acc = evaluate(trainer.model, task, cell["lengths"], num_samples=cell["samples"])
  tail = trainer.losses[-20:]
  return [dict(positional=config.positional, seed=train.seed, model=name, accuracy={str(k): v for k, v in acc.items()},
               final_loss=sum(tail) / len(tail), learned_s=trainer.model.transformer.learned_s())], trainer


def run_demo(model: SSMaxConfig, train: TrainConfig, *, task: str = "needle", seeds=(0, 1, 2), lengths=(64, 128, 256, 512, 1024),
             samples: int = 96, positionals=("none", "rope"), finetune_steps: int = 0, out: Path = Path("runs/demo"),
             progress: bool = True, jobs: int = 1, ray: str | None = None, cpus: float = 1, gpus: float = 0, tune: int = 0) -> dict:
  """Build the grid, run its cells (sweep.run_sweep: in this process, `jobs` processes or Ray; finished cells in
  out/sweep.json are not run again), gather; print the table, verdicts and learned s; write results.json, results.md and
  plots. Returns the results, or {"failed": ...} when a cell failed (the others are kept for the next run). tune=N instead
  BEAM-searches the grid's training steps (tuning.tune_cells) and returns {"tuned": steps searched}."""
  t_start = time.perf_counter()
  seeds, lengths = list(seeds), list(lengths)
  cells = demo_cells(model, train, task=task, seeds=seeds, lengths=lengths, samples=samples, positionals=positionals,
                     finetune_steps=finetune_steps)
  the_task = make_task(task)
  print(f"device: {Device.DEFAULT}  task: {the_task.name} ({the_task.num_pairs} pair(s), vocab {the_task.vocab_size})  "
        f"train length: {train.train_length}  steps: {train.steps}  seeds: {seeds}  lengths: {lengths}  "
        f"cells: {len(cells)} in {runner_name(jobs, ray)}")
  if tune: return dict(tuned=tuning.tune_cells(cells, cell_signature, cell_trainer, tune, progress))
  print(pocl.note(signatures=[cell_signature(c) for c in cells]))
  runs, failed = run_grid(run_cell, cells, out, jobs=jobs, ray=ray, cpus=cpus, gpus=gpus, progress=progress)
  if failed: return dict(failed=failed)
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
