"""Command line: python -m ssmax_tiny {run, train, eval, demo, lm, lm-compare, fading} (also installed as `ssmax-tiny`).

The top of the package: it imports the library, nothing imports it. tinygrad picks its device from the environment:
DEV=CPU, DEV=CL, DEV=CUDA, ...; every command prints the one it used. SSMAX_TINY_POCL=1 installs the OpenCL-on-CPU kit
(ssmax_tiny/pocl) where the device is OpenCL on a CPU. `run FILE.toml` runs an experiment file (experiments/).
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

try:
  import tomllib
except ModuleNotFoundError:   # Python 3.10
  import tomli as tomllib

import numpy as np
from tinygrad import Device

from ssmax_tiny import checkpoint, pocl, report
from ssmax_tiny.demo import demo_cells, run_demo
from ssmax_tiny.lm import LM_ATTENTIONS, LM_POSITIONALS, build_lm, compare, evaluate_lm, lm_cells
from ssmax_tiny.model import ATTENTIONS, DTYPES, N_MODES, POSITIONALS, SSMaxConfig
from ssmax_tiny.pocl import tuning
from ssmax_tiny.tasks import TASKS, make_task
from ssmax_tiny.text import TextTask
from ssmax_tiny.train import TrainConfig, Trainer, build_token_model, evaluate, load_token_model, load_trainer, save_checkpoint

DEMO_LENGTHS = (64, 128, 256, 512, 1024)
TRAIN_DEFAULTS = TrainConfig()   # the one source of the training defaults
LM_TRAIN = TrainConfig(steps=200, batch_size=16, train_length=128, lr=3e-3, warmup=20)  # `make lm`'s budget (README)


def _int_list(text: str, minimum: int = 1) -> list[int]:
  try:
    values = [int(x) for x in text.split(",") if x.strip()]
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 64,128,256") from None
  if not values or any(v < minimum for v in values):
    raise argparse.ArgumentTypeError(f"{text!r}: every value must be an integer >= {minimum}")
  return values


def _seed_list(text: str) -> list[int]: return _int_list(text, minimum=0)


def _name_list(accepted: tuple[str, ...]):
  def parse(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in names if x not in accepted]
    if not names or bad:
      raise argparse.ArgumentTypeError(f"{text!r}: {f'entry {bad[0]!r}' if bad else 'no entry'} is not one of {', '.join(accepted)}")
    return names
  return parse


def _int_at_least(minimum: int):
  def parse(text: str) -> int:
    try:
      v = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < minimum: raise argparse.ArgumentTypeError(f"{v} must be >= {minimum}")
    return v
  return parse


_positive_int, _nonneg_int = _int_at_least(1), _int_at_least(0)


def _nonneg_number(text: str) -> float:
  try:
    v = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
  if not v >= 0 or v == float("inf"): raise argparse.ArgumentTypeError(f"{text} must be a finite number >= 0")
  return v


def _model_args(p: argparse.ArgumentParser, positional: bool = True, hidden: int = 32, lm: bool = False, grid: bool = False) -> None:
  g = p.add_argument_group("model (Edifice's build options, then ours)")
  g.add_argument("--hidden", type=_positive_int, default=hidden, help=f"hidden_size, also the token embedding width (default {hidden})")
  g.add_argument("--heads", type=_positive_int, default=4, help="num_heads (default 4)")
  g.add_argument("--layers", type=_positive_int, default=2, help="num_layers (default 2)")
  g.add_argument("--dropout", type=float, default=0.0, help="dropout (default 0.0: synthetic data does not overfit)")
  if positional:
    g.add_argument("--positional", choices=POSITIONALS, default="none", help="position information (default none, as Edifice)")
  g.add_argument("--n-mode", choices=N_MODES, default="row",
                 help="n, the keys a query sees: per causal row (row: i+1, the paper) or one n = T for all rows (sequence: Edifice)")
  g.add_argument("--per-head", action="store_true", help="one s per head instead of one per layer")
  g.add_argument("--learn-bias", action="store_true", help="learn a bias b: softmax((s log n + b) z) (paper Section 3)")
  g.add_argument("--fixed-s", action="store_true", help="keep s fixed at --init-s instead of learning it")
  g.add_argument("--init-s", type=float, default=1.0, help="initial s (default 1.0, as Edifice)")
  g.add_argument("--dtype", choices=DTYPES, default="float32",
                 help="projections and activations in this dtype; weights, optimizer state, LayerNorm, softmax and loss stay float32 "
                      "(default float32; float16 is refused for training: it needs loss scaling)")
  if lm:
    g.add_argument("--rope-fraction", type=float, default=1.0,
                   help="p-rope cells: the fraction of each head that rotates (default: RoPE's frequencies that turn within the "
                        "training length, lm.partial_rope_fraction)" if grid else "partial RoPE: the fraction of each head that rotates (default 1)")
    g.add_argument("--rope-base", type=float, default=10000.0, help="RoPE's base (default 10000)")
    g.add_argument("--qk-norm", action="store_true", help="RMSNorm on each head's q and k before RoPE and scaling")


def _train_args(p: argparse.ArgumentParser, steps: int, d: TrainConfig = TRAIN_DEFAULTS, text: bool = False) -> None:
  g = p.add_argument_group("training (AdamW, the paper's recipe)")
  if text:
    g.add_argument("--data", default=None, help="text to train on: a file, a folder or a glob (default: Python's own documentation, "
                   "pydoc_data.topics); the last 10%% of each file is held out")
    g.add_argument("--passkey-rate", type=float, default=0.25, help="share of each batch that carries a pass key (default 0.25)")
    g.add_argument("--answer-weight", type=float, default=0.0,
                   help="extra loss weight on the pass key's answer digits (default 0: plain next-byte loss; README: retrieval)")
  else: g.add_argument("--task", choices=TASKS, default="needle", help="retrieval task (default needle)")
  g.add_argument("--steps", type=_positive_int, default=steps, help=f"training steps (default {steps})")
  g.add_argument("--batch-size", type=_positive_int, default=d.batch_size, help=f"sequences per step (default {d.batch_size})")
  g.add_argument("--train-length", type=_positive_int, default=d.train_length, help=f"training sequence length (default {d.train_length})")
  g.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr:g})")
  g.add_argument("--warmup", type=_nonneg_int, default=d.warmup, help=f"linear warmup steps (default {d.warmup})")
  g.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"AdamW weight decay on rank >= 2 weights (default {d.weight_decay:g})")
  g.add_argument("--clip", type=float, default=d.clip, help=f"global gradient-norm clip (default {d.clip:g})")


def _runner_args(p: argparse.ArgumentParser) -> None:
  g = p.add_argument_group("running the grid (ssmax_tiny/sweep.py; every runner gives the same numbers)")
  g.add_argument("--jobs", type=_positive_int, default=1, help="run N cells at a time, each in a process of its own (default 1: "
                 "one after another in this process)")
  g.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                 help="run each cell as a Ray task: --ray alone starts a local Ray instance, --ray auto joins the running cluster, "
                      "--ray ADDRESS joins that one (pip install 'ssmax-tiny[ray]')")
  g.add_argument("--cpus-per-cell", type=_nonneg_number, default=1, help="CPUs a Ray task asks for (default 1)")
  g.add_argument("--gpus-per-cell", type=_nonneg_number, default=0, help="GPUs a Ray task asks for (default 0; 1 on a GPU cluster)")
  g.add_argument("--tune-kernels", type=_positive_int, nargs="?", const=1, default=0, metavar="BEAM",
                 help="instead of running the grid, BEAM-search the kernels of its training steps once (width BEAM, default 1; "
                      "cached by tinygrad, minutes per step on a CPU); later runs of the same grid use them (`make tune` does this)")


def _runner(args) -> dict:
  return dict(jobs=args.jobs, ray=args.ray, cpus=args.cpus_per_cell, gpus=args.gpus_per_cell, tune=args.tune_kernels)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="ssmax-tiny", description="Scalable-Softmax (SSMax) attention in tinygrad: train, evaluate, compare.")
  sub = parser.add_subparsers(dest="command", required=True, metavar="{run,train,eval,demo,lm,lm-compare,fading}")

  p = sub.add_parser("run", help="run an experiment file (experiments/*.toml): a command and its options",
                     description="Run an experiment file: its `command` (demo, lm-compare, lm, train) with the options its tables set. "
                                 "Options after the file override the file's, e.g. run experiments/lm.toml --seeds 0.")
  p.add_argument("file", type=Path, help="the experiment file, e.g. experiments/demo.toml")
  p.add_argument("overrides", nargs=argparse.REMAINDER, help="options of the file's command that replace the file's")

  p = sub.add_parser("train", help="train one model on a retrieval task, with checkpoints", description="Train one model on a retrieval task.")
  _train_args(p, steps=TRAIN_DEFAULTS.steps)
  _model_args(p)
  p.add_argument("--attention", choices=ATTENTIONS, default="ssmax", help="attention normaliser (default ssmax)")
  p.add_argument("--seed", type=_nonneg_int, default=0, help="seed for weights, data and dropout (default 0)")
  p.add_argument("--out", type=Path, required=True, help="run directory: checkpoint.json and its weights go here")
  p.add_argument("--ckpt-every", type=_nonneg_int, default=100, help="checkpoint every N steps, and at the end (0: only at the end)")
  p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
  p.add_argument("--eval-lengths", type=_int_list, default=None, help="after training, report accuracy at these lengths")
  p.add_argument("--devices", default=None,
                 help="data parallel over these tinygrad devices, e.g. CUDA:0,CUDA:1 or CPU:0,CPU:1 (batch split, parameters replicated)")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")

  p = sub.add_parser("eval", help="retrieval accuracy of a checkpoint per length", description="Accuracy of a trained checkpoint per length.")
  p.add_argument("--checkpoint", type=Path, required=True, help="run directory or checkpoint .json")
  p.add_argument("--lengths", type=_int_list, default=list(DEMO_LENGTHS), help="evaluation lengths (default 64,128,256,512,1024)")
  p.add_argument("--samples", type=_positive_int, default=256, help="sequences per length (default 256)")
  p.add_argument("--json", type=Path, default=None, help="also write the accuracies to this JSON file")

  p = sub.add_parser("demo", help="SSMax against softmax: train at one length, evaluate at longer ones",
                     description="Train softmax and SSMax models with the same seed, data and budget; evaluate at longer lengths.")
  _train_args(p, steps=250)
  _model_args(p, positional=False)
  p.add_argument("--seeds", type=_seed_list, default=[0, 1, 2], help="seeds (default 0,1,2)")
  p.add_argument("--lengths", type=_int_list, default=list(DEMO_LENGTHS), help="evaluation lengths (default 64,128,256,512,1024)")
  p.add_argument("--samples", type=_positive_int, default=96, help="evaluation sequences per length (default 96)")
  p.add_argument("--positionals", type=_name_list(POSITIONALS), default=list(POSITIONALS),
                 help=f"position settings to compare (default {','.join(POSITIONALS)})")
  p.add_argument("--finetune", type=_nonneg_int, default=0,
                 help="also switch each trained softmax model to SSMax (s = 1/log train length) and fine-tune it N steps")
  p.add_argument("--out", type=Path, default=Path("runs/demo"),
                 help="results.json, results.md, plots, sweep.json (the finished cells) and each cell's checkpoint go here (default runs/demo)")
  p.add_argument("--no-progress", action="store_true", help="no progress bars")
  _runner_args(p)

  p = sub.add_parser("lm", help="train one byte-level language model on real text, with checkpoints; evaluate; sample",
                     description="A next-byte model on real text (default: Python's documentation): train at one length, "
                                 "checkpoint, resume; then the held-out loss by position to 16x that length, pass key retrieval, a sample.")
  _train_args(p, steps=LM_TRAIN.steps, d=LM_TRAIN, text=True)
  _model_args(p, hidden=64, lm=True)
  p.add_argument("--attention", choices=ATTENTIONS, default="ssmax", help="attention (default ssmax)")
  p.add_argument("--no-tie", action="store_true", help="a separate output head instead of the tied embedding")
  p.add_argument("--seed", type=_nonneg_int, default=0, help="seed for weights, data and dropout (default 0)")
  p.add_argument("--out", type=Path, required=True, help="run directory: checkpoint.json and its weights, eval.json")
  p.add_argument("--ckpt-every", type=_nonneg_int, default=100, help="checkpoint every N steps, and at the end (0: only at the end)")
  p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
  p.add_argument("--factor", type=_positive_int, default=16, help="evaluate to this multiple of the training length (default 16)")
  p.add_argument("--prompt", default="The pass key is", help="prompt for the sample printed at the end")
  p.add_argument("--sample", type=_nonneg_int, default=200, help="bytes to sample after the prompt (default 200; 0: none)")
  p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default 0.8; 0: greedy)")
  p.add_argument("--top-k", type=_positive_int, default=None, help="sample among the k most likely bytes")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")

  p = sub.add_parser("lm-compare", help="the language-model comparison (make lm): softmax, SSMax, scale-invariant, with and without RoPE",
                     description="Train every attention x positional x seed on the same data, initial weights and budget; "
                                 "evaluate the loss by position to 16x the training length and pass key retrieval.")
  _train_args(p, steps=LM_TRAIN.steps, d=LM_TRAIN, text=True)
  _model_args(p, positional=False, hidden=64, lm=True, grid=True)
  p.add_argument("--attentions", type=_name_list(ATTENTIONS), default=list(LM_ATTENTIONS),
                 help=f"attentions to train (default {','.join(LM_ATTENTIONS)}; softmax runs are also evaluated with qwen_logn)")
  p.add_argument("--positionals", type=_name_list(LM_POSITIONALS), default=["rope", "none"],
                 help="position settings (default rope,none; p-rope: partial RoPE, see --rope-fraction)")
  p.add_argument("--seeds", type=_seed_list, default=[0, 1, 2], help="seeds (default 0,1,2)")
  p.add_argument("--factor", type=_positive_int, default=16, help="evaluate to this multiple of the training length (default 16)")
  p.add_argument("--windows", type=_positive_int, default=8, help="held-out windows for the loss by position (default 8)")
  p.add_argument("--samples", type=_positive_int, default=8, help="pass key samples per length and depth (default 8)")
  p.add_argument("--out", type=Path, default=Path("runs/lm"),
                 help="results, plots, sweep.json (the finished cells) and each cell's checkpoint go here (default runs/lm)")
  p.add_argument("--no-progress", action="store_true", help="no progress bars")
  _runner_args(p)

  p = sub.add_parser("fading", help="the paper's Figure 1: attention fading, computed with compute()",
                     description="Largest attention weight against n for softmax and SSMax (arXiv:2501.19399 Figure 1).")
  p.add_argument("--s", type=float, default=0.43, help="SSMax's s (default 0.43, as in the paper)")
  p.add_argument("--max-n", type=_positive_int, default=10_000, help="largest n (default 10000)")
  p.add_argument("--out", type=Path, default=Path("runs/demo"), help="fading.png and fading.json go here")
  return parser


# ---- parsed arguments -> the library's configurations, in this one place
def model_config(args, attention: str) -> SSMaxConfig:
  lm = dict(rope_fraction=args.rope_fraction, rope_base=args.rope_base, qk_norm=args.qk_norm, train_length=args.train_length) \
      if hasattr(args, "rope_fraction") else {}
  return SSMaxConfig(embed_dim=args.hidden, hidden_size=args.hidden, num_heads=args.heads, num_layers=args.layers, dropout=args.dropout,
                     window_size=args.train_length, attention=attention, n_mode=args.n_mode, per_head=args.per_head,
                     init_s=args.init_s, learn_s=not args.fixed_s, learn_bias=args.learn_bias, positional=getattr(args, "positional", "none"),
                     dtype=args.dtype, **lm)


def train_config(args, seed: int) -> TrainConfig:
  return TrainConfig(steps=args.steps, batch_size=args.batch_size, train_length=args.train_length, lr=args.lr, warmup=args.warmup,
                     weight_decay=args.weight_decay, clip=args.clip, seed=seed)


def cmd_train(args) -> int:
  def new_trainer() -> Trainer:
    task = make_task(args.task)
    return Trainer(build_token_model(task, model_config(args, args.attention), args.seed), task, train_config(args, args.seed), devices=args.devices)
  trainer = run_training(args, new_trainer)
  if trainer is None: return 130
  if args.eval_lengths:
    for length, acc in evaluate(trainer.model, trainer.task, args.eval_lengths).items(): print(f"  length {length:>5}: accuracy {acc:.3f}")
  return 0


def cmd_lm(args) -> int:
  def new_trainer() -> Trainer:
    task = TextTask(data=args.data, passkey_rate=args.passkey_rate, answer_weight=args.answer_weight)
    task.check_length(args.train_length)
    return Trainer(build_lm(model_config(args, args.attention), args.seed, tie_weights=not args.no_tie), task, train_config(args, args.seed))
  trainer = run_training(args, new_trainer)
  if trainer is None: return 130
  model, task, L = trainer.model, trainer.task, trainer.config.train_length
  print(f"data: {task.source}; evaluating to {args.factor * L} positions")
  result = evaluate_lm(model, task, L, factor=args.factor, progress=not args.no_progress)
  print("held-out loss (nats/byte) by position: " + "  ".join(f"{k} {v:.3f}" for k, v in result["buckets"].items()))
  print(f"degradation (loss in [{args.factor // 2}L, {args.factor}L) / loss in [L/2, L)): {result['degradation']:.3f}")
  print("pass key accuracy by length: " + "  ".join(f"{n}: {a:.2f}" for n, a in zip(result["passkey_lengths"], result["passkey_by_length"])))
  (args.out / "eval.json").write_text(json.dumps(result, indent=1))
  if args.sample:
    prompt = np.frombuffer(args.prompt.encode("utf-8"), dtype=np.uint8).astype(np.int32)[None]
    out = [int(t[0]) for t in model.generate(prompt, args.sample, temperature=args.temperature, top_k=args.top_k, seed=args.seed)]
    print(f"sample (temperature {args.temperature:g}): " + (args.prompt.encode() + bytes(out)).decode("utf-8", errors="replace"))
  return 0


def grid(args) -> tuple:
  """What demo and lm-compare run, from their parsed arguments: (the function, its arguments without the runner's);
  `cells(args)` builds the same grid's cell descriptions."""
  if args.command == "demo":
    return run_demo, dict(model=model_config(args, "ssmax"), train=train_config(args, 0), task=args.task, seeds=args.seeds,
                          lengths=args.lengths, samples=args.samples, positionals=args.positionals, finetune_steps=args.finetune)
  if args.rope_fraction != 1 and "p-rope" not in args.positionals:
    raise ValueError(f"--rope-fraction {args.rope_fraction:g} sets the p-rope cells' fraction (rope cells rotate every dimension): "
                     f"add p-rope to --positionals ({','.join(args.positionals)})")
  task = TextTask(data=args.data, passkey_rate=args.passkey_rate, answer_weight=args.answer_weight)
  return compare, dict(model=model_config(args, "softmax"), train=train_config(args, 0), task=task, attentions=args.attentions,
                       positionals=args.positionals, seeds=args.seeds, factor=args.factor, windows=args.windows, samples=args.samples)


def cells(args) -> list[dict]:
  """The cell descriptions of a demo or lm-compare command line (their names are the keys of its sweep.json)."""
  run, options = grid(args)
  model, train = options.pop("model"), options.pop("train")
  return (demo_cells if run is run_demo else lm_cells)(model, train, **options)


def cmd_grid(args) -> int:
  run, options = grid(args)
  model, train = options.pop("model"), options.pop("train")
  results = run(model, train, **options, out=args.out, progress=not args.no_progress, **_runner(args))
  return 1 if "failed" in results else 0


def run_training(args, new_trainer) -> Trainer | None:
  """Train (or resume with --resume) in args.out with checkpoints every args.ckpt_every steps; None when interrupted."""
  print(f"device: {getattr(args, 'devices', None) or Device.DEFAULT}")
  if args.resume:
    trainer = load_trainer(args.out, steps=args.steps, devices=getattr(args, "devices", None))
    print(f"resumed {args.out} at step {trainer.step} of {trainer.config.steps}")
  else:
    if checkpoint.json_path(args.out).exists():
      raise SystemExit(f"error: {args.out} already holds a checkpoint; pass --resume to continue it, or choose another --out")
    trainer = new_trainer()
  print(pocl.note(trainer.devices, [tuning.trainer_signature(trainer)]))

  # Ctrl-C ends the run between steps, never inside tinygrad (an interrupt there could leave its device worker waiting)
  interrupted = []
  previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))

  def on_step(t):
    if args.ckpt_every and t.step % args.ckpt_every == 0 and t.step < t.config.steps: save_checkpoint(t, args.out)
    if interrupted: raise KeyboardInterrupt

  try:
    trainer.train(progress=not args.no_progress, on_step=on_step)
  except KeyboardInterrupt:
    # a step cut short may have updated some parameters and not others: keep the last checkpoint, do not save this state
    print(f"\ninterrupted at step {trainer.step}; the last checkpoint in {args.out} is intact: continue with --resume", file=sys.stderr)
    return None
  finally:
    signal.signal(signal.SIGINT, previous)
  path = save_checkpoint(trainer, args.out)
  tail = trainer.losses[-min(20, len(trainer.losses)):]
  print(f"step {trainer.step}: mean loss of the last {len(tail)} steps {sum(tail) / max(1, len(tail)):.4f}; checkpoint {path}")
  transformer = trainer.model.transformer
  if transformer.ssmax_layers(): print("learned s per layer:", report.format_s(transformer.learned_s()))
  return trainer


def cmd_eval(args) -> int:
  print(f"device: {Device.DEFAULT}")
  model, task, meta = load_token_model(args.checkpoint)
  acc = evaluate(model, task, args.lengths, num_samples=args.samples, progress=True)
  train = TrainConfig.from_dict(meta["train"])
  print(f"{args.checkpoint}: task {task.name}, attention {model.config.attention}, trained {meta['step']} steps at length {train.train_length}")
  for length, a in acc.items(): print(f"  length {length:>5}: accuracy {a:.3f}")
  if args.json is not None:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"checkpoint": str(args.checkpoint), "accuracy": {str(k): v for k, v in acc.items()}}, indent=1))
  return 0


def cmd_fading(args) -> int:
  curve = report.fading_curve(args.s, args.max_n)
  args.out.mkdir(parents=True, exist_ok=True)
  (args.out / "fading.json").write_text(json.dumps(curve, indent=1))
  print(f"{'n':>7}  {'softmax':>8}  {'SSMax':>8}   largest weight; logits -2 but one +3, s = {args.s}")
  for r in curve["rows"]: print(f"{r['n']:>7}  {r['softmax']:8.4f}  {r['ssmax']:8.4f}")
  plotted = report.plot_fading(curve, args.out / "fading.png")
  print(f"wrote {args.out / 'fading.json'}" + (f" and {args.out / 'fading.png'}" if plotted else
                                                 " (pip install matplotlib, the extra 'plot', for fading.png)"))
  return 0


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "demo": cmd_grid, "fading": cmd_fading, "lm": cmd_lm, "lm-compare": cmd_grid}


def experiment_argv(path: Path, parser: argparse.ArgumentParser) -> list[str]:
  """An experiment file as a command line: `command = "lm-compare"`, then each key of the file's tables (any names: they
  group the options for the reader) is an option of that command, `steps = 4000` -> --steps 4000, a list -> a
  comma-separated value, true -> the bare flag. An unknown command or option is a ValueError that names the file."""
  try:
    data = tomllib.loads(Path(path).read_text())
  except (OSError, tomllib.TOMLDecodeError) as e:
    raise ValueError(f"experiment file {str(path)!r}: {e}") from None
  command = data.pop("command", None)
  commands = {a.dest: a for a in parser._subparsers._group_actions}["command"].choices   # argparse's subparsers
  if command not in COMMANDS: raise ValueError(f"experiment file {str(path)!r}: command={command!r} is not one of {', '.join(COMMANDS)}")
  accepted = {o for a in commands[command]._actions for o in a.option_strings if o.startswith("--")}
  argv = [command]
  for name, value in [item for k, v in data.items() for item in (v.items() if isinstance(v, dict) else [(k, v)])]:
    flag = "--" + name.replace("_", "-")
    if flag not in accepted:
      raise ValueError(f"experiment file {str(path)!r}: {name} is not an option of {command}; accepted: "
                       f"{', '.join(sorted(o[2:] for o in accepted if o != '--help'))}")
    if value is True: argv.append(flag)
    elif value is not False: argv += [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
  return argv


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    if args.command == "run":
      line = experiment_argv(args.file, parser) + args.overrides
      print(f"{args.file}: python -m ssmax_tiny {' '.join(line)}")
      args = parser.parse_args(line)
    pocl.use()   # the OpenCL-on-CPU kit, where SSMAX_TINY_POCL=1 asks for it and the device is OpenCL on a CPU
    return COMMANDS[args.command](args)
  except (checkpoint.CheckpointError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
