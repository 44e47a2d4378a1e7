"""Import rules that import-linter and ruff do not check (CI's lint step).

1. No private helper imported across modules: `from kprune.x import _helper`
   (or `from . import _helper`) is refused in kprune/ and tflite_export/. A
   package's private *modules* (`tflite_export/_worker.py`) may be imported
   by the modules of the same package; tests may use anything.
2. No import cycle between modules (each import statement counts, including
   imports inside functions), found with grimp, import-linter's graph
   library.

Run: python .ci/check_imports.py   (exit status 1 and a list when broken)
"""

from __future__ import annotations

import ast
import pathlib
import sys

import grimp

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("kprune", "tflite_export")


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name):
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def private_imports():
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            here = module_name(path)
            is_package = path.name == "__init__.py"
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.ImportFrom):
                    continue
                source = node.module or ""
                if node.level:
                    base = here.split(".") if is_package else here.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    source = ".".join(base + ([source] if source else []))
                if not source.startswith(PACKAGES):
                    continue
                for alias in node.names:
                    name = alias.name
                    if not name.startswith("_") or name.startswith("__"):
                        continue
                    if is_module(f"{source}.{name}"):
                        continue  # a package's private module, imported by name
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports the private "
                                 f"name {name!r} from {source}; make it public where it lives, "
                                 f"or move it to the module that uses it")
    return found


def cycles():
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def strongconnect(v):  # Tarjan, iterative enough for a few hundred modules
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            strongconnect(v)
    return out


def main():
    sys.path.insert(0, str(ROOT))
    problems = private_imports()
    for component in cycles():
        problems.append("import cycle between: " + ", ".join(component))
    for line in problems:
        print(line)
    print(f"check_imports: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
