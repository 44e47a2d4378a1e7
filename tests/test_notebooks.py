"""The tutorials in notebooks/: stored outputs are current, and each one runs (KPRUNE_FAST=1).

"Current" is defined in kprune/tools/render_notebooks.py (module docstring):
a full-settings render stamp, every code cell executed in one top-to-bottom
run, no stored errors, and a hash chain of the code cell sources that still
matches. Re-render with `python -m kprune.tools.render_notebooks`.
"""

import copy
import pathlib
import re

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

from kprune.tools import render_notebooks as rn  # noqa: E402
from kprune.tools import urls  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
IDS = [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_stored_outputs_are_current(path):
    reasons = rn.stale_reasons(nbformat.read(path, as_version=4))
    assert not reasons, (
        f"{path.name}: the stored outputs are stale:\n  - " + "\n  - ".join(reasons)
        + f"\nRe-render it: python -m kprune.tools.render_notebooks --only {path.stem}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_executes_fast_without_writing_back(path):
    before = path.read_bytes()
    result = rn.render(path, fast=True, timeout=900)  # raises RenderError naming the cell
    assert not result.written
    assert path.read_bytes() == before


def test_every_notebook_is_a_colab_tutorial():
    assert NOTEBOOKS, "notebooks/ has no tutorial"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        first = nb.cells[0]
        assert first.cell_type == "markdown" and urls.colab_url(path.name) in first.source, path.name
        links = re.findall(r"https://colab\.research\.google\.com/github/[^)\s]+",
                           "".join(c.source for c in nb.cells if c.cell_type == "markdown"))
        assert set(links) == {urls.colab_url(path.name)}, path.name
        code = [c for c in nb.cells if c.cell_type == "code"]
        extras = rn.NOTEBOOK_EXTRAS.get(path.name, ("tensorflow",))
        assert code[0].source == urls.install_cell_source(extras), path.name
        assert sum("pip install" in c.source and "google.colab" in c.source
                   for c in code) == 1, path.name  # one clearly marked install cell


def test_the_install_command_installs_a_wheel_built_from_the_repository(tmp_path):
    """What Colab runs (`pip install "kprune[...] @ git+REPOSITORY"`), pointed at a
    wheel built from this working tree, installs kprune and tflite_export."""
    import shlex
    import shutil
    import subprocess
    import sys

    src = tmp_path / "src"
    for name in ("kprune", "tflite_export"):
        shutil.copytree(ROOT / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "-w", str(tmp_path / "dist"), str(src)], check=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("kprune-*.whl")
    commands = set()
    for path in NOTEBOOKS:
        cell = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        commands.add(re.search(r"system\('(pip install[^']*)'\)", cell.source).group(1))
    assert commands == {urls.install_command(e) for e in
                        {rn.NOTEBOOK_EXTRAS.get(p.name, ("tensorflow",)) for p in NOTEBOOKS}}
    for command in sorted(commands):
        args = shlex.split(command)
        assert args[:2] == ["pip", "install"]
        requirement = next(a for a in args if a.startswith("kprune[") and " @ git+" in a)
        assert requirement.endswith(" @ git+" + urls.REPOSITORY)
        local = requirement.split(" @ ")[0] + " @ " + wheel.as_uri()
        target = tmp_path / f"target_{len(requirement)}"
        subprocess.run(pip[:-1] + ["install"] + [local if a == requirement else a for a in args[2:]]
                       + ["--no-index", "--no-deps", "--target", str(target)],
                       check=True, timeout=300)
        assert (target / "kprune" / "__init__.py").exists()
        assert (target / "kprune" / "tools" / "urls.py").exists()
        assert (target / "tflite_export" / "__init__.py").exists()


# ------------------------------------------------------------ the renderer

V4 = nbformat.v4


def _write(path, *sources):
    cells = [V4.new_markdown_cell("# tiny")]
    cells += [V4.new_code_cell(s) for s in sources]
    nbformat.write(V4.new_notebook(cells=cells), path)
    return path


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """A tiny notebook rendered once with full settings (one kernel for several checks)."""
    path = _write(tmp_path_factory.mktemp("nb") / "tiny.ipynb",
                  "import os\nprint('fast' if os.environ.get('KPRUNE_FAST') else 'full')",
                  "",
                  "for i in range(3):\n    print(i, end='\\r')\nprint('end')",
                  "x = 41",
                  "import matplotlib.pyplot as plt\nplt.plot([0, x]); plt.show()")
    result = rn.render(path)
    return path, result, nbformat.read(path, as_version=4)


def test_render_stores_outputs_and_stamps(rendered):
    path, result, nb = rendered
    assert result.written and rn.stale_reasons(nb) == []
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].outputs[0]["text"] == "full\n"  # KPRUNE_FAST is not set for a render
    assert code[1].execution_count is None and "kprune" not in code[1].metadata  # empty cell
    assert code[2].outputs[0]["text"] == "end\n"  # carriage returns resolved
    assert [c.execution_count for c in code if c.source] == [1, 2, 3, 4]
    assert "image/png" in code[4].outputs[0]["data"]
    assert nb.metadata["kprune"]["settings"] == "full"
    assert nb.metadata["kprune"]["kprune_sources_sha256"] == rn.library_sources_sha256()


def _reasons_after(nb, edit):
    nb = copy.deepcopy(nb)
    edit(nb)
    return rn.stale_reasons(nb)


def test_editing_a_cell_makes_it_stale(rendered):
    nb = rendered[2]
    reasons = _reasons_after(nb, lambda n: setattr(n.cells[4], "source", "x = 42"))
    assert len(reasons) == 1 and "cell 4 ('x = 42') was edited" in reasons[0]


def test_editing_an_earlier_cell_makes_later_cells_stale(rendered):
    nb = rendered[2]

    def delete_first_code_cell(n):
        del n.cells[1]

    reasons = _reasons_after(nb, delete_first_code_cell)
    assert "is unchanged, but a code cell before it was edited" in reasons[0]
    reasons = _reasons_after(nb, lambda n: n.cells.insert(2, V4.new_code_cell("y = 1")))
    assert "cell 2 ('y = 1') has no stored outputs" in reasons[0]


def test_markdown_edits_do_not_make_outputs_stale(rendered):
    nb = rendered[2]
    assert _reasons_after(nb, lambda n: setattr(n.cells[0], "source", "# renamed")) == []


def test_fast_renders_and_other_versions_are_stale(rendered):
    nb = rendered[2]
    reasons = _reasons_after(nb, lambda n: n.metadata["kprune"].update(settings="fast"))
    assert reasons == ["rendered with settings 'fast', expected 'full'"]
    reasons = _reasons_after(nb, lambda n: n.metadata["kprune"].update(kprune_version="0.0.1"))
    assert reasons and "rendered with kprune 0.0.1" in reasons[0]
    reasons = _reasons_after(nb, lambda n: n.metadata.pop("kprune"))
    assert "never rendered" in reasons[0]


def test_a_figure_cell_without_its_image_is_stale(rendered):
    nb = rendered[2]
    reasons = _reasons_after(nb, lambda n: setattr(n.cells[5], "outputs", []))
    assert reasons == ["cell 5 ('import matplotlib.pyplot as plt') calls plt.show() but stores "
                       "no image/png output"]


def test_a_failing_cell_is_named_and_the_file_is_unchanged(tmp_path):
    path = _write(tmp_path / "bad.ipynb", "x = 1", 'raise KeyError("missing column")')
    before = path.read_bytes()
    with pytest.raises(rn.RenderError, match=r"bad\.ipynb: cell 2 \('raise KeyError\(\"missing "
                                             r"column\"\)'\), code cell 2/2 raised KeyError"):
        rn.render(path)
    assert path.read_bytes() == before


def test_the_notebook_budget_interrupts_a_slow_cell(tmp_path):
    path = _write(tmp_path / "slow.ipynb", "import time", "time.sleep(120)")
    before = path.read_bytes()
    with pytest.raises(rn.RenderError, match=r"slow\.ipynb: cell 2 \('time\.sleep\(120\)'\).* "
                                             r"timed out"):
        rn.render(path, timeout=4)
    assert path.read_bytes() == before


def test_only_selects_by_name_stem_or_prefix(tmp_path):
    paths = [tmp_path / n for n in ("01_a.ipynb", "02_b.ipynb", "021_c.ipynb")]
    assert rn.select(["01"], paths) == [paths[0]]
    assert rn.select(["02_b", "01_a.ipynb"], paths) == paths[:2]
    with pytest.raises(ValueError, match=r"--only '02' is ambiguous: 02_b.ipynb, 021_c.ipynb"):
        rn.select(["02"], paths)
    with pytest.raises(ValueError, match=r"--only '09' matches no notebook\. Available: 01_a"):
        rn.select(["09"], paths)


@pytest.mark.parametrize("kwargs", [dict(timeout=0), dict(timeout=True), dict(cell_timeout=-1)])
def test_bad_timeouts_are_rejected(tmp_path, kwargs):
    path = _write(tmp_path / "t.ipynb", "x = 1")
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds"):
        rn.render(path, **kwargs)


def test_check_reports_stale_notebooks(tmp_path, capsys):
    _write(tmp_path / "never.ipynb", "x = 1")
    assert rn.main(["--check", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "never.ipynb: STALE" in out and "never rendered" in out
