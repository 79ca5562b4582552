"""The package's shape: each module imports alone, in any order, in a fresh interpreter; imports run one way; importing
every module leaves tinygrad as it was (the OpenCL-on-CPU kit changes tinygrad only when installed)."""
import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "ssmax_tiny"
MODULES = sorted(".".join(p.relative_to(PACKAGE).with_suffix("").parts) for p in PACKAGE.rglob("*.py")
                 if p.stem not in ("__init__", "__main__")) + ["pocl"]


def _path(module: str) -> Path:
  return PACKAGE / "pocl" / "__init__.py" if module == "pocl" else PACKAGE / (module.replace(".", "/") + ".py")


def _imports(module: str) -> set[str]:
  """The ssmax_tiny modules a module imports (at any depth of its syntax tree)."""
  found = set()
  for node in ast.walk(ast.parse(_path(module).read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ssmax_tiny"):
      inside = node.module.split(".", 1)[1] if "." in node.module else ""
      found |= {inside} | {f"{inside}.{a.name}" if inside else a.name for a in node.names}
  return (found & set(MODULES)) - {module}


@pytest.mark.parametrize("order", [MODULES, MODULES[::-1]], ids=["forward", "reverse"])
def test_each_module_imports_alone_and_in_any_order(order):
  for module in order:  # alone, in a fresh interpreter
    out = subprocess.run([sys.executable, "-c", f"import ssmax_tiny.{module}"], capture_output=True, text=True, timeout=120)
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
  assert not any(d == "pocl" or d.startswith("pocl.") for d in reachable("model")), "the model knows nothing of the kit"
  for m in MODULES:  # no private name crosses a module boundary
    for node in ast.walk(ast.parse(_path(m).read_text())):
      if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ssmax_tiny"):
        assert not [a.name for a in node.names if a.name.startswith("_")], (m, node.module)


# every function, class and list of tinygrad that the kit replaces when installed, by module and name
TINYGRAD_AS_IT_WAS = textwrap.dedent("""
  import importlib, os, sys
  def snapshot():
    from tinygrad import Device
    import tinygrad.codegen, tinygrad.codegen.opt.heuristic as h, tinygrad.codegen.opt.search as s, tinygrad.codegen.late.coalesce as c
    from tinygrad import Tensor
    own = dict(memory_coalescing=tinygrad.codegen.memory_coalescing, coalesce=c.memory_coalescing, heuristics=h.hand_coded_optimizations,
               beam_search=s.beam_search, time_program=s._time_program, next_counter=Tensor._next_counter, env=dict(os.environ))
    own.update({f"{d}.renderers": list(Device[d].renderers) for d in Device.get_available_devices()})
    own.update({f"{d}.graph": Device[d].graph for d in Device.get_available_devices()})
    return own
  before = snapshot()
  for m in sys.argv[1:]: importlib.import_module("ssmax_tiny." + m)
  import ssmax_tiny.cli
  ssmax_tiny.cli.build_parser()
  after = snapshot()
  changed = sorted(k for k in before if before[k] != after[k])
  print(changed)
  sys.exit(1 if changed else 0)
""")


def test_importing_every_module_leaves_tinygrad_as_it_was():
  env = {k: v for k, v in __import__("os").environ.items() if k != "SSMAX_TINY_POCL"}
  out = subprocess.run([sys.executable, "-c", TINYGRAD_AS_IT_WAS, *MODULES], capture_output=True, text=True, timeout=120, env=env)
  assert out.returncode == 0, f"changed on import: {out.stdout} {out.stderr[-2000:]}"
