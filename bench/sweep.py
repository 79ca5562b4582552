"""The demo's grid (12 cells: 2 positionals x 2 attentions x 3 seeds) run by each runner of ssmax_tiny/sweep.py, timed end
to end as a user runs it (`python -m ssmax_tiny demo ...`, a fresh out each time), with the check that runners on the
same device give the same numbers to the last bit. Writes bench/sweep.{json,md}.

  python bench/sweep.py                       # the four runs below, about 25 minutes on 2 cores
  python bench/sweep.py --args "--steps 50"   # a smaller grid, for a quick look
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm.auto import tqdm

HERE = Path(__file__).parent
RUNS = [  # (label, DEV, runner flags): the default first, the baseline of every ratio
  ("CL, one process (make demo)", "CL", []),
  ("CL, --jobs 2", "CL", ["--jobs", "2"]),
  ("CPU, --jobs 2", "CPU", ["--jobs", "2"]),
  ("CPU, Ray local (--ray, 1 CPU per cell)", "CPU", ["--ray"]),
]


def measured(results: dict) -> list:
  return [{k: v for k, v in r.items() if k not in ("device", "seconds", "peak_rss_mib")} for r in results["runs"]]


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--args", default="", help="extra flags for every demo run")
  ap.add_argument("--only", default=None, help="comma-separated indices of RUNS to run (default all)")
  args = ap.parse_args()
  try:
    chosen = [RUNS[int(i)] for i in args.only.split(",")] if args.only else RUNS
  except (ValueError, IndexError):
    ap.error(f"--only {args.only!r} must be comma-separated indices 0 to {len(RUNS) - 1} of: " + "; ".join(r[0] for r in RUNS))
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for i, (label, dev, flags) in enumerate(tqdm(chosen, desc="runners", dynamic_ncols=True)):
      out = Path(tmp) / str(i)
      cmd = [sys.executable, "-m", "ssmax_tiny", "demo", "--no-progress", "--out", str(out), *flags, *args.args.split()]
      t = time.perf_counter()
      proc = subprocess.run(cmd, env={**os.environ, "DEV": dev}, capture_output=True, text=True)
      seconds = time.perf_counter() - t
      if proc.returncode != 0: raise SystemExit(f"{label} failed:\n{proc.stderr[-3000:]}")
      results = json.loads((out / "results.json").read_text())
      rows.append(dict(label=label, device=dev, flags=flags, seconds=round(seconds, 1), runs=measured(results),
                       cell_seconds=sum(r["seconds"] for r in results["runs"]), peak_rss_mib=max(r["peak_rss_mib"] for r in results["runs"])))
  base = rows[0]["seconds"]
  same = {r["label"]: next((o["label"] for o in rows if o is not r and o["device"] == r["device"] and o["runs"] == r["runs"]), None)
          for r in rows}
  notes = ["Peak RSS is that of the process that ran a cell: in one process, the whole run's; in a pool or on Ray, the cell's own."]
  lines = [f"Demo grid (python -m ssmax_tiny demo {args.args}".rstrip() + "), 12 cells, wall time of the whole command; "
           f"{os.cpu_count()} CPU cores.", "",
           "| runner | wall time (s) | speed-up vs the first | sum of cell times (s) | largest peak RSS (MiB) | same numbers as |",
           "|---|---:|---:|---:|---:|---|"]
  for r in rows:
    lines.append(f"| {r['label']} | {r['seconds']:.0f} | x{base / r['seconds']:.2f} | {r['cell_seconds']:.0f} | {r['peak_rss_mib']} | "
                 f"{same[r['label']] or '-'} |")
  md = "\n".join(lines + [""] + notes) + "\n"
  print(md)
  (HERE / "sweep.md").write_text(md)
  (HERE / "sweep.json").write_text(json.dumps(dict(args=args.args, rows=[{k: v for k, v in r.items() if k != "runs"} for r in rows],
                                                  same_numbers=same), indent=1))


if __name__ == "__main__":
  main()
