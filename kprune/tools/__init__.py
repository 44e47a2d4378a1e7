"""Developer tools shipped with kprune (run from a clone of the repository).

* `python -m kprune.tools.render_notebooks`: executes the tutorials in
  `notebooks/` with their full settings and stores the outputs.
"""
