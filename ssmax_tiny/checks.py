"""Argument checks shared by the model, the tasks and the trainer: each error names the argument, its value and what is
accepted, e.g. ValueError("num_heads=0 must be an int >= 1")."""
from __future__ import annotations

import math


def check_int(name: str, value, minimum: int = 1) -> int:
  """An int >= minimum (numpy integers too; bools are refused: True is not a size)."""
  if isinstance(value, bool) or not hasattr(value, "__index__") or int(value) < minimum:
    raise ValueError(f"{name}={value!r} must be an int >= {minimum}")
  return int(value)


def check_number(name: str, value, low: float = -math.inf, high: float = math.inf, low_open: bool = False, high_open: bool = False) -> float:
  """A finite real number in [low, high] (or the open ends asked for); bools are refused."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or \
     value < low or value > high or (low_open and value == low) or (high_open and value == high):
    if high == math.inf: span = f"{'>' if low_open else '>='} {low:g}" if low > -math.inf else ""
    else: span = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    raise ValueError(f"{name}={value!r} must be a finite number {span}".rstrip())
  return float(value)


def check_bool(name: str, value) -> bool:
  if not isinstance(value, bool): raise ValueError(f"{name}={value!r} must be True or False")
  return value


def check_choice(name: str, value, accepted: tuple[str, ...]) -> str:
  if value not in accepted: raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, accepted))}")
  return value
