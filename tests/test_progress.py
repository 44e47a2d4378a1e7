"""kprune.utils.progress: Keras-style bar in a terminal, a handful of lines in a log."""

import io
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import keras
import kprune
from kprune.utils.progress import Progress, track

from conftest import small_mlp, toy_data

BAR = re.compile(r"^SynFlow +\d+/100 [━─]{20}")


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _lines(text):
    return [ln for ln in text.splitlines() if ln.strip()]


def test_a_100_step_operation_prints_at_most_6_lines_in_a_log(capsys):
    with Progress(100, "SynFlow", verbose=1, unit="round") as p:
        for _ in range(100):
            p.update(1)
    out = capsys.readouterr().out
    lines = _lines(out)
    assert 2 <= len(lines) <= 6
    assert "\r" not in out and "\x1b" not in out  # a log gets plain full lines
    assert all(BAR.match(ln) for ln in lines)
    assert lines[0].startswith("SynFlow   0/100")
    assert lines[-1].startswith("SynFlow 100/100 ━━━━━━━━━━━━━━━━━━━━")
    assert lines[-1].endswith("- done") and "/round" in lines[-1]


def test_log_lines_are_the_quarters():
    stream = io.StringIO()
    with Progress(100, "SynFlow", stream=stream) as p:
        for _ in range(100):
            p.update(1)
    counts = [int(re.search(r"(\d+)/100", ln).group(1)) for ln in _lines(stream.getvalue())]
    assert counts == [0, 25, 50, 75, 100]


def test_verbose_0_prints_nothing(capsys):
    with Progress(100, "SynFlow", verbose=0) as p:
        for _ in range(100):
            p.update(1)
    with pytest.raises(ValueError):
        with Progress(10, "x", verbose=0) as p:
            raise ValueError("boom")
    for _ in track(range(10), "x", verbose=0):
        pass
    assert capsys.readouterr() == ("", "")


def test_verbose_2_prints_only_the_final_line():
    stream = io.StringIO()
    with Progress(100, "SynFlow", verbose=2, stream=stream) as p:
        for _ in range(100):
            p.update(1)
    lines = _lines(stream.getvalue())
    assert len(lines) == 1 and lines[0].endswith("- done")


def test_a_terminal_gets_one_bar_redrawn_in_place():
    stream = _Terminal()
    with Progress(50, "SynFlow", stream=stream, interval=0) as p:
        for _ in range(50):
            p.update(1, loss=0.25)
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert text.count("\r") == 51  # start + every step (interval 0)
    final = text.rsplit("\r", 1)[1]
    assert "\x1b[32m" in final  # Keras' green bar on a real terminal
    assert "50/50" in final and "loss: 0.2500" in final and final.rstrip().endswith("- done")


def test_a_jupyter_kernel_stream_counts_as_interactive_but_gets_no_colour():
    from kprune.utils import progress

    stream = io.StringIO()
    assert not progress._is_interactive(stream)
    p = Progress(4, "x", stream=stream, interactive=True)
    p.update(4)
    assert "\r" in stream.getvalue() and "\x1b" not in stream.getvalue()


def test_the_final_line_says_how_it_ended():
    stream = io.StringIO()
    with pytest.raises(KeyError):
        with Progress(10, "x", stream=stream) as p:
            p.update(3)
            raise KeyError("k")
    assert _lines(stream.getvalue())[-1].endswith("- failed (KeyError)")

    stream = io.StringIO()
    p = Progress(10, "x", stream=stream)
    p.update(4)
    p.close()
    p.update(6)  # ignored after close
    assert _lines(stream.getvalue())[-1].endswith("- stopped at 4/10")

    stream = io.StringIO()
    for i in track(range(10), "x", stream=stream):
        if i == 6:
            break
    assert _lines(stream.getvalue())[-1].endswith("- stopped at 6/10")


def test_unknown_total_logs_only_the_final_line():
    stream = io.StringIO()
    with Progress(None, "scan", stream=stream) as p:
        for _ in range(30):
            p.update(1)
    lines = _lines(stream.getvalue())
    assert len(lines) == 1 and lines[0].startswith("scan 30/Unknown") and lines[0].endswith("done")


def test_keras_progbar_spelling_add():
    stream = io.StringIO()
    p = Progress(2, "x", stream=stream, verbose=2)
    p.add(1, [("acc", 0.5)])
    p.add(1)
    assert "acc: 0.5000" in stream.getvalue() and stream.getvalue().count("\n") == 1


@pytest.mark.parametrize("kwargs, match", [
    (dict(total=-1), "total must be None or a non-negative integer, got -1"),
    (dict(total=2.5), "total must be None or a non-negative integer, got 2.5"),
    (dict(total=3, verbose=3), "verbose must be 0 .* got 3"),
])
def test_bad_arguments_name_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Progress(**kwargs)


def test_update_rejects_a_negative_step():
    p = Progress(3, verbose=0)
    with pytest.raises(ValueError, match="n must be a non-negative integer, got -1"):
        p.update(-1)


@settings(max_examples=60, deadline=None)
@given(total=st.integers(1, 1000), chunks=st.lists(st.integers(0, 50), max_size=60))
def test_a_log_never_gets_more_than_5_lines(total, chunks):
    stream = io.StringIO()
    with Progress(total, "op", stream=stream) as p:
        for n in chunks:
            p.update(n)
    lines = _lines(stream.getvalue())
    assert 1 <= len(lines) <= 5
    counts = [int(re.search(r" (\d+)/", ln).group(1)) for ln in lines]
    assert counts == sorted(counts)
    done = sum(chunks) >= total
    assert lines[-1].endswith("- done") == done


# ------------------------------------------------------------- call sites


def test_synflow_100_rounds_print_a_handful_of_lines(capsys):
    model = small_mlp(inputs=8, classes=3)
    kprune.prune_at_init(model, method="synflow", sparsity=0.9, iterations=100, verbose=1)
    out = capsys.readouterr().out
    progress_lines = [ln for ln in _lines(out) if ln.startswith("synflow scoring")]
    assert 2 <= len(progress_lines) <= 6
    final = progress_lines[-1]
    assert final.startswith("synflow scoring 100/100") and final.endswith("- done")
    assert len(_lines(out)) <= 7  # the bar lines and prune_at_init's one-line summary


def test_snip_batches_report_progress(capsys):
    x, y = toy_data(n=64, inputs=8, classes=3)
    kprune.prune_at_init(small_mlp(inputs=8, classes=3), (x, y), "snip", 0.5, batches=4,
                         batch_size=16, verbose=1)
    lines = [ln for ln in _lines(capsys.readouterr().out) if ln.startswith("snip scoring")]
    assert lines and lines[-1].startswith("snip scoring 4/4") and lines[-1].endswith("done")


def test_prune_iteratively_reports_each_step(capsys):
    from kprune.structured import prune_iteratively

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, name="a"),
                              keras.layers.Dense(3, name="out")])
    prune_iteratively(model, 0.5, steps=2, verbose=0)
    assert capsys.readouterr().out == ""
    thin = prune_iteratively(model, 0.5, steps=2, verbose=1)
    lines = [ln for ln in _lines(capsys.readouterr().out) if ln.startswith("prune_iteratively")]
    assert [ln.split()[1] for ln in lines] == ["0/2", "1/2", "2/2"]
    assert lines[-1].endswith("- done")
    assert thin.get_layer("a").units == 8
    np.testing.assert_equal(thin.get_layer("out").kernel.shape, (8, 3))


def test_prune_post_training_log_has_no_escape_codes(capsys):
    x, _ = toy_data(n=32, inputs=8, classes=3)
    kprune.prune_post_training(small_mlp(inputs=8, classes=3), x, method="wanda",
                               sparsity=0.5, verbose=1)
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out
    lines = [ln for ln in _lines(out) if ln.startswith("prune_post_training (wanda)")]
    assert lines and lines[-1].startswith("prune_post_training (wanda) 3/3")
    assert lines[-1].endswith("- done")


def test_structured_planning_log_has_no_escape_codes(capsys):
    from kprune.structured import ChannelPruner

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, name="a"),
                              keras.layers.Dense(3, name="out")])
    ChannelPruner(model, pruning_ratio=0.5, verbose=1).plan()
    out = capsys.readouterr().out
    assert "\x1b" not in out and "ChannelPruner: scoring groups" in out


def test_no_module_draws_its_own_keras_progbar():
    import pathlib

    root = pathlib.Path(kprune.__file__).parent.parent
    users = [str(p.relative_to(root)) for folder in ("kprune", "tflite_export", "benchmarks")
             for p in (root / folder).rglob("*.py")
             if "keras.utils.Progbar(" in p.read_text(encoding="utf-8")]
    assert users == [], f"use kprune.utils.progress.Progress instead of keras.utils.Progbar in {users}"
