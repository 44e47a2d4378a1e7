"""Executes the tutorials in `notebooks/` with full settings and stores their outputs.

Run it from the root of a clone (with the `dev` extras installed):

    python -m kprune.tools.render_notebooks              # every notebooks/*.ipynb
    python -m kprune.tools.render_notebooks --only 03    # one (file name, stem or unique prefix)
    python -m kprune.tools.render_notebooks --check      # report stale notebooks, run nothing
    python -m kprune.tools.render_notebooks --fast       # KPRUNE_FAST=1 smoke run, no writes

Each notebook runs top to bottom in a fresh `python3` kernel whose working
directory is a temporary folder (files a notebook writes are thrown away) and
whose `PYTHONPATH` starts with the repository root, so the kernel imports the
clone's `kprune`. `KPRUNE_FAST` is removed from the kernel's environment (the
notebooks then use their full settings), `MPLBACKEND` is removed (so figures
are stored as PNG by the inline backend) and `TF_CPP_MIN_LOG_LEVEL` defaults
to 2. Output written directly to the process's file descriptors by C/C++
code (TensorFlow's absl start-up lines, CUDA probing, the XNNPACK delegate
notice) is not captured into the notebook (`capture_fd_output=False`); all
Python-level output (print, warnings, Keras logs, figures) is. Carriage
returns in stream outputs are resolved (a progress bar is stored as its last
state).

A notebook is written back only when every cell succeeded; on a failure or a
timeout the file is left unchanged and the error names the notebook, the cell
(its index in the notebook and its first line) and the exception. Other
notebooks are still rendered; the exit status is 1 when any failed.

What "the stored outputs are current" means
-------------------------------------------
`stale_reasons(notebook)` (used by `--check` and by `tests/test_notebooks.py`)
returns an empty list exactly when all of the following hold:

1. The notebook metadata carries a render stamp `metadata["kprune"]` written
   by this renderer with `"settings": "full"` (not a `--fast` run; `--fast`
   never writes) and `"kprune_version"` equal to the current
   `kprune.__version__` (a release re-renders the notebooks).
2. Every code cell with a non-empty source was executed by that render:
   its `execution_count` is set, the counts are 1, 2, 3, ... in notebook
   order (one top-to-bottom run) and no stored output is an error.
   "Outputs present" means executed: a cell that prints nothing legitimately
   stores an empty output list. A cell whose source calls `plt.show()` must
   store at least one `image/png` output.
3. Every such cell's `metadata["kprune"]["chain_sha256"]` equals the hash
   chain of the code sources up to and including that cell:
   `chain_0 = ""`, `chain_i = sha256(chain_{i-1} + "\\0" + sha256(source_i))`
   over the code cells in order (markdown cells do not count; source is the
   cell text exactly as stored, except the install cell, whose first line is
   `kprune.tools.urls.INSTALL_MARKER`: it installs only on Colab, so it
   counts as that marker line and its URL can change without a re-render). A cell's output depends on every cell run
   before it, so editing, inserting, deleting or reordering a code cell marks
   that cell and every later code cell as stale, not only the edited one.

Deliberately **not** required: that the library code is unchanged since the
render. The stamp records `kprune_sources_sha256` (a hash of every `.py` file
of `kprune/` and `tflite_export/`) and the keras, tensorflow and Python
versions; `--check` reports a changed library as a note, not as staleness,
because the library changes with almost every commit while a full render
takes minutes per notebook. Re-render before a release and after changing
what a notebook shows.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import importlib.metadata
import os
import pathlib
import platform
import re
import sys
import tempfile
import time

from kprune.tools import urls

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
STAMP_KEY = "kprune"
DEFAULT_TIMEOUT = 1800
INSTALL_MARKER = urls.INSTALL_MARKER
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class RenderError(RuntimeError):
    """A notebook could not be rendered; the message names the notebook and the cell."""


@dataclasses.dataclass
class RenderResult:
    """What one render did.

    Attributes:
        path: the notebook file.
        seconds: wall-clock time of the whole render (kernel start included).
        cell_seconds: `{cell_index: seconds}` for every executed code cell.
        written: whether the notebook file was rewritten.
    """

    path: pathlib.Path
    seconds: float
    cell_seconds: dict
    written: bool


def _sha256(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _code_cells(nb):
    """(index, cell) for every code cell with a non-empty source (the ones a kernel runs)."""
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip()]


def source_chain(nb):
    """Hashes of the code cells of a notebook, in order.

    Args:
        nb: an `nbformat` notebook (version 4).

    Returns:
        A list of `(cell_index, source_sha256, chain_sha256)`, one per code
        cell with a non-empty source. `chain_sha256` covers this cell's
        source and every code source before it (see the module docstring).

    Example:
    >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    >>> [i for i, _, _ in source_chain(nb)]
    [0]
    """
    chain, out = "", []
    for index, cell in _code_cells(nb):
        # The install cell (kprune.tools.urls) does nothing outside Colab: its
        # text (the repository URL) does not change any stored output.
        own = _sha256(INSTALL_MARKER if cell.source.startswith(INSTALL_MARKER) else cell.source)
        chain = _sha256(chain + "\0" + own)
        out.append((index, own, chain))
    return out


def _first_line(cell):
    lines = [ln for ln in cell.source.splitlines() if ln.strip()]
    line = lines[0].strip() if lines else ""
    return line if len(line) <= 60 else line[:57] + "..."


def _describe(nb, index):
    return f"cell {index} ({_first_line(nb.cells[index])!r})"


def library_sources_sha256(root=ROOT):
    """Hash of every `.py` file of `kprune/` and `tflite_export/` under `root`.

    Args:
        root: the repository root.

    Returns:
        A hex sha256 over the sorted relative paths and file contents.

    Example:
    >>> len(library_sources_sha256())
    64
    """
    h = hashlib.sha256()
    root = pathlib.Path(root)
    for package in ("kprune", "tflite_export"):
        for f in sorted((root / package).rglob("*.py")):
            h.update(f.relative_to(root).as_posix().encode() + b"\0")
            h.update(f.read_bytes() + b"\0")
    return h.hexdigest()


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _kprune_version(root=ROOT):
    """`__version__` of the clone's kprune, read without importing it (no TensorFlow start-up)."""
    text = (pathlib.Path(root) / "kprune" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.M)
    return match.group(1) if match else None


def stale_reasons(nb):
    """Why a notebook's stored outputs are not current (empty list: current).

    Args:
        nb: an `nbformat` notebook (version 4), as read from disk.

    Returns:
        A list of human-readable reasons; the rules are in the module
        docstring. Each reason names the cell it is about.

    Example:
    >>> nb = nbformat.read("notebooks/01_prune_during_fit.ipynb", as_version=4)
    >>> stale_reasons(nb)
    []
    """
    stamp = nb.metadata.get(STAMP_KEY)
    if not isinstance(stamp, dict):
        return ["the notebook has no render stamp (metadata['kprune']): it was never rendered "
                "by kprune.tools.render_notebooks"]
    reasons = []
    if stamp.get("settings") != "full":
        reasons.append(f"rendered with settings {stamp.get('settings')!r}, expected 'full'")
    current = _kprune_version()
    if stamp.get("kprune_version") != current:
        reasons.append(f"rendered with kprune {stamp.get('kprune_version')}, the code is "
                       f"kprune {current}")
    expected_count = 1
    for (index, own, chain) in source_chain(nb):
        cell = nb.cells[index]
        where = _describe(nb, index)
        mark = cell.metadata.get(STAMP_KEY) or {}
        if cell.get("execution_count") is None:
            reasons.append(f"{where} has no stored outputs (never executed)")
            return reasons
        if mark.get("chain_sha256") != chain:
            if "chain_sha256" not in mark:
                why = "has no source stamp"
            elif mark.get("source_sha256") != own:
                why = "was edited after the render"
            else:
                why = "is unchanged, but a code cell before it was edited, added, removed or moved"
            reasons.append(f"{where} {why}: its stored outputs (and those of every later code "
                           f"cell) may not come from the current sources")
            return reasons
        if cell.execution_count != expected_count:
            reasons.append(f"{where} has execution count {cell.execution_count}, expected "
                           f"{expected_count}: the outputs are not from one top-to-bottom run")
            return reasons
        expected_count += 1
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if errors:
            reasons.append(f"{where} stores an error output: {errors[0].get('ename')}: "
                           f"{errors[0].get('evalue')}")
        if "plt.show()" in cell.source and not any(
                "image/png" in o.get("data", {}) for o in cell.get("outputs", [])):
            reasons.append(f"{where} calls plt.show() but stores no image/png output")
    return reasons


def library_changed(nb, root=ROOT):
    """Whether `kprune/` or `tflite_export/` changed since the notebook was rendered.

    Args:
        nb: an `nbformat` notebook (version 4).
        root: the repository root.

    Returns:
        True when the stamp's `kprune_sources_sha256` differs from the
        current sources (or there is no stamp).

    Example:
    >>> library_changed(nbformat.read("notebooks/01_prune_during_fit.ipynb", as_version=4))
    False
    """
    stamp = nb.metadata.get(STAMP_KEY) or {}
    return stamp.get("kprune_sources_sha256") != library_sources_sha256(root)


def _kernel_env(fast):
    env = dict(os.environ)
    env.pop("KPRUNE_FAST", None)
    env.pop("MPLBACKEND", None)
    if fast:
        env["KPRUNE_FAST"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("PYTHONHASHSEED", "0")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _error_text(exc):
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    tb = getattr(exc, "traceback", None)
    tail = ""
    if isinstance(tb, str):
        lines = [ln for ln in _ANSI.sub("", tb).splitlines() if ln.strip(" -")]
        tail = "\n".join("    " + ln for ln in lines[-8:])
    return f"{ename}: {evalue}" + (f"\n  traceback (last lines):\n{tail}" if tail else "")


#: kprune extras a notebook's install cell installs (default: `("tensorflow",)`).
NOTEBOOK_EXTRAS = {
    "07_one_shot_pruning.ipynb": ("tensorflow", "hub"),
    "09_any_model_kerashub.ipynb": ("tensorflow", "hub"),
    "11_llm_width_depth_distill.ipynb": ("tensorflow", "hub"),
}
_COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/[^)\s]+")


def _is_install_cell(cell):
    text = cell.source
    return text.startswith(INSTALL_MARKER) or (
        "google.colab" in text and "pip install" in text and len(text.splitlines()) <= 5)


def update_install_cells(path):
    """Points a notebook's Colab badge and install cell at `kprune.tools.urls`.

    The install cell becomes the first code cell (inserted when the notebook
    has none, later execution counts shifted by one as a render would number
    them). The cell does nothing outside Colab, so the stored outputs stay
    those of the current sources: a notebook that was current is re-stamped
    (its source hash chain recomputed), one that was stale stays stale.

    Args:
        path: the `.ipynb` file.

    Returns:
        True when the file was rewritten.

    Example:
    >>> update_install_cells(pathlib.Path("notebooks/01_prune_during_fit.ipynb"))
    False
    """
    import nbformat

    path = pathlib.Path(path)
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    was_current = not stale_reasons(nb)
    for cell in nb.cells:
        if cell.cell_type == "markdown" and _COLAB_LINK.search(cell.source):
            cell.source = _COLAB_LINK.sub(urls.colab_url(path.name), cell.source)
    source = urls.install_cell_source(NOTEBOOK_EXTRAS.get(path.name, ("tensorflow",)))
    code = [c for c in nb.cells if c.cell_type == "code"]
    if code and _is_install_cell(code[0]):
        code[0].source = source
    else:
        cell = nbformat.v4.new_code_cell(source)
        cell.execution_count = 1 if was_current else None
        for c in code:
            if c.get("execution_count") is not None:
                c.execution_count += 1
        first = nb.cells.index(code[0]) if code else len(nb.cells)
        nb.cells.insert(first, cell)
    if was_current:
        for index, own, chain in source_chain(nb):
            mark = dict(nb.cells[index].metadata.get(STAMP_KEY) or {})
            mark.update(source_sha256=own, chain_sha256=chain)
            mark.setdefault("seconds", 0.0)
            nb.cells[index].metadata[STAMP_KEY] = mark
    after = nbformat.writes(nb)
    if after == before:
        return False
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".ipynb")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(after)
    os.replace(tmp, path)
    return True


def render(path, *, timeout=DEFAULT_TIMEOUT, cell_timeout=None, fast=False, write=True,
           kernel_name="python3", log=None):
    """Executes one notebook top to bottom in a fresh kernel and stores the outputs.

    Args:
        path: the `.ipynb` file.
        timeout: seconds for the whole notebook (kernel start excluded); a
            cell still running when the budget is spent is interrupted.
        cell_timeout: optional seconds limit for any single cell.
        fast: run with `KPRUNE_FAST=1` (the test suite's small settings). A
            fast run is never written back.
        write: write the executed notebook back to `path` (full runs only).
        kernel_name: the Jupyter kernel to use.
        log: optional `fn(str)` called with one line per executed cell.

    Returns:
        A `RenderResult`.

    Raises:
        RenderError: a cell raised, the kernel died or the time budget ran
            out; the message names the notebook and the cell, and the file
            is left unchanged.
        ValueError: `timeout` or `cell_timeout` is not a positive number.

    Example:
    >>> result = render("notebooks/01_prune_during_fit.ipynb")
    >>> print(f"{result.path.name}: {result.seconds:.0f} s")
    """
    import nbclient
    import nbformat
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    for name, value in (("timeout", timeout), ("cell_timeout", cell_timeout)):
        if value is None and name == "cell_timeout":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}.")
    path = pathlib.Path(path)
    nb = nbformat.read(path, as_version=4)
    chain = {index: (own, ch) for index, own, ch in source_chain(nb)}
    total = len(chain)
    start = time.monotonic()
    cell_seconds = {}
    with tempfile.TemporaryDirectory(prefix="kprune-render-") as cwd:
        client = nbclient.NotebookClient(
            nb, timeout=int(timeout), kernel_name=kernel_name, record_timing=False,
            coalesce_streams=True, resources={"metadata": {"path": cwd}},
            # C/C++ libraries' own log lines (TensorFlow's absl start-up lines,
            # CUDA probing, the XNNPACK delegate notice) go to the renderer's
            # terminal, not into the stored outputs: they describe the
            # rendering machine, not the tutorial. Python-level output is kept.
            extra_arguments=["--IPKernelApp.capture_fd_output=False"])
        try:
            with client.setup_kernel(env=_kernel_env(fast), cwd=cwd):
                info = client.wait_for_reply(client.kc.kernel_info())
                if info is not None and "language_info" in info["content"]:
                    nb.metadata["language_info"] = info["content"]["language_info"]
                deadline = time.monotonic() + timeout
                for number, index in enumerate(chain, 1):
                    cell = nb.cells[index]
                    where = f"{path.name}: {_describe(nb, index)}, code cell {number}/{total}"
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise RenderError(f"{where} not started: the notebook's {timeout:g} s "
                                          f"budget is spent; the file is unchanged. Raise "
                                          f"--timeout or make the notebook faster.")
                    limit = remaining if cell_timeout is None else min(remaining, cell_timeout)
                    client.timeout = max(1, int(limit + 0.999))
                    t0 = time.monotonic()
                    try:
                        client.execute_cell(cell, index, execution_count=number)
                    except CellTimeoutError:
                        raise RenderError(
                            f"{where} timed out after {time.monotonic() - t0:.0f} s (notebook "
                            f"budget {timeout:g} s, cell limit {cell_timeout or 'none'}); the "
                            f"file is unchanged. Raise --timeout/--cell-timeout or make the "
                            f"cell faster.") from None
                    except CellExecutionError as exc:
                        raise RenderError(f"{where} raised {_error_text(exc)}\nThe file is "
                                          f"unchanged.") from None
                    except DeadKernelError as exc:
                        raise RenderError(f"{where}: the kernel died ({exc}); the file is "
                                          f"unchanged.") from None
                    seconds = time.monotonic() - t0
                    cell_seconds[index] = seconds
                    own, ch = chain[index]
                    cell.metadata[STAMP_KEY] = {"source_sha256": own, "chain_sha256": ch,
                                                "seconds": round(seconds, 1)}
                    if log is not None:
                        log(f"  {where}: {seconds:.1f} s")
        except RenderError:
            raise
        except Exception as exc:  # kernel start-up failures and the like
            raise RenderError(f"{path.name}: could not run the notebook: {type(exc).__name__}: "
                              f"{exc}; the file is unchanged.") from None
    seconds = time.monotonic() - start
    written = bool(write and not fast)
    if written:
        nb.metadata[STAMP_KEY] = {
            "settings": "full",
            "kprune_version": _kprune_version(),
            "kprune_sources_sha256": library_sources_sha256(),
            "keras": _version("keras"),
            "tensorflow": _version("tensorflow"),
            "python": platform.python_version(),
            "rendered_at": datetime.datetime.now(datetime.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%SZ"),
            "seconds": round(seconds, 1),
        }
        tmp = path.with_name(path.name + ".rendering")
        nbformat.write(nb, tmp)
        os.replace(tmp, path)
    return RenderResult(path=path, seconds=seconds, cell_seconds=cell_seconds, written=written)


def select(names, notebooks):
    """The notebooks named by `--only` values.

    Args:
        names: file names, stems or unique prefixes (`"03"`), or paths.
        notebooks: the available notebook paths.

    Returns:
        The matching paths, in the order of `notebooks`.

    Raises:
        ValueError: a name matches no notebook or several.

    Example:
    >>> [p.name for p in select(["03"], sorted(NOTEBOOK_DIR.glob("*.ipynb")))]
    ['03_pruning_at_initialization.ipynb']
    """
    chosen = set()
    available = ", ".join(p.name for p in notebooks) or "none"
    for name in names:
        base = pathlib.Path(name).name
        exact = [p for p in notebooks if base in (p.name, p.stem)]
        matches = exact or [p for p in notebooks if p.name.startswith(base)]
        if len(matches) != 1:
            what = "matches no notebook" if not matches else (
                "is ambiguous: " + ", ".join(p.name for p in matches))
            raise ValueError(f"--only {name!r} {what}. Available: {available}.")
        chosen.add(matches[0])
    return [p for p in notebooks if p in chosen]


def main(argv=None):
    """Command-line entry point; returns the exit status.

    Args:
        argv: the arguments (default `sys.argv[1:]`).

    Returns:
        0 when every selected notebook rendered (or, with `--check`, is
        current), 1 otherwise, 2 for bad arguments.

    Example:
    >>> status = main(["--check", "--only", "01"])
    """
    import nbformat

    parser = argparse.ArgumentParser(
        prog="python -m kprune.tools.render_notebooks",
        description="Execute notebooks/*.ipynb with full settings and store their outputs.")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="render only this notebook (file name, stem or unique prefix such "
                             "as 03); repeatable")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds per notebook (default {DEFAULT_TIMEOUT})")
    parser.add_argument("--cell-timeout", type=float, default=None,
                        help="seconds per cell (default: only the notebook budget)")
    parser.add_argument("--check", action="store_true",
                        help="execute nothing; list notebooks whose stored outputs are stale")
    parser.add_argument("--fast", action="store_true",
                        help="execute with KPRUNE_FAST=1 as the tests do; writes nothing")
    parser.add_argument("--install-cells", action="store_true",
                        help="execute nothing; point badges and install cells at "
                        "kprune.tools.urls.REPOSITORY")
    parser.add_argument("--dir", default=str(NOTEBOOK_DIR),
                        help="the notebook folder (default: the repository's notebooks/)")
    args = parser.parse_args(argv)
    notebooks = sorted(pathlib.Path(args.dir).glob("*.ipynb"))
    if not notebooks:
        print(f"no notebooks in {args.dir}", file=sys.stderr)
        return 2
    try:
        chosen = select(args.only, notebooks) if args.only else notebooks
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.install_cells:
        for path in chosen:
            print(f"{path.name}: {'updated' if update_install_cells(path) else 'unchanged'}")
        return 0
    if args.check:
        stale = 0
        for path in chosen:
            nb = nbformat.read(path, as_version=4)
            reasons = stale_reasons(nb)
            stale += bool(reasons)
            status = "STALE" if reasons else "current"
            note = "" if reasons or not library_changed(nb) else (
                " (note: kprune/tflite_export changed since this render)")
            print(f"{path.name}: {status}{note}")
            for r in reasons:
                print(f"  - {r}")
        return 1 if stale else 0
    failed, summary = [], []
    for path in chosen:
        mode = "fast (not written)" if args.fast else "full"
        print(f"{path.name}: rendering, {mode} settings", flush=True)
        try:
            result = render(path, timeout=args.timeout, cell_timeout=args.cell_timeout,
                            fast=args.fast, log=lambda line: print(line, flush=True))
        except (RenderError, ValueError) as exc:
            print(f"FAILED {exc}", file=sys.stderr, flush=True)
            failed.append(path.name)
            summary.append(f"  {path.name}: FAILED")
            continue
        summary.append(f"  {path.name}: {result.seconds:.0f} s"
                       + ("" if result.written else " (not written)"))
    print("summary:\n" + "\n".join(summary))
    if failed:
        print(f"{len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
