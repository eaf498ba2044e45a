"""The codebase's layout rules, read from the source with `ast`: entry points stay apart, public functions say what they do."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "tx_jax"
ENTRY_POINTS = {"train", "evaluate", "translate", "generate", "visualize", "average", "compare", "import_hf",
                "export_hf"}


def _modules():
  """(dotted name, parsed tree) of every module in the package."""
  for path in sorted(PACKAGE.rglob("*.py")):
    name = ".".join(("tx_jax",) + path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
    yield name, ast.parse(path.read_text(), filename=str(path))


def _imported(tree):
  """Every tx_jax module a tree imports, as dotted names (`from tx_jax import a` gives tx_jax.a)."""
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      yield node.module
      yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_no_module_imports_an_entry_point():
  """An entry point never imports another, and library modules import none (tests and experiments may)."""
  entry_modules = {f"tx_jax.{name}" for name in ENTRY_POINTS}
  offenders = [f"{name} imports {target}" for name, tree in _modules() for target in set(_imported(tree))
               if target in entry_modules and target != name]
  assert not offenders, offenders


def _base_names(node):
  """The simple names of a class's bases (`base.Task` gives Task)."""
  return [b.id if isinstance(b, ast.Name) else b.attr for b in node.bases if isinstance(b, (ast.Name, ast.Attribute))]


def _documented_in_bases(classes, class_name, method):
  """Whether some ancestor of `class_name` within the package defines `method` with a docstring."""
  for base in _base_names(classes[class_name]) if class_name in classes else ():
    if base in classes and (any(isinstance(f, ast.FunctionDef) and f.name == method and ast.get_docstring(f)
                                for f in classes[base].body) or _documented_in_bases(classes, base, method)):
      return True
  return False


def test_every_public_function_has_a_docstring():
  """Module-level functions and public methods carry a docstring (an override may rely on its base class's)."""
  modules = list(_modules())
  classes = {node.name: node for _, tree in modules for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
  missing = []
  for name, tree in modules:
    for node in tree.body:
      if isinstance(node, ast.FunctionDef) and not node.name.startswith("_") and ast.get_docstring(node) is None:
        missing.append(f"{name}.{node.name}")
      if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
        for method in node.body:
          if isinstance(method, ast.FunctionDef) and not method.name.startswith("_") \
              and ast.get_docstring(method) is None \
              and not _documented_in_bases(classes, node.name, method.name):
            missing.append(f"{name}.{node.name}.{method.name}")
  assert not missing, missing


def test_every_module_has_a_docstring():
  """Each module opens with a line saying what it is for."""
  missing = [name for name, tree in _modules() if ast.get_docstring(tree) is None]
  assert not missing, missing
