"""The language-model experiment: a byte-level next-token model trained on real text at length L, then measured as the
paper measures length generalization (arXiv:2501.19399 Section 4; arXiv:2505.17083 Section 5):

- `loss_by_position`: held-out next-token loss at every position up to 16L, averaged over windows, and `buckets` of it
  ([0, L/2), [L/2, L), [L, 2L), ..., [8L, 16L)); degradation = loss in [8L, 16L) over loss in [L/2, L).
- `passkey_grid`: a 5-digit pass key at a depth of a held-out haystack, asked for at the end; accuracy by (length, depth)
  with the digits read greedily, teacher-forced (all five right = what greedy decoding would print).
- `attention_on_key`: the weight the question's last position puts on the key's first digit, the most any head of any
  layer puts there, against length (why a model retrieves, or fails to: the paper's attention-fading analysis).

Training is train.Trainer's (AdamW, warmup and cosine, one TinyJit step); nothing here is inside the model.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from tinygrad import Device, Tensor
from tqdm.auto import tqdm

from ssmax_tiny import pocl
from ssmax_tiny.model import LanguageModel, SSMaxConfig, with_options
from ssmax_tiny.pocl import tuning
from ssmax_tiny.sweep import run_grid, runner_name
from ssmax_tiny.tasks import batch_rng
from ssmax_tiny.text import DIGITS, TextTask, passkey
from ssmax_tiny.train import TrainConfig, Trainer


def build_lm(config: SSMaxConfig, seed: int, tie_weights: bool = True) -> LanguageModel:
  Tensor.manual_seed(seed)
  return LanguageModel(config, 256, tie_weights)


def loss_by_position(model: LanguageModel, task: TextTask, length: int, windows: int, seed: int = 20_000,
                     batch_size: int = 8, progress: bool = False) -> np.ndarray:
  """Mean next-token loss (nats) at each position 0..length-1 over `windows` held-out windows of length + 1 bytes, drawn
  from `seed` alone (the same windows for every model)."""
  seq = task.heldout(batch_rng(seed, 0, stream=length), windows, length + 1)                # (windows, length + 1)
  total = np.zeros(length)
  for b in tqdm(range(0, windows, batch_size), desc=f"loss@{length}", disable=not progress, leave=False):
    chunk = seq[b:b + batch_size]
    total += model.token_losses(Tensor(chunk[:, :-1]), Tensor(chunk[:, 1:])).numpy().sum(0)
  return total / windows


def buckets(per_position: np.ndarray, L: int) -> dict[str, float]:
  """Mean loss over [0, L/2), [L/2, L), [L, 2L), [2L, 4L), ... as far as per_position reaches."""
  edges = [0, L // 2, L]
  while edges[-1] * 2 <= len(per_position): edges.append(edges[-1] * 2)
  return {f"[{a},{b})": float(per_position[a:b].mean()) for a, b in zip(edges, edges[1:])}


def degradation(per_position: np.ndarray, L: int) -> float:
  """Loss in the last doubling of the positions measured ([8L, 16L) at 16x) over loss in [L/2, L); 1.0: no degradation."""
  return float(per_position[len(per_position) // 2:].mean() / per_position[L // 2:L].mean())


def passkey_batch(task: TextTask, rng: np.random.Generator, count: int, length: int, depth: float) -> tuple[np.ndarray, int, int]:
  """count sequences of `length` bytes with a pass key at `depth`, the position of the key's first digit, and that of
  the answer's first digit (the same in every row)."""
  hay = task.heldout(rng, count, length)
  values = rng.integers(0, 10 ** DIGITS, size=count)
  rows = [passkey(h, v, depth) for h, v in zip(hay, values)]
  return np.stack([r[0] for r in rows]), rows[0][1], rows[0][2]


def passkey_grid(model: LanguageModel, task: TextTask, lengths: list[int], depths: list[float], samples: int,
                 seed: int = 30_000, batch_size: int = 8, progress: bool = False) -> np.ndarray:
  """Accuracy [len(lengths), len(depths)]: the share of samples whose 5 digits are all predicted (argmax, teacher-forced)."""
  acc = np.zeros((len(lengths), len(depths)))
  cells = [(i, j) for i in range(len(lengths)) for j in range(len(depths))]
  for i, j in tqdm(cells, desc="passkey", disable=not progress, leave=False):
    seq, _, first = passkey_batch(task, batch_rng(seed, j, stream=lengths[i]), samples, lengths[i] + 1, depths[j])
    right = 0
    for b in range(0, samples, batch_size):
      chunk = seq[b:b + batch_size]
      logits = model(Tensor(chunk[:, :-1]))[:, first - 1:first - 1 + DIGITS].numpy()     # (B, DIGITS, 256)
      right += int((logits.argmax(-1) == chunk[:, first:first + DIGITS]).all(-1).sum())
    acc[i, j] = right / samples
  return acc


def weights_on_key(model: LanguageModel, task: TextTask, length: int, samples: int, depth: float = 0.5, seed: int = 40_000,
                   chunk: int | None = None) -> np.ndarray:
  """For each of `samples` pass keys at `length`, the largest weight (over layers and heads) that the position predicting
  the answer's first digit puts on the key's first digit in the haystack; `chunk` pass keys per forward pass (default
  all: the weights of B x H x length^2 are held at once)."""
  seq, key_at, first = passkey_batch(task, batch_rng(seed, 0, stream=length), samples, length + 1, depth)
  out = []
  for i in range(0, samples, chunk or samples):
    weights: list[Tensor] = []
    model.transformer.hidden(model.embed(Tensor(seq[i:i + (chunk or samples), :first])), weights=weights)
    w = np.stack([x[:, :, first - 1, key_at].numpy() for x in weights])                # (layers, B, H)
    out.append(w.max(axis=(0, 2)))
  return np.concatenate(out)


def attention_on_key(model: LanguageModel, task: TextTask, lengths: list[int], samples: int, depth: float = 0.5,
                     seed: int = 40_000) -> list[float]:
  """For each length, the mean over samples of `weights_on_key`."""
  return [float(weights_on_key(model, task, length, samples, depth, seed).mean()) for length in lengths]



# ---------------------------------------------------------------------------------------------------------------------
# `make lm`: the comparison

LM_ATTENTIONS = ("softmax", "ssmax", "scale_invariant")   # trained; "softmax + qwen_logn" is evaluated from the softmax runs
LM_POSITIONALS = ("rope", "p-rope", "none")                # p-rope: partial RoPE, its fraction by partial_rope_fraction


def partial_rope_fraction(head_dim: int, train_length: int, base: float = 10000.0) -> float:
  """Partial RoPE's fraction by a rule fixed before any comparison: rotate exactly RoPE's frequencies that turn at least
  once within the training length (period 2 pi base^(2i/d) <= L, i = 0, 1, ...), so that every rotary angle a query
  meets beyond L was already met in training; the slower ones, whose angles at long distances were never seen, carry
  no position (Barbero et al., arXiv:2410.06205, drop the lowest frequencies; arXiv:2505.17083 at L = 4096, d = 64
  rotates half, all of period < L). d = 16, L = 128: 3 of 8 frequencies, 0.375. At least one frequency."""
  half = head_dim // 2
  turning = sum(2 * math.pi * base ** (2 * i / head_dim) <= train_length for i in range(half))
  return max(turning, 1) / half


def positional_name(config: SSMaxConfig) -> str:
  """The grid's name for a config's positions: none, rope, or "p-rope 0.375" (partial RoPE with its fraction)."""
  if config.positional != "rope": return config.positional
  return "rope" if config.rope_fraction == 1 else f"p-rope {config.rope_fraction:g}"


def lm_config(template: SSMaxConfig, attention: str, positional: str, train_length: int) -> SSMaxConfig:
  """One cell of the comparison. The rule, fixed before any comparison: SSMax starts at s = 1/log L (BiBo's choice, so
  that at the training length's last row s log n = 1 and it starts out as softmax there), one s per layer, learned.
  positional is one of LM_POSITIONALS; "p-rope" takes the template's rope_fraction when below 1, else the rule's."""
  init_s = 1.0 / math.log(train_length) if attention == "ssmax" else template.init_s
  fraction = 1.0
  if positional == "p-rope":
    fraction = template.rope_fraction if template.rope_fraction < 1 else \
        partial_rope_fraction(template.hidden_size // template.num_heads, train_length, template.rope_base)
  return replace(template, attention=attention, positional="none" if positional == "none" else "rope", rope_fraction=fraction,
                 init_s=init_s, train_length=train_length)


def evaluate_lm(model: LanguageModel, task: TextTask, L: int, *, factor: int = 16, windows: int = 16, samples: int = 8,
                depths=(0.1, 0.5, 0.9), progress: bool = False) -> dict:
  """Loss by position to factor * L, its buckets and degradation; pass key accuracy at L, 4L, ... factor * L (powers of
  4) by depth; the attention on the key at those lengths."""
  lengths = [L * 4 ** i for i in range(int(math.log(factor, 4)) + 1)]
  if lengths[-1] != factor * L: lengths.append(factor * L)
  per_pos = loss_by_position(model, task, factor * L, windows, progress=progress)
  grid = passkey_grid(model, task, lengths, list(depths), samples, progress=progress)
  return dict(per_position=per_pos.tolist(), buckets=buckets(per_pos, L), degradation=degradation(per_pos, L),
              passkey_lengths=lengths, passkey_depths=list(depths), passkey=grid.tolist(),
              passkey_by_length=grid.mean(1).tolist(), attention_on_key=attention_on_key(model, task, lengths, 2))


def lm_cells(model: SSMaxConfig, train: TrainConfig, *, task: TextTask, attentions=LM_ATTENTIONS, positionals=("rope", "none"),
             seeds=(0, 1, 2), factor: int = 16, windows: int = 8, samples: int = 8) -> list[dict]:
  """The grid: positional x attention x seed, each cell described in full (sweep.py); the same data order, initial weights
  (by seed) and budget in every cell."""
  L = train.train_length
  task.check_length(L)
  data = None if task.data is None else str(Path(task.data).absolute())  # a cell may run in another working directory
  return [dict(kind="lm", model=lm_config(model, a, p, L).to_dict(), train=asdict(replace(train, seed=seed)),
               task=replace(task, data=data).to_dict(), eval=dict(factor=factor, windows=windows, samples=samples))
          for p in positionals for a in attentions for seed in seeds]


def cell_signature(cell: dict) -> str:
  """The training step a cell runs, as tuning.py records it (what `make tune` searches for `make lm`)."""
  return tuning.step_signature(SSMaxConfig.from_options(**cell["model"]), dict(kind="lm", vocab_size=TextTask.vocab_size, tie_weights=True),
                               TrainConfig.from_dict(cell["train"]), Device.DEFAULT)


def cell_trainer(cell: dict) -> Trainer:
  """A cell's model, freshly initialised from its seed, in its Trainer."""
  task, config, train = TextTask(**cell["task"]), SSMaxConfig.from_options(**cell["model"]), TrainConfig.from_dict(cell["train"])
  return Trainer(build_lm(config, train.seed), task, train)


def run_cell(cell: dict, progress: bool = False) -> tuple[list[dict], Trainer]:
  """One cell from its description (the experiment that sweep.run_sweep runs): train, then evaluate the model, and a softmax model
  also with Qwen's log-n scaling at inference (the same weights)."""
  trainer = cell_trainer(cell)
  task, config, train = trainer.task, trainer.model.config, trainer.config
  t = time.perf_counter()
  trainer.train(progress=progress, desc=f"{positional_name(config)} {config.attention} seed {train.seed}")
  train_s = time.perf_counter() - t
  variants = [(config.attention, trainer.model)]
  if config.attention == "softmax": variants.append(("softmax + qwen_logn", with_options(trainer.model, attention="qwen_logn")))
  return [dict(positional=positional_name(config), attention=label, seed=train.seed, train_seconds=round(train_s, 1), final_loss=trainer.losses[-1],
               learned_s=m.transformer.learned_s(), **evaluate_lm(m, task, train.train_length, **cell["eval"])) for label, m in variants], trainer


def compare(model: SSMaxConfig, train: TrainConfig, *, task: TextTask, attentions=LM_ATTENTIONS, positionals=("rope", "none"),
            seeds=(0, 1, 2), factor: int = 16, windows: int = 8, samples: int = 8, out: Path = Path("runs/lm"),
            progress: bool = True, jobs: int = 1, ray: str | None = None, cpus: float = 1, gpus: float = 0, tune: int = 0) -> dict:
  """Build the grid, run its cells (sweep.run_sweep: in this process, `jobs` processes or Ray; finished cells in
  out/sweep.json are not run again), gather; write results.json, results.md and the plots. Returns the results, or
  {"failed": ...} when a cell failed (the others are kept for the next run). tune=N instead BEAM-searches the grid's
  training steps (tuning.tune_cells) so that later runs use the tuned kernels, and returns {"tuned": steps searched}."""
  from ssmax_tiny import report
  cells = lm_cells(model, train, task=task, attentions=attentions, positionals=positionals, seeds=seeds, factor=factor,
                   windows=windows, samples=samples)
  L, t0 = train.train_length, time.perf_counter()
  train_bytes, held_bytes = task.sizes()
  print(f"device: {Device.DEFAULT}  data: {task.source} ({train_bytes:,} bytes for training, {held_bytes:,} held out)  "
        f"L = {L}, evaluated to {factor * L}  cells: {len(cells)} in {runner_name(jobs, ray)}")
  if tune: return dict(tuned=tuning.tune_cells(cells, cell_signature, cell_trainer, tune, progress))
  print(pocl.note(signatures=[cell_signature(c) for c in cells]))
  runs, failed = run_grid(run_cell, cells, out, jobs=jobs, ray=ray, cpus=cpus, gpus=gpus, progress=progress)
  if failed: return dict(failed=failed)
  results = dict(device=Device.DEFAULT, data=task.source, train_length=L, factor=factor, windows=windows, samples=samples,
                 model=asdict(model), train=asdict(train), runs=runs, seconds=round(time.perf_counter() - t0, 1))
  out = Path(out)
  (out / "results.json").write_text(json.dumps(results))  # compact: the per-position losses are long lists
  md = report.lm_table(results)
  (out / "results.md").write_text(md)
  print(md)
  plots = report.plot_lm(results, out)
  print("plots: " + (", ".join(str(x) for x in plots) if plots else "skipped (pip install 'ssmax-tiny[plot]')"))
  return results
