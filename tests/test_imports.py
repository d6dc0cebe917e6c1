"""The package's import graph has no cycle, counting imports inside functions too.

Every `import` / `from ... import` anywhere in a module of `jaxseg` or
`kernels` (module level or inside a function: a function-level import is how
a cycle gets held open) is an edge to the first-party module it names; a
package's `__init__` counts as the package, so a submodule that imports a
name from its own package's `__init__` closes a cycle too. A cycle is
reported with its path.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("jaxseg", "kernels")


def _modules() -> dict[str, Path]:
  out = {}
  for pkg in PACKAGES:
    for path in sorted((ROOT / pkg).rglob("*.py")):
      parts = path.relative_to(ROOT).with_suffix("").parts
      name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
      out[name] = path
  return out


def _resolve(name: str, modules: dict) -> str | None:
  """The longest first-party module that `name` is or is inside of."""
  while name:
    if name in modules:
      return name
    name = name.rpartition(".")[0]
  return None


def _edges(name: str, path: Path, modules: dict) -> set[str]:
  tree = ast.parse(path.read_text(), str(path))
  is_pkg = path.name == "__init__.py"
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = name if is_pkg else name.rpartition(".")[0]
        for _ in range(node.level - 1):
          base = base.rpartition(".")[0]
        mod = f"{base}.{node.module}" if node.module else base
      else:
        mod = node.module or ""
      # `from pkg import sub` may name a submodule
      targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
    else:
      continue
    for t in targets:
      r = _resolve(t, modules)
      if r and r != name:
        out.add(r)
  return out


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  return {name: _edges(name, path, modules) for name, path in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    stack.pop()
    state[node] = "done"
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_no_import_cycle():
  cycle = _find_cycle(_graph())
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_check_finds_a_cycle():
  # The walker itself: a hand-made graph with a cycle through a function-level edge.
  graph = {"jaxseg.ops.conv": {"jaxseg.ops.conv_grad"}, "jaxseg.ops.conv_grad": {"jaxseg.ops.cpu_conv"},
           "jaxseg.ops.cpu_conv": {"jaxseg.ops.conv"}, "jaxseg.ops.phase": set()}
  assert _find_cycle(graph) == ["jaxseg.ops.conv", "jaxseg.ops.conv_grad", "jaxseg.ops.cpu_conv",
                                "jaxseg.ops.conv"]


def test_function_level_imports_are_edges(tmp_path):
  mod = tmp_path / "m.py"
  mod.write_text("def f():\n  from jaxseg.ops import auto\n  import jaxseg.ops.xla\n")
  modules = _modules()
  assert _edges("jaxseg.fake", mod, modules) == {"jaxseg.ops.auto", "jaxseg.ops.xla"}


@pytest.mark.parametrize("module", ["jaxseg.ops.xla", "jaxseg.ops._common", "jaxseg.ops.sharding",
                                    "jaxseg.ops.policy", "jaxseg.registry"])
def test_leaf_modules_import_no_other_op_module(module):
  graph = _graph()
  ops_deps = {d for d in graph[module] if d.startswith("jaxseg.ops") and d != "jaxseg.ops._common"}
  assert not ops_deps, f"{module} imports {sorted(ops_deps)}"
