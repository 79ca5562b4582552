"""Training beside the model: AdamW with the paper's recipe, one TinyJit step, evaluation, checkpoints of a run.

- AdamW (arXiv:1711.05101) with betas (0.9, 0.95), weight decay 0.1 on weights of rank >= 2 only (the model's
  `configure_optimizers`), global gradient-norm clipping at 1.0, linear warmup then cosine decay to 10%: the recipe of
  arXiv:2501.19399 Section 4 (GPT-2 style).
- The whole step (forward, loss, backward, clipping, optimizer update) is one TinyJit function, as in tinygrad's
  examples/beautiful_mnist.py; the learning rate is one of its inputs, never a frozen number. On one device the inputs
  are written into buffers kept from the first step, not made anew each step (Trainer._input).
- Determinism: weights from Tensor.manual_seed(seed), each batch from numpy's generator keyed by (seed, step), dropout
  from tinygrad's counter-based RNG whose counter is saved in checkpoints. Same seed, same losses, to the last bit.
- Mixed precision is the model's (SSMaxConfig.dtype): parameters, gradients, the optimizer's state and checkpoints stay
  float32. bfloat16 has float32's range and trains as it is; float16 would need loss scaling, and is refused here.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields

import numpy as np
from tinygrad import Context, Device, Tensor, TinyJit, dtypes
from tinygrad.device import Buffer
from tinygrad.nn.state import get_parameters, get_state_dict
from tqdm.auto import tqdm

from ssmax_tiny import checkpoint, pocl
from ssmax_tiny.checks import check_bool, check_int, check_number
from ssmax_tiny.model import LanguageModel, SSMaxConfig, TokenModel
from ssmax_tiny.tasks import RetrievalTask, batch_rng
from ssmax_tiny.text import TextTask


@dataclass(frozen=True)
class TrainConfig:
  steps: int = 400
  batch_size: int = 32
  train_length: int = 64       # the sequence length the model trains at (longer ones are for evaluation)
  lr: float = 1e-2
  warmup: int = 40
  min_lr_ratio: float = 0.1    # cosine decay to lr * min_lr_ratio at the last step
  betas: tuple[float, float] = (0.9, 0.95)
  weight_decay: float = 0.1
  clip: float = 1.0
  seed: int = 0
  checkpoint: bool = False     # recompute each block's activations in the backward pass (less memory, more time; unjitted)

  def __post_init__(self):
    for f in ("steps", "batch_size", "train_length"): check_int(f, getattr(self, f))
    check_int("warmup", self.warmup, 0)
    check_int("seed", self.seed, 0)
    for f in ("lr", "clip"): check_number(f, getattr(self, f), 0, low_open=True)
    check_number("weight_decay", self.weight_decay, 0)
    check_number("min_lr_ratio", self.min_lr_ratio, 0, 1)
    check_bool("checkpoint", self.checkpoint)
    if len(self.betas) != 2: raise ValueError(f"betas={self.betas!r} must be two numbers in [0, 1)")
    for b in self.betas: check_number("betas", b, 0, 1, high_open=True)

  @classmethod
  def from_dict(cls, d: dict) -> TrainConfig:
    """Like TrainConfig(**d), but an unknown option is a ValueError that lists the accepted ones."""
    unknown = sorted(set(d) - {f.name for f in fields(cls)})
    if unknown: raise ValueError(f"unknown training option(s) {', '.join(unknown)}; accepted: {', '.join(f.name for f in fields(cls))}")
    if "betas" in d: d["betas"] = tuple(d["betas"])
    return cls(**d)

  def lr_at(self, step: int) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to lr * min_lr_ratio at the last step."""
    if step < self.warmup: return self.lr * (step + 1) / self.warmup
    progress = (step - self.warmup) / max(1, self.steps - self.warmup)
    return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class DropoutRNG:
  """A private dropout RNG for one trainer. tinygrad draws random numbers from a per-device seed and counter held in
  Tensor._device_seeds / Tensor._device_rng_counters (tinygrad/tensor.py, Tensor._next_counter); a TinyJit captures those
  buffers. Installing our own pair (per device) around every step makes the stream a function of the trainer's seed
  alone, whatever else in the process uses tinygrad's global RNG; the counters are what a checkpoint saves."""

  def __init__(self, seed: int, devices: tuple[str, ...]):
    self.devices = devices
    self.seeds = {d: Tensor([0x55AA + i, seed], device=d, dtype=dtypes.uint32).realize() for i, d in enumerate(devices)}
    self.counters = {d: Tensor([0, 0], device=d, dtype=dtypes.uint32).realize() for d in devices}

  def __enter__(self):
    self.saved = {d: (Tensor._device_seeds.get(d), Tensor._device_rng_counters.get(d)) for d in self.devices}
    for d in self.devices: Tensor._device_seeds[d], Tensor._device_rng_counters[d] = self.seeds[d], self.counters[d]

  def __exit__(self, *exc):
    for d, olds in self.saved.items():
      for table, old in zip((Tensor._device_seeds, Tensor._device_rng_counters), olds):
        if old is None: table.pop(d, None)
        else: table[d] = old


def parse_devices(devices) -> tuple[str, ...] | None:
  """"CPU:0,CPU:1" or a sequence of names -> a tuple of canonical tinygrad device names (None: the default device)."""
  if devices is None: return None
  names = [d.strip() for d in (devices.split(",") if isinstance(devices, str) else devices) if d.strip()]
  if not names: raise ValueError(f"devices={devices!r}: name one or more tinygrad devices, e.g. CPU:0,CPU:1 or CUDA:0,CUDA:1")
  if len(set(names)) != len(names): raise ValueError(f"devices={devices!r} names a device twice")
  opened = []
  for name in names:
    try:
      opened.append(Device.canonicalize(name))
      Device[opened[-1]]
    except Exception as e:
      raise ValueError(f"devices={devices!r}: tinygrad cannot open {name!r} ({type(e).__name__}: {e})") from None
  return tuple(opened) if len(opened) > 1 else None if opened[0] == Device.DEFAULT else (opened[0],)


class Trainer:
  """Owns the model, the optimizer and the step count. `train()` runs to config.steps; `state()` is what a checkpoint holds.

  Data parallel with tinygrad's own Tensor.shard (tinygrad/tensor.py; beautiful_mnist_multigpu.py): with
  devices=("CUDA:0", "CUDA:1") every parameter is replicated (shard with axis=None), each batch is split along axis 0,
  and tinygrad reduces the gradients across devices when the replicated parameters' gradients are formed."""

  def __init__(self, model: TokenModel | LanguageModel, task: RetrievalTask | TextTask, config: TrainConfig, devices=None):
    if model.config.dtype == "float16":
      raise ValueError("dtype='float16' trains only with loss scaling, which Trainer does not do: float16's smallest normal "
                       "number, 6e-5, would flush small gradients to zero. Train in 'bfloat16' (float32's range) or "
                       "'float32'; float16 is for inference (with_options(model, dtype='float16'))")
    self.model, self.task, self.config = model, task, config
    self.devices = parse_devices(devices)
    if self.devices is not None and config.batch_size % len(self.devices):
      raise ValueError(f"batch_size={config.batch_size} must be divisible by the number of devices ({len(self.devices)}: {','.join(self.devices)})")
    if self.devices is not None:
      for t in get_state_dict(model).values(): t.shard_(self.devices) if len(self.devices) > 1 else t.replace(t.to(self.devices[0]))
      Tensor.realize(*get_parameters(model))
    self.optimizer = model.configure_optimizers(config.lr, config.betas, config.weight_decay)
    self.step = 0
    self.losses: list[float] = []
    self.rng = DropoutRNG(config.seed, self.devices or (Device.DEFAULT,))
    self._jit = TinyJit(self._train_step)
    self.capture_notes: dict | None = None   # what the OpenCL-on-CPU kit did at the capture, where it is installed
    self._inputs: dict[str, tuple] = {}      # the step's input buffers on one device, with their shape and dtype (_input)

  def _train_step(self, tokens: Tensor, targets: Tensor, lr: Tensor) -> tuple[Tensor, Tensor]:
    # the step's learning rate is an input: assigned here, inside the TinyJit, it costs one tiny kernel; assigned before
    # each step outside it, it was a schedule of its own, 5 ms of make lm's 80 ms step on CL
    for opt in self.optimizer.optimizers: opt.lr.assign(lr.cast(opt.lr.dtype))
    self.optimizer.zero_grad()
    params = self.optimizer.params
    if self.config.checkpoint:
      loss, grads = checkpointed_gradients(self.model, tokens, targets, params, self.rng, self.task.loss)
      for p, g in zip(params, grads): p.grad = g
    else:
      loss = self.task.loss(self.model(tokens), targets)   # the task's own (TextTask's can weigh the pass key's answer)
      loss.backward()
    # each parameter's sum of squares in a kernel of its own (contiguous): left lazy, tinygrad fuses them all into one
    # kernel with a loop per parameter, which PoCL failed to link at hidden 128, 4 layers (README, Long context)
    norm = Tensor.stack(*[p.grad.square().sum().contiguous() for p in params]).sum().sqrt()
    coef = (self.config.clip / (norm + 1e-6)).minimum(1.0)   # clip the global gradient norm to config.clip
    for p in params: p.grad = p.grad * coef
    Tensor.realize(loss, norm, *self.optimizer.schedule_step())
    return loss, norm

  def _to_devices(self, t: Tensor, axis: int | None) -> Tensor:
    if self.devices is None: return t
    return t.shard(self.devices, axis=axis).realize() if len(self.devices) > 1 else t.to(self.devices[0]).realize()

  def _input(self, name: str, array: np.ndarray, axis: int | None) -> Tensor:
    """The step's input `name`, holding `array`, on the trainer's devices. On one device it is written into a buffer
    kept from the first step (Buffer.copy_from, about 0.2 ms on CL) and the same Tensor returned, so an earlier
    step's input is overwritten: a Tensor made anew from numpy is scheduled and realised on its own, about 1.8 ms on
    CL, 5 ms of make lm's 57 ms step for its three inputs. Sharded over devices, it is made anew."""
    held = self._inputs.get(name)
    if held is None or held[1] != (array.shape, array.dtype):
      t = self._to_devices(Tensor(array), axis).realize()
      if self.devices is None or len(self.devices) == 1: self._inputs[name] = (t, (array.shape, array.dtype))
      return t
    t = held[0]
    buf = t.uop.base.buffer
    # a host buffer over the array's bytes, copied in as tinygrad copies any host data (tinygrad/device.py Buffer)
    buf.copy_from(Buffer("PYTHON", buf.size, buf.dtype, opaque=memoryview(np.ascontiguousarray(array)).cast("B")))
    return t

  def next_batch(self) -> tuple[Tensor, Tensor]:
    """This step's tokens and targets, as the jitted step takes them (on one device: the same Tensors each step)."""
    tokens, targets = self.task.batch(batch_rng(self.config.seed, self.step), self.config.batch_size, self.config.train_length)
    return self._input("tokens", tokens, 0), self._input("targets", targets, 0)

  def lr_input(self) -> Tensor:
    """This step's learning rate as the jitted step takes it: a [1] float32 Tensor on the trainer's devices."""
    return self._input("lr", np.array([self.config.lr_at(self.step)], dtype=np.float32), None)

  def train_step(self) -> float:
    tokens, targets = self.next_batch()
    lr = self.lr_input()
    with Context(TRAINING=1), self.rng:
      # checkpointing realises block by block, which a TinyJit cannot capture as one step: it runs eagerly
      if self.config.checkpoint: loss, _ = self._train_step(tokens, targets, lr)
      elif self._jit.cnt == 1:   # the capture: where the OpenCL-on-CPU kit is installed, it reads make tune's kernels here
        with pocl.capturing(self) as self.capture_notes: loss, _ = self._jit(tokens, targets, lr)
      else: loss, _ = self._jit(tokens, targets, lr)
    self.losses.append(float(loss.item()))
    self.step += 1
    return self.losses[-1]

  def train(self, until: int | None = None, progress: bool = True, on_step=None, desc: str = "train") -> list[float]:
    """Steps until `until` (default config.steps); on_step(trainer) runs after each step (checkpointing, say)."""
    until = self.config.steps if until is None else until
    tokens_per_step = self.config.batch_size * self.config.train_length
    bar = tqdm(total=until, initial=self.step, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    t0, done = time.perf_counter(), 0
    while self.step < until:
      loss = self.train_step()
      done += 1
      bar.update(1)
      bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{done * tokens_per_step / (time.perf_counter() - t0):.0f}")
      if on_step is not None: on_step(self)
    bar.close()
    return self.losses

  # ---- what a checkpoint holds
  def state(self) -> tuple[dict[str, Tensor], dict]:
    tensors = {f"model.{k}": v for k, v in get_state_dict(self.model).items()}
    for i, opt in enumerate(self.optimizer.optimizers):
      tensors[f"optim.{i}.b1_t"], tensors[f"optim.{i}.b2_t"] = opt.b1_t, opt.b2_t
      for j, (m, v) in enumerate(zip(opt.m, opt.v)): tensors[f"optim.{i}.m.{j}"], tensors[f"optim.{i}.v.{j}"] = m, v
    for i, d in enumerate(self.rng.devices): tensors[f"rng.counter.{i}"] = self.rng.counters[d]
    meta = dict(step=self.step, losses=self.losses, model=asdict(self.model.config), task=self.task.to_dict(), head=self.model.head_options(),
                train={**asdict(self.config), "betas": list(self.config.betas)})
    return tensors, meta

  def load_state(self, tensors: dict[str, Tensor], meta: dict) -> None:
    own, _ = self.state()
    assign_checked(own, tensors, what="checkpoint")
    self.step, self.losses = int(meta["step"]), [float(x) for x in meta["losses"]]


def checkpointed_gradients(model, tokens: Tensor, targets: Tensor, params: list[Tensor], rng: DropoutRNG, loss_of) -> tuple[Tensor, list[Tensor]]:
  """The loss (`loss_of(logits, targets)`: the task's) and the gradients of `params`, with activation checkpointing
  (Chen et al. 2016, arXiv:1604.06174; what torch.utils.checkpoint does per block): the forward keeps only each block's
  input, realised, and frees the rest; the backward runs block by block from the top, recomputing that block's forward
  from its input, so that at most one block's activations are held at a time. Each stage is realised before the next,
  because tinygrad's memory planner holds every buffer of one schedule to its end. Each block's dropout draws are
  replayed: the RNG counters are saved before the block's forward and restored before its recomputation. Same gradients
  as loss.backward() (test).

  Wrapping each block in tinygrad's `function` (tinygrad/function.py), whose backward recomputes the body, gave the same
  gradients but no saving: forward and backward end up in one schedule, and its buffers are all held."""
  tr = model.transformer
  last = len(tr.blocks) - 1
  grads: dict[int, Tensor] = {}
  trainable = {id(p) for p in params}

  def of(*modules) -> list[Tensor]:  # the trainable parameters of these modules: a stage differentiates only its own
    return [p for p in get_parameters([m for m in modules if m is not None]) if id(p) in trainable]

  def accumulate(values: list[Tensor], to: list[Tensor]) -> None:
    for p, g in zip(to, values): grads[id(p)] = g if id(p) not in grads else grads[id(p)] + g
    Tensor.realize(*grads.values())

  def block(i: int, h: Tensor) -> Tensor:
    y = tr.blocks[i](h)
    return y.dropout(tr.config.dropout) if i < last else y                           # dropout between blocks, as in hidden()

  def counters() -> dict[str, Tensor]: return {d: c.clone().realize() for d, c in rng.counters.items()}

  def restore(saved: dict[str, Tensor]) -> None:
    for d, c in saved.items(): rng.counters[d].assign(c).realize()

  def first(): return tr.input_proj(model.embed(tokens)) if tr.input_proj is not None else model.embed(tokens)

  h = first().contiguous().realize()
  inputs, states = [], []
  for i in range(len(tr.blocks)):                                                    # forward: keep block inputs only
    inputs.append(h.detach())
    states.append(counters())
    h = block(i, inputs[-1]).contiguous().realize()
  after = counters()
  top_in, top = h.detach(), of(tr.ln_f, getattr(model, "head", None) or model.embed)  # a tied head is the embedding
  loss = loss_of(model.logits_from(tr.ln_f(top_in)), targets)
  *g_params, g = loss.gradient(*top, top_in)
  Tensor.realize(loss, g)
  accumulate(g_params, top)
  for i in reversed(range(len(tr.blocks))):                                          # backward: recompute, then differentiate
    restore(states[i])
    own = of(tr.blocks[i])
    *g_params, g = block(i, inputs[i]).gradient(*own, inputs[i], gradient=g)
    g = g.contiguous().realize()
    accumulate(g_params, own)
  restore(after)                                                                     # the counters as after an ordinary step
  own = of(model.embed, tr.input_proj)
  accumulate(first().gradient(*own, gradient=g), own)
  return loss, [grads[id(p)] if id(p) in grads else p.zeros_like() for p in params]


def assign_checked(own: dict[str, Tensor], loaded: dict[str, Tensor], what: str) -> None:
  """Copy `loaded` into `own` in place (TinyJits keep seeing the parameters), after checking every name and shape."""
  missing, unexpected = sorted(set(own) - set(loaded)), sorted(set(loaded) - set(own))
  wrong = [f"{k}: expected {own[k].shape} {own[k].dtype.name}, found {loaded[k].shape} {loaded[k].dtype.name}"
           for k in sorted(set(own) & set(loaded)) if own[k].shape != loaded[k].shape or own[k].dtype != loaded[k].dtype]
  if missing or unexpected or wrong:
    lines = ([f"missing: {', '.join(missing)}"] if missing else []) + ([f"unexpected: {', '.join(unexpected)}"] if unexpected else []) + wrong
    raise ValueError(f"{what} does not match the model:\n  " + "\n  ".join(lines))
  for k, t in own.items():
    src = loaded[k].to(t.device) if isinstance(t.device, str) else loaded[k].shard(t.device, t.uop.axis)
    t.assign(src).realize()


def build_token_model(task: RetrievalTask, model_config: SSMaxConfig, seed: int) -> TokenModel:
  Tensor.manual_seed(seed)
  return TokenModel(task.vocab_size, task.num_classes, model_config)


def evaluate(model: TokenModel, task: RetrievalTask, lengths: list[int], num_samples: int = 256, seed: int = 10_000,
             batch_size: int = 32, progress: bool = False) -> dict[int, float]:
  """Retrieval accuracy at each length, on num_samples sequences drawn from (seed, length): the same for every model."""
  acc = {}
  for length in tqdm(lengths, desc="eval", disable=not progress, leave=False):
    correct = 0
    for b in range(math.ceil(num_samples / batch_size)):
      n = min(batch_size, num_samples - b * batch_size)
      tokens, targets = task.batch(batch_rng(seed, b, stream=int(length)), n, int(length))
      pred = model(Tensor(tokens)).argmax(-1).numpy()
      correct += int((pred == targets).sum())
    acc[int(length)] = correct / num_samples
  return acc


# ---- checkpoints of a training run (format and atomicity: ssmax_tiny/checkpoint.py)
def save_checkpoint(trainer: Trainer, path) -> str:
  tensors, meta = trainer.state()
  return str(checkpoint.save(path, tensors, meta))


def task_from_dict(d: dict) -> RetrievalTask | TextTask:
  return TextTask(**d) if d.get("name") == "text" else RetrievalTask(**d)


def model_from(head: dict, config: SSMaxConfig) -> TokenModel | LanguageModel:
  """The token model a checkpoint's `head` describes (checkpoints before the language model have none: a classifier)."""
  if head["kind"] == "lm": return LanguageModel(config, head["vocab_size"], head["tie_weights"])
  return TokenModel(head["vocab_size"], head["num_classes"], config)


def _configs(meta: dict) -> tuple[SSMaxConfig, RetrievalTask | TextTask, TrainConfig, dict]:
  try:
    task = task_from_dict(meta["task"])
    head = meta.get("head") or dict(kind="classifier", vocab_size=task.vocab_size, num_classes=task.num_classes)
    return SSMaxConfig.from_options(**meta["model"]), task, TrainConfig.from_dict(meta["train"]), head
  except (KeyError, TypeError, ValueError) as e:
    raise checkpoint.CheckpointError(f"checkpoint configuration is invalid: {e}") from e


def load_trainer(path, steps: int | None = None, devices=None) -> Trainer:
  """Rebuild model, optimizer and RNG from a checkpoint; train() then continues exactly where the run stopped.
  `steps` raises the run's total step count (the learning-rate schedule is defined by it, so it changes the run)."""
  tensors, meta = checkpoint.load(path)
  model_config, task, config, head = _configs(meta)
  if steps is not None: config = TrainConfig.from_dict({**asdict(config), "steps": steps})
  model = model_from(head, model_config)
  trainer = Trainer(model, task, config, devices=devices)
  trainer.load_state(tensors, meta)
  return trainer


def load_token_model(path) -> tuple[TokenModel | LanguageModel, RetrievalTask | TextTask, dict]:
  """The trained model of a checkpoint (no optimizer), its task and the checkpoint's meta."""
  tensors, meta = checkpoint.load(path)
  model_config, task, _, head = _configs(meta)
  model = model_from(head, model_config)
  own = {f"model.{k}": v for k, v in get_state_dict(model).items()}
  assign_checked(own, {k: v for k, v in tensors.items() if k.startswith("model.")}, what=f"checkpoint {path}")
  return model, task, meta
