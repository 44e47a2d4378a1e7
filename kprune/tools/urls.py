"""The one canonical repository URL, and what the notebooks derive from it.

Every notebook's "Open in Colab" badge and its install cell come from
`REPOSITORY` (tests/test_notebooks.py checks both). kprune is not on the
package index: Colab installs it from the repository with pip's `git+` URL,
and tests/test_notebooks.py runs the same command against a wheel built from
the working tree (`pip wheel --no-deps`, then `pip install --no-index`).
To move the repository, change `REPOSITORY` and run
`python -m kprune.tools.render_notebooks --install-cells` (it rewrites the
badges and install cells; their outputs do not change: see
`render_notebooks.INSTALL_MARKER`).

Example:
>>> install_command()
'pip install -q "kprune[tensorflow] @ git+https://github.com/kprune/kprune"'
"""

from __future__ import annotations

__all__ = ["REPOSITORY", "BRANCH", "colab_url", "install_command", "install_cell_source"]

#: The canonical repository (the badges and the install cells use it).
REPOSITORY = "https://github.com/kprune/kprune"
#: The branch the Colab badges open.
BRANCH = "main"
#: First line of every notebook's install cell.
INSTALL_MARKER = "# kprune install cell"


def colab_url(notebook):
    """The "Open in Colab" link of `notebooks/<notebook>` on `BRANCH`.

    Args:
        notebook: the notebook's file name, e.g. `"01_prune_during_fit.ipynb"`.

    Returns:
        `https://colab.research.google.com/github/<owner>/<repo>/blob/<branch>/notebooks/<name>`.
    """
    path = REPOSITORY.split("github.com/", 1)[1]
    return f"https://colab.research.google.com/github/{path}/blob/{BRANCH}/notebooks/{notebook}"


def install_command(extras=("tensorflow",)):
    """The pip command that installs kprune from the repository.

    Args:
        extras: kprune's extras (setup.cfg), e.g. `("tensorflow", "hub")`.

    Returns:
        A shell command string.
    """
    return f'pip install -q "kprune[{",".join(extras)}] @ git+{REPOSITORY}"'


def install_cell_source(extras=("tensorflow",)):
    """The source of a notebook's install cell (its first code cell).

    It installs only on Colab; elsewhere (a clone with `pip install -e
    ".[dev]"`) it does nothing, so its output is empty wherever it runs.
    """
    return (
        f"{INSTALL_MARKER}: on Colab, install kprune from its repository "
        f"(elsewhere: pip install -e \".[dev]\" in a clone).\n"
        "import sys\n"
        "if \"google.colab\" in sys.modules:\n"
        f"    get_ipython().system('{install_command(extras)}')"
    )
