"""Checkpoints: safetensors (tinygrad.nn.state) with a JSON config beside it, written whole or not at all.

A checkpoint is `NAME.json` (by default `checkpoint.json` in a run directory), which holds the configuration, the step
and the name, size and SHA-256 of its weights file `NAME-<step>-<hash>.safetensors` beside it. Saving writes the
weights under a new name (temporary file, fsync, rename), then replaces NAME.json the same way: that rename is the
single commit point. A crash before it leaves the previous checkpoint as it was; a crash after it leaves the new one
whole. Only then are the previous weights file and any leftovers of an interrupted save removed. Loading checks the
JSON, the size and hash of the weights, and every tensor name and shape, and says what mismatched.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from tinygrad import Tensor
from tinygrad.nn.state import safe_load, safe_save

FORMAT = "ssmax_tiny-checkpoint-1"


class CheckpointError(ValueError):
  """A checkpoint that cannot be read: missing, truncated, corrupted, or for another model."""


def json_path(path: str | os.PathLike) -> Path:
  """NAME.json names itself; any other path is a run directory holding checkpoint.json."""
  p = Path(path)
  return p if p.suffix == ".json" else p / "checkpoint.json"


def _sha256(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""): h.update(chunk)
  return h.hexdigest()


def _fsync_dir(d: Path) -> None:
  try:
    fd = os.open(d, os.O_RDONLY)
  except OSError: return
  try: os.fsync(fd)
  except OSError: pass
  finally: os.close(fd)


def _file_mode() -> int:
  """The mode an ordinary new file gets (0644 under the common umask 022): mkstemp makes 0600, and tinygrad's disk
  device, which writes the safetensors file, makes it executable."""
  umask = os.umask(0)
  os.umask(umask)
  return 0o666 & ~umask


def atomic_write_text(path: Path, text: str) -> None:
  """Write text to path whole or not at all: a temporary file beside it, fsync, rename (also sweep.json's writer)."""
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text); f.flush(); os.fsync(f.fileno())
      os.fchmod(f.fileno(), _file_mode())
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise
  _fsync_dir(path.parent)


def save(path: str | os.PathLike, tensors: dict[str, Tensor], meta: dict) -> Path:
  """Write tensors and meta as a checkpoint at `path` (a run directory, or NAME.json). Returns the JSON's path."""
  jp = json_path(path)
  try:
    jp.parent.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise CheckpointError(f"cannot create the checkpoint directory {str(jp.parent)!r}: {e.strerror or e}") from e
  if not os.access(jp.parent, os.W_OK): raise CheckpointError(f"checkpoint directory {str(jp.parent)!r} is not writable")
  stem = jp.stem
  fd, tmp = tempfile.mkstemp(dir=jp.parent, prefix=f".{stem}.", suffix=".safetensors.tmp")
  os.close(fd)
  tmp = Path(tmp)
  try:
    safe_save({k: v.to("CPU").contiguous().realize() for k, v in tensors.items()}, str(tmp))  # replicated tensors: one copy
    with open(tmp, "rb+") as f:
      os.fchmod(f.fileno(), _file_mode())
      os.fsync(f.fileno())
    digest = _sha256(tmp)
    weights = f"{stem}-{int(meta.get('step', 0)):07d}-{digest[:12]}.safetensors"
    os.replace(tmp, jp.parent / weights)
    record = dict(format=FORMAT, weights=weights, size=(jp.parent / weights).stat().st_size, sha256=digest, **meta)
    atomic_write_text(jp, json.dumps(record, indent=1))             # the commit point
  except OSError as e:
    tmp.unlink(missing_ok=True)
    raise CheckpointError(f"could not write checkpoint {str(jp)!r}: {e.strerror or e}; the previous checkpoint is untouched") from e
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
  # the new checkpoint is committed: remove the previous weights, and whatever a run killed mid-save left behind
  # (temporary files, or weights renamed into place before their JSON was) -- one writer per checkpoint is assumed
  stale = [*jp.parent.glob(f"{stem}-*.safetensors"), *jp.parent.glob(f".{jp.name}.*.tmp"), *jp.parent.glob(f".{stem}.*.safetensors.tmp")]
  for f in stale:
    if f.name != weights: f.unlink(missing_ok=True)
  return jp


def _read_json(jp: Path) -> dict:
  try:
    record = json.loads(jp.read_text())
  except FileNotFoundError:
    raise CheckpointError(f"no checkpoint at {str(jp)!r} (expected a run directory with checkpoint.json, or NAME.json)") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CheckpointError(f"checkpoint config {str(jp)!r} is not valid JSON ({e}); it is truncated or corrupted") from None
  if not isinstance(record, dict) or record.get("format") != FORMAT:
    raise CheckpointError(f"{str(jp)!r} is not an ssmax_tiny checkpoint (format {record.get('format') if isinstance(record, dict) else None!r},"
                          f" expected {FORMAT!r})")
  for key in ("weights", "size", "sha256", "model"):
    if key not in record: raise CheckpointError(f"checkpoint config {str(jp)!r} lacks the field {key!r}")
  return record


def load(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict]:
  """(tensors, meta) of the checkpoint at `path`, after checking that its weights are whole and unaltered."""
  jp = json_path(path)
  record = _read_json(jp)
  wp = jp.parent / record["weights"]
  if not wp.exists(): raise CheckpointError(f"checkpoint weights {str(wp)!r} named by {str(jp)!r} are missing")
  size = wp.stat().st_size
  if size != record["size"]: raise CheckpointError(f"checkpoint weights {str(wp)!r} have {size} bytes, expected {record['size']}: truncated")
  if _sha256(wp) != record["sha256"]: raise CheckpointError(f"checkpoint weights {str(wp)!r} fail their SHA-256 check: corrupted")
  try:
    tensors = {k: v.to("CPU").realize() for k, v in safe_load(str(wp)).items()}
  except Exception as e:  # a file that passes the hash but is not safetensors was written by something else
    raise CheckpointError(f"checkpoint weights {str(wp)!r} are not a readable safetensors file: {e}") from e
  meta = {k: v for k, v in record.items() if k not in ("format", "weights", "size", "sha256")}
  return tensors, meta
