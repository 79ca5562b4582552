"""Data parallel with tinygrad's Tensor.shard: two CPU devices give the loss and gradients of one.

tinygrad opens several instances of its CPU device by name (CPU:0 is the default CPU, CPU:1 a second one, each with its
own worker), so multi-device code runs and is tested on a machine without GPUs."""
import numpy as np
import pytest
from conftest import as_numpy
from tinygrad import Device, Tensor
from tinygrad.nn.state import get_parameters, get_state_dict

from ssmax_tiny.model import SSMaxConfig
from ssmax_tiny.tasks import batch_rng, make_task
from ssmax_tiny.train import TrainConfig, Trainer, build_token_model, load_trainer, parse_devices, save_checkpoint

TASK = make_task("needle")
pytestmark = pytest.mark.skipif(not Device.DEFAULT.startswith("CPU"), reason="the two-device check uses CPU:0,CPU:1 (DEV=CPU)")


def _trainer(devices, steps=4, dropout=0.0, positional="none"):
  mc = SSMaxConfig(embed_dim=16, hidden_size=16, num_heads=2, num_layers=1, dropout=dropout, window_size=12, positional=positional)
  tc = TrainConfig(steps=steps, batch_size=8, train_length=12, seed=0)
  return Trainer(build_token_model(TASK, mc, 0), TASK, tc, devices=devices)


# RoPE's tables must follow the batch onto its devices
@pytest.mark.parametrize("positional", ["none", pytest.param("rope", marks=pytest.mark.slow)])
def test_two_cpu_devices_give_the_loss_and_gradients_of_one(positional):
  one, two = _trainer(None, positional=positional), _trainer("CPU:0,CPU:1", positional=positional)
  assert two.devices == ("CPU", "CPU:1")
  tokens, targets = TASK.batch(batch_rng(0, 0), 8, 12)
  grads = []
  for t in (one, two):
    x, y = t._to_devices(Tensor(tokens), 0), t._to_devices(Tensor(targets), 0)
    loss = t.model(x).sparse_categorical_crossentropy(y)
    params = [p for p in get_parameters(t.model) if p.is_param]
    grads.append((loss.item(), as_numpy(loss.gradient(*params))))
  (l1, g1), (l2, g2) = grads
  assert abs(l1 - l2) < 1e-5
  for a, b in zip(g1, g2): np.testing.assert_allclose(a, b, atol=1e-5)
  assert max(np.abs(a).max() for a in g1) > 1e-3, "gradients are all ~0: the comparison would prove nothing"


@pytest.mark.slow
def test_two_device_training_matches_one_device():
  one, two = _trainer(None), _trainer("CPU:0,CPU:1")
  l1, l2 = one.train(progress=False), two.train(progress=False)
  np.testing.assert_allclose(l1, l2, atol=1e-5)
  p1, p2 = get_state_dict(one.model), get_state_dict(two.model)
  for k in p1: np.testing.assert_allclose(p1[k].numpy(), p2[k].numpy(), atol=1e-5)


@pytest.mark.slow
def test_two_device_checkpoint_resumes(tmp_path):
  straight = _trainer("CPU:0,CPU:1", dropout=0.1)
  straight.train(progress=False)
  first = _trainer("CPU:0,CPU:1", dropout=0.1)
  first.train(until=2, progress=False)
  save_checkpoint(first, tmp_path / "run")
  resumed = load_trainer(tmp_path / "run", devices="CPU:0,CPU:1")
  resumed.train(progress=False)
  assert resumed.losses == straight.losses


def test_bad_devices():
  with pytest.raises(ValueError, match="cannot open 'NOPE:0'"): parse_devices("CPU:0,NOPE:0")
  with pytest.raises(ValueError, match="names a device twice"): parse_devices("CPU:1,CPU:1")
  with pytest.raises(ValueError, match="batch_size=8 must be divisible by the number of devices"):
    _trainer("CPU:0,CPU:1,CPU:2")
