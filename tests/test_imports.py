"""The package's import graph has no cycle, counting imports inside functions too.

Every `import` / `from ... import` anywhere in a module of `jaxseg` or
`kernels` (module level or inside a function: a function-level import is how
a cycle gets held open) is an edge to the first-party module it names; a
package's `__init__` counts as the package, so a submodule that imports a
name from its own package's `__init__` closes a cycle too. A cycle is
reported with its path.

Second check, on the same AST walk: no file under tests/ or experiments/ assigns
an attribute of a jaxseg module or monkeypatches one (see
`patches_of_first_party_modules`); variants are values passed in.
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


# ---------------------------------------------------------------- no patched jaxseg modules
# Tests and experiments pass variants in as values (ConvPolicy, arguments); they never assign
# an attribute of a first-party module or `monkeypatch.setattr` one. A name is "first-party"
# when an import from jaxseg / kernels binds it, or when it is assigned from an expression on
# such a name or from `importlib.import_module("jaxseg...")`. Flagged: an assignment, augmented
# assignment or `del` whose target is an attribute or item reached from such a name
# (`ops.conv.X = ...`, `auto.ROUTE_NOTES["k"] = ...`), `setattr` / `delattr` on one, and
# `monkeypatch.setattr` / `delattr` / `setitem` / `delitem` and `mock.patch(.object)` on one or
# on a "jaxseg.*" / "kernels.*" string. sys- and os-level patching (setenv, sys.modules) is fine.

PATCH_CALLS = ("setattr", "delattr", "setitem", "delitem")
MOCK_CALLS = ("patch", "object")
CHECKED_DIRS = ("tests", "experiments")


def _first_party(name: str) -> bool:
  return name.split(".")[0] in PACKAGES


def _root(node):
  """The Name an attribute/subscript/call chain starts from (None for anything else)."""
  while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
    node = node.func if isinstance(node, ast.Call) else node.value
  return node.id if isinstance(node, ast.Name) else None


def _imports_module(node) -> bool:
  """importlib.import_module("jaxseg...") / __import__("jaxseg...")."""
  if not isinstance(node, ast.Call) or not node.args or not isinstance(node.args[0], ast.Constant):
    return False
  func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
  arg = node.args[0].value
  return func in ("import_module", "__import__") and isinstance(arg, str) and _first_party(arg)


def _bound_names(tree) -> set[str]:
  bound = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for a in node.names:
        if _first_party(a.name):
          bound.add(a.asname or a.name.split(".")[0])
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level and _first_party(node.module):
      bound.update(a.asname or a.name for a in node.names)
  # Aliases, to a fixed point: m = jaxseg.ops.conv; m = importlib.import_module("jaxseg.ops").
  changed = True
  while changed:
    changed = False
    for node in ast.walk(tree):
      if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        name, value = node.targets[0].id, node.value
        aliased = isinstance(value, (ast.Name, ast.Attribute)) and _root(value) in bound
        if name not in bound and (aliased or _imports_module(value)):
          bound.add(name)
          changed = True
  return bound


def _patched_target(node, bound) -> bool:
  """An attribute or item of a first-party name (not the bare name: rebinding a local is fine)."""
  return isinstance(node, (ast.Attribute, ast.Subscript)) and _root(node) in bound


def _first_party_arg(node, bound) -> bool:
  if isinstance(node, ast.Constant) and isinstance(node.value, str):
    return _first_party(node.value)
  return _root(node) in bound or _imports_module(node)


def _patchers(tree) -> dict[str, int]:
  """Functions of this file that patch their own argument: name -> that argument's position.

  E.g. ``def _patched(obj, name, value): setattr(obj, name, value)`` or a helper whose
  parameter is the root of an assignment target (``d[key] = value``), so that
  ``_patched(ops, "conv", f)`` is caught like ``setattr(ops, "conv", f)``.
  """
  out = {}
  for fn in ast.walk(tree):
    if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
      continue
    params = [a.arg for a in fn.args.posonlyargs + fn.args.args]
    for node in ast.walk(fn):
      hit = None
      if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr")
          and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in params):
        hit = node.args[0].id
      elif isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
        for t in getattr(node, "targets", None) or [node.target]:
          if isinstance(t, (ast.Attribute, ast.Subscript)) and _root(t) in params:
            hit = _root(t)
      if hit is not None:
        out[fn.name] = params.index(hit)
        break
  return out


def patches_of_first_party_modules(source: str, filename: str = "<string>") -> list[str]:
  """'line N: what' for every place `source` patches a jaxseg (or kernels) module."""
  tree = ast.parse(source, filename)
  bound = _bound_names(tree)
  patchers = _patchers(tree)
  found = []
  for node in ast.walk(tree):
    targets = []
    if isinstance(node, ast.Assign):
      targets = node.targets
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
      targets = [node.target]
    elif isinstance(node, ast.Delete):
      targets = node.targets
    for t in targets:
      for sub in ast.walk(t):   # tuple targets: a, ops.X = ...
        if _patched_target(sub, bound):
          found.append(f"line {node.lineno}: assigns {ast.unparse(sub)}")
          break
    if isinstance(node, ast.Call) and node.args:
      func = node.func
      name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
      first = node.args[0]
      if name in ("setattr", "delattr") and isinstance(func, ast.Name) and _first_party_arg(first, bound):
        found.append(f"line {node.lineno}: {name}({ast.unparse(first)}, ...)")
      elif isinstance(func, ast.Attribute) and name in PATCH_CALLS + MOCK_CALLS and _first_party_arg(first, bound):
        found.append(f"line {node.lineno}: {ast.unparse(func)}({ast.unparse(first)}, ...)")
      elif isinstance(func, ast.Name) and name == "patch" and _first_party_arg(first, bound):
        found.append(f"line {node.lineno}: patch({ast.unparse(first)}, ...)")
      elif (isinstance(func, ast.Name) and name in patchers and len(node.args) > patchers[name]
            and _first_party_arg(node.args[patchers[name]], bound)):
        found.append(f"line {node.lineno}: {name}({ast.unparse(node.args[patchers[name]])}, ...) patches its argument")
  return found


def test_no_test_or_experiment_patches_a_jaxseg_module():
  found = []
  for d in CHECKED_DIRS:
    for path in sorted((ROOT / d).rglob("*.py")):
      found += [f"{path.relative_to(ROOT)} {f}"
                for f in patches_of_first_party_modules(path.read_text(), str(path))]
  assert not found, "variants must be values passed in, not patched modules:\n" + "\n".join(found)


@pytest.mark.parametrize("source", [
    "from jaxseg.ops import phase\nphase.ROWS = False\n",
    "import jaxseg.ops.cpu.winograd\njaxseg.ops.cpu.winograd.ENABLED = False\n",
    "from jaxseg import ops as o\no.auto.CPU += 'x'\n",
    "from jaxseg.ops import auto\nauto.ROUTE_NOTES['xla'] = 'patched'\n",
    "from jaxseg.ops import auto\ndel auto.ROUTE_NOTES\n",
    "def f(monkeypatch):\n  from jaxseg import losses\n  monkeypatch.setattr(losses, 'get', None)\n",
    "def f(monkeypatch):\n  monkeypatch.setattr('jaxseg.losses.get', None)\n",
    "def f(monkeypatch):\n  from jaxseg.ops import auto\n  monkeypatch.setitem(auto.ROUTE_NOTES, 'xla', '')\n",
    "import importlib\nm = importlib.import_module('jaxseg.ops.conv')\nm.tap_slices = None\n",
    "from jaxseg import ops\nm = ops.phase\nsetattr(m, 'ROWS', False)\n",
    "from unittest import mock\nwith mock.patch('jaxseg.ops.cpu.build.available', lambda: False):\n  pass\n",
    "from unittest import mock\nfrom jaxseg.ops.cpu import build\nmock.patch.object(build, 'available')\n",
    "from kernels import conv\nconv.BlockSizes = None\n",
    "def _patched(obj, name, value):\n  old = getattr(obj, name)\n  setattr(obj, name, value)\n"
    "def v():\n  from jaxseg.ops import phase\n  return _patched(phase, 'ROWS', False)\n",
    "def _item(d, key, value):\n  d[key] = value\n"
    "from jaxseg import losses\n_item(losses.LOSSES, 'ce', None)\n",
])
def test_the_patch_check_finds_a_patch(source):
  found = patches_of_first_party_modules(source)
  assert len(found) == 1, found


@pytest.mark.parametrize("source", [
    "def f(monkeypatch):\n  monkeypatch.setenv('JAXSEG_CACHE_DIR', '/tmp')\n  monkeypatch.setattr('sys.unraisablehook', None)\n",
    "import sys\nsys.modules['torch'] = None\n",
    "import dataclasses\nfrom jaxseg.ops import DEFAULT_POLICY\np = dataclasses.replace(DEFAULT_POLICY, winograd=False)\n",
    "from jaxseg.train import TrainConfig\ncfg = TrainConfig()\ncfg.epochs = 3\n",
    "from jaxseg import ops\nops = None\n",
    "import numpy as np\na = np.zeros(3)\na[0] = 1\n",
    "def _item(d, key, value):\n  d[key] = value\n"
    "from jaxseg import losses\n_item({}, 'ce', losses.get)\n",
])
def test_the_patch_check_passes_values(source):
  assert patches_of_first_party_modules(source) == []
