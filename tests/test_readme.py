"""The README's Python blocks run, in order, in one namespace (TensorFlow leg).

A block preceded by `<!-- skip-test: reason -->` is not run (keep those rare);
shell and pip blocks are ```bash blocks, not Python. The README stays under
300 lines.
"""

import os
import re

import pytest

pytest.importorskip("tensorflow", reason="the README's export block needs TensorFlow")
pytestmark = pytest.mark.tensorflow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
_BLOCK = re.compile(r"(<!-- skip-test:[^>]*-->\s*\n)?```python\n(.*?)```", re.S)


def _blocks():
    text = open(README, encoding="utf-8").read()
    return [(m.group(2), bool(m.group(1)), text[:m.start()].count("\n") + 1)
            for m in _BLOCK.finditer(text)]


def test_readme_is_under_300_lines_and_has_no_literal_newline_escapes():
    text = open(README, encoding="utf-8").read()
    assert len(text.splitlines()) <= 300
    assert "\\n" not in text


def test_readme_python_blocks_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = _blocks()
    assert len(blocks) >= 5 and sum(skip for _, skip, _ in blocks) <= 1
    namespace = {"__name__": "__readme__"}
    for code, skip, line in blocks:
        if skip:
            continue
        try:
            exec(compile(code, f"README.md:{line}", "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"README.md block at line {line} failed: {e!r}") from e
    out = capsys.readouterr().out
    assert "80.00%" in out  # the quickstart's sparsity report


def test_readme_links_point_to_files_that_exist():
    text = open(README, encoding="utf-8").read()
    targets = {t.split("#")[0] for t in re.findall(r"\]\(([^)]+)\)", text)
               if not t.startswith(("http", "#"))}
    missing = [t for t in sorted(targets) if not os.path.exists(os.path.join(ROOT, t))]
    assert targets and not missing, missing
