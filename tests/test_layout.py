"""The package's shape: each module imports alone, in any order, in a fresh interpreter; imports run one way."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "ssmax_tiny"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))


def _imports(module: str) -> set[str]:
  """The ssmax_tiny modules a module imports (at any depth of its syntax tree)."""
  found = set()
  for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ssmax_tiny"):
      found |= {node.module.split(".")[1]} if "." in node.module else {a.name for a in node.names}
  return found & set(MODULES)


@pytest.mark.parametrize("order", [MODULES, MODULES[::-1]], ids=["forward", "reverse"])
def test_each_module_imports_alone_and_in_any_order(order):
  for module in order:  # alone, in a fresh interpreter
    code = f"import ssmax_tiny.{module}"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, (module, out.stderr)
  code = "; ".join(f"import ssmax_tiny.{m}" for m in order)  # all of them, in this order, in one interpreter
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr


def test_imports_run_one_way():
  graph = {m: _imports(m) for m in MODULES}

  def reachable(start: str) -> set[str]:
    seen, todo = set(), list(graph[start])
    while todo:
      m = todo.pop()
      if m not in seen: seen.add(m); todo.extend(graph[m])
    return seen
  for m in MODULES: assert m not in reachable(m), f"{m} imports itself through {sorted(reachable(m))}: a cycle"
  assert not any("cli" in deps for deps in graph.values()), "nothing imports the command line"
  for m in MODULES:  # no private name crosses a module boundary
    for node in ast.walk(ast.parse((PACKAGE / f"{m}.py").read_text())):
      if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ssmax_tiny"):
        assert not [a.name for a in node.names if a.name.startswith("_")], (m, node.module)
