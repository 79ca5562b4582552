"""Where a result came from: the commit, tinygrad's version, the device, the machine and the date, written at the head of
every result file the benchmarks write (OUT.md's first lines, OUT.json's "stamp"). Results land in runs/bench/ by default;
the ones docs/ cites are copied to bench/results/.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).parent.parent
RUNS = ROOT / "runs" / "bench"


def commit() -> str:
  try:
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    # changes that can move a result: the package, the benchmarks and scripts, the pins (not docs, not stored results)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "ssmax_tiny", "bench/*.py", "bench/*.sh",
                            "scripts", "pyproject.toml", "Makefile"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return sha + (" (with uncommitted changes to the code)" if dirty else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown (not a git checkout)"


def machine() -> str:
  """CPU model and cores, memory, and a GPU where nvidia-smi names one."""
  cpu = platform.processor() or platform.machine()
  try:
    cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
  except (OSError, StopIteration): pass
  memory = ""
  try:
    memory = f", {int(next(line.split()[1] for line in open('/proc/meminfo') if line.startswith('MemTotal'))) / 2**20:.0f} GiB"
  except (OSError, StopIteration): pass
  gpu = ""
  try:
    gpu = ", GPU " + subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                                    timeout=10).stdout.strip().replace("\n", " + ")
  except (OSError, subprocess.SubprocessError): pass
  return f"{cpu}, {os.cpu_count()} cores{memory}{gpu if gpu != ', GPU ' else ''}"


def device() -> str:
  from tinygrad import Device

  from ssmax_tiny import pocl
  name = Device.DEFAULT
  return f"{name}" + (" with the OpenCL-on-CPU kit" if pocl.installed() else " (plain tinygrad)")


def stamp(command: str | None = None, device_line: str | None = None) -> dict:
  return dict(command=command or "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]), commit=commit(),
              tinygrad=version("tinygrad"), device=device_line or device(), machine=machine(), date=datetime.date.today().isoformat())


def header(s: dict) -> str:
  return (f"Command: `{s['command']}`  \nCommit {s['commit']}, tinygrad {s['tinygrad']}, {s['device']}; {s['machine']}; {s['date']}.\n\n")


def write(out: Path, data, md: str, command: str | None = None, device_line: str | None = None) -> tuple[Path, Path]:
  """OUT.json ({"stamp", "data"}) and OUT.md (the stamp, then md)."""
  s = stamp(command, device_line)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix(".json").write_text(json.dumps(dict(stamp=s, data=data), indent=1))
  out.with_suffix(".md").write_text(header(s) + md)
  return out.with_suffix(".json"), out.with_suffix(".md")
