"""README's usage runs as written."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_quickstart_runs():
  out = subprocess.run([sys.executable, "examples/quickstart.py"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  assert "output shape: (8, 64)" in out.stdout
  assert out.stdout.count("s = [1.0]") == 2
