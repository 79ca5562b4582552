"""Data parallel: the training step on one device against the same step split over several (tinygrad's Tensor.shard).

  python bench/data_parallel.py [--devices CPU:0,CPU:1] [--batch 64] [--steps 10]

The retrieval token model of the demo at a larger width (hidden 128, 4 heads, 4 layers, training length 64). Reports median step
times and the speedup as JSON. On a machine with GPUs pass them: --devices CUDA:0,CUDA:1.
"""
import argparse
import json
import statistics
import time

from ssmax_tiny.model import SSMaxConfig
from ssmax_tiny.tasks import make_task
from ssmax_tiny.train import TrainConfig, Trainer, build_token_model


def step_time(devices, args) -> float:
  task = make_task("needle")
  mc = SSMaxConfig(embed_dim=128, hidden_size=128, num_heads=4, num_layers=4, dropout=0.0, window_size=64)
  trainer = Trainer(build_token_model(task, mc, 0), task, TrainConfig(steps=args.steps + 3, batch_size=args.batch, train_length=64),
                    devices=devices)
  for _ in range(3): trainer.train_step()   # eager, capture, first replay
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter(); trainer.train_step(); times.append(time.perf_counter() - t0)
  return statistics.median(times)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--devices", default="CPU:0,CPU:1", help="devices to split over (default CPU:0,CPU:1)")
  p.add_argument("--batch", type=int, default=64, help="global batch size (default 64)")
  p.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
  args = p.parse_args()
  one = step_time(args.devices.split(",")[0], args)
  many = step_time(args.devices, args)
  print(json.dumps(dict(devices=args.devices, batch=args.batch, one_device_step_s=one, sharded_step_s=many, speedup=one / many)))


if __name__ == "__main__":
  main()
