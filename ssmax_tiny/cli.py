"""Command line: python -m ssmax_tiny {train, eval, demo, fading} (also installed as `ssmax-tiny`).

tinygrad picks its device from the environment: DEV=CPU, DEV=CL, DEV=CUDA, ...; every command prints the one it used.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

DEMO_LENGTHS = (64, 128, 256, 512, 1024)


def _int_list(text: str, minimum: int = 1) -> list[int]:
  try:
    values = [int(x) for x in text.split(",") if x.strip()]
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 64,128,256") from None
  if not values or any(v < minimum for v in values):
    raise argparse.ArgumentTypeError(f"{text!r}: every value must be an integer >= {minimum}")
  return values


def _seed_list(text: str) -> list[int]: return _int_list(text, minimum=0)


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


def _model_args(p: argparse.ArgumentParser, positional: bool = True) -> None:
  g = p.add_argument_group("model (Edifice's build options, then ours)")
  g.add_argument("--hidden", type=_positive_int, default=32, help="hidden_size, also the token embedding width (default 32)")
  g.add_argument("--heads", type=_positive_int, default=4, help="num_heads (default 4)")
  g.add_argument("--layers", type=_positive_int, default=2, help="num_layers (default 2)")
  g.add_argument("--dropout", type=float, default=0.0, help="dropout (default 0.0: synthetic data does not overfit)")
  if positional:
    g.add_argument("--positional", choices=["none", "rope"], default="none", help="position information (default none, as Edifice)")
  g.add_argument("--seq-len-mode", choices=["row", "window"], default="row",
                 help="n per causal row (row: i+1, the paper) or one n = T for all rows (window: Edifice)")
  g.add_argument("--per-head", action="store_true", help="one s per head instead of one per layer")
  g.add_argument("--learn-bias", action="store_true", help="learn a bias b: softmax((s log n + b) z) (paper Section 3)")
  g.add_argument("--fixed-s", action="store_true", help="keep s fixed at --init-s instead of learning it")
  g.add_argument("--init-s", type=float, default=1.0, help="initial s (default 1.0, as Edifice)")


def _train_args(p: argparse.ArgumentParser, steps: int) -> None:
  g = p.add_argument_group("training (AdamW, the paper's recipe)")
  g.add_argument("--task", choices=["needle", "recall"], default="needle", help="retrieval task (default needle)")
  g.add_argument("--steps", type=_positive_int, default=steps, help=f"training steps (default {steps})")
  g.add_argument("--batch-size", type=_positive_int, default=32, help="sequences per step (default 32)")
  g.add_argument("--window", type=_positive_int, default=64, help="training sequence length (default 64)")
  g.add_argument("--lr", type=float, default=1e-2, help="peak learning rate (default 1e-2)")
  g.add_argument("--warmup", type=_nonneg_int, default=40, help="linear warmup steps (default 40)")
  g.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay on rank >= 2 weights (default 0.1)")
  g.add_argument("--clip", type=float, default=1.0, help="global gradient-norm clip (default 1.0)")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="ssmax-tiny", description="Scalable-Softmax (SSMax) attention in tinygrad: train, evaluate, compare.")
  sub = parser.add_subparsers(dest="command", required=True, metavar="{train,eval,demo,fading}")

  p = sub.add_parser("train", help="train one model on a retrieval task, with checkpoints", description="Train one model on a retrieval task.")
  _train_args(p, steps=400)
  _model_args(p)
  p.add_argument("--attention", choices=["ssmax", "softmax"], default="ssmax", help="attention normaliser (default ssmax)")
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

  p = sub.add_parser("demo", help="SSMax against softmax: train at one window, evaluate at longer ones",
                     description="Train softmax and SSMax models with the same seed, data and budget; evaluate at longer lengths.")
  _train_args(p, steps=250)
  _model_args(p, positional=False)
  p.add_argument("--seeds", type=_seed_list, default=[0, 1, 2], help="seeds (default 0,1,2)")
  p.add_argument("--lengths", type=_int_list, default=list(DEMO_LENGTHS), help="evaluation lengths (default 64,128,256,512,1024)")
  p.add_argument("--samples", type=_positive_int, default=96, help="evaluation sequences per length (default 96)")
  p.add_argument("--positionals", default="none,rope", help="position settings to compare (default none,rope)")
  p.add_argument("--finetune", type=_nonneg_int, default=0,
                 help="also switch each trained softmax model to SSMax (s = 1/log window) and fine-tune it N steps")
  p.add_argument("--out", type=Path, default=Path("runs/demo"), help="results.json, results.md and plots go here (default runs/demo)")
  p.add_argument("--no-progress", action="store_true", help="no progress bars")

  p = sub.add_parser("fading", help="the paper's Figure 1: attention fading, computed with compute()",
                     description="Largest attention weight against n for softmax and SSMax (arXiv:2501.19399 Figure 1).")
  p.add_argument("--s", type=float, default=0.43, help="SSMax's s (default 0.43, as in the paper)")
  p.add_argument("--max-n", type=_positive_int, default=10_000, help="largest n (default 10000)")
  p.add_argument("--out", type=Path, default=Path("runs/demo"), help="fading.png and fading.json go here")
  return parser


def _device() -> str:
  from tinygrad import Device
  return Device.DEFAULT


def _model_config(args, attention: str, positional: str | None = None, init_s: float | None = None):
  from ssmax_tiny.model import SSMaxConfig
  return SSMaxConfig(embed_dim=args.hidden, hidden_size=args.hidden, num_heads=args.heads, num_layers=args.layers, dropout=args.dropout,
                     window_size=args.window, attention=attention, seq_len_mode=args.seq_len_mode, per_head=args.per_head,
                     init_s=args.init_s if init_s is None else init_s, learn_s=not args.fixed_s, learn_bias=args.learn_bias,
                     positional=positional or getattr(args, "positional", "none"))


def _train_config(args, seed: int, steps: int | None = None):
  from ssmax_tiny.train import TrainConfig
  return TrainConfig(steps=steps or args.steps, batch_size=args.batch_size, window=args.window, lr=args.lr, warmup=args.warmup,
                     weight_decay=args.weight_decay, clip=args.clip, seed=seed)


def cmd_train(args) -> int:
  from ssmax_tiny import checkpoint
  from ssmax_tiny.tasks import make_task
  from ssmax_tiny.train import Trainer, build_token_model, evaluate, load_trainer, save_checkpoint
  print(f"device: {args.devices or _device()}")
  if args.resume:
    trainer = load_trainer(args.out, steps=args.steps, devices=args.devices)
    print(f"resumed {args.out} at step {trainer.step} of {trainer.config.steps}")
  else:
    if checkpoint.json_path(args.out).exists():
      raise SystemExit(f"error: {args.out} already holds a checkpoint; pass --resume to continue it, or choose another --out")
    task = make_task(args.task)
    model_config, config = _model_config(args, args.attention), _train_config(args, args.seed)
    trainer = Trainer(build_token_model(task, model_config, args.seed), task, config, model_config, devices=args.devices)

  def on_step(t):
    if args.ckpt_every and t.step % args.ckpt_every == 0 and t.step < t.config.steps: save_checkpoint(t, args.out)

  try:
    trainer.train(progress=not args.no_progress, on_step=on_step)
  except KeyboardInterrupt:
    # a step cut short may have updated some parameters and not others: keep the last checkpoint, do not save this state
    print(f"\ninterrupted at step {trainer.step}; the last checkpoint in {args.out} is intact: continue with --resume", file=sys.stderr)
    return 130
  path = save_checkpoint(trainer, args.out)
  tail = trainer.losses[-min(20, len(trainer.losses)):]
  print(f"step {trainer.step}: mean loss of the last {len(tail)} steps {sum(tail) / max(1, len(tail)):.4f}; checkpoint {path}")
  if trainer.model.body.ssmax_layers(): print("learned s per layer:", _fmt_s(trainer.model.body.learned_s()))
  if args.eval_lengths:
    for length, acc in evaluate(trainer.model, trainer.task, args.eval_lengths).items(): print(f"  length {length:>5}: accuracy {acc:.3f}")
  return 0


def cmd_eval(args) -> int:
  from ssmax_tiny.train import evaluate, load_token_model
  print(f"device: {_device()}")
  model, task, meta = load_token_model(args.checkpoint)
  acc = evaluate(model, task, args.lengths, num_samples=args.samples, progress=True)
  print(f"{args.checkpoint}: task {task.name}, attention {meta['model']['attention']}, "
        f"trained {meta['step']} steps at window {meta['train']['window']}")
  for length, a in acc.items(): print(f"  length {length:>5}: accuracy {a:.3f}")
  if args.json is not None:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"checkpoint": str(args.checkpoint), "accuracy": {str(k): v for k, v in acc.items()}}, indent=1))
  return 0


def _fmt_s(s_list) -> str:
  return "  ".join(f"L{i}: " + ",".join(f"{v:.3f}" for v in layer) for i, layer in enumerate(s_list))


def fading_curve(s: float, max_n: int) -> dict:
  """The paper's Figure 1 setting: logits all -2 but the last, +3. Largest weight of softmax and SSMax against n."""
  import numpy as np
  from tinygrad import Tensor

  from ssmax_tiny.model import compute
  ns = sorted({int(round(x)) for x in np.logspace(1, math.log10(max_n), 13)} | {10, max_n})
  rows = []
  for n in ns:
    z = np.full((1, n), -2.0, np.float32); z[0, -1] = 3.0
    rows.append(dict(n=n, softmax=float(Tensor(z).softmax(-1)[0, -1].item()), ssmax=float(compute(Tensor(z), s, n)[0, -1].item())))
  return dict(s=s, logits="-2 everywhere, +3 at one key", rows=rows)


def _pyplot():
  """matplotlib.pyplot drawing to files (the extra 'plot'), or None when it is not installed."""
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    return None
  return plt


def _plot_fading(curve: dict, path: Path) -> bool:
  if (plt := _pyplot()) is None: return False
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ns = [r["n"] for r in curve["rows"]]
  ax.plot(ns, [r["softmax"] for r in curve["rows"]], "o-", label="softmax")
  ax.plot(ns, [r["ssmax"] for r in curve["rows"]], "s-", label=f"SSMax, s = {curve['s']}")
  ax.set_xscale("log"); ax.set_ylim(0, 1.05); ax.set_xlabel("n (number of keys)"); ax.set_ylabel("largest attention weight")
  ax.set_title("Attention fading (arXiv:2501.19399 Fig. 1)"); ax.grid(alpha=0.3); ax.legend()
  fig.tight_layout(); fig.savefig(path, dpi=120); plt.close(fig)
  return True


def cmd_fading(args) -> int:
  curve = fading_curve(args.s, args.max_n)
  args.out.mkdir(parents=True, exist_ok=True)
  (args.out / "fading.json").write_text(json.dumps(curve, indent=1))
  print(f"{'n':>7}  {'softmax':>8}  {'SSMax':>8}   largest weight; logits -2 but one +3, s = {args.s}")
  for r in curve["rows"]: print(f"{r['n']:>7}  {r['softmax']:8.4f}  {r['ssmax']:8.4f}")
  print(f"wrote {args.out / 'fading.json'}" + (f" and {args.out / 'fading.png'}" if _plot_fading(curve, args.out / "fading.png") else
                                                 " (pip install matplotlib, the extra 'plot', for fading.png)"))
  return 0


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  from ssmax_tiny.checkpoint import CheckpointError
  try:
    if args.command == "demo":
      from ssmax_tiny.demo import run_demo
      return run_demo(args)
    return {"train": cmd_train, "eval": cmd_eval, "fading": cmd_fading}[args.command](args)
  except (CheckpointError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
