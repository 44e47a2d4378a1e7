"""Smaller language models: width vs depth pruning, with and without distillation (Minitron's study).

A byte-level Gemma3-style decoder (KerasHub `Gemma3Backbone`, global
attention, random init) is trained here on Python's own stdlib sources (as
`benchmarks/post_training.py`), then 50% of its non-embedding parameters are
removed and the held-out perplexity (other stdlib files) is reported for:

  (a) width pruning (hidden size + MLP, Minitron's activation importance)
      + logit distillation from the dense model,
  (b) depth pruning (half the blocks, ShortGPT block influence)
      + the same distillation,
  (c) width pruning without recovery,
  (d) the (a) config trained from scratch on as many tokens as (a) distilled on,
  and the dense model (two seeds: their spread is the noise level).

Targets (from the issue, after Minitron): (a) < (d), (a) < (c), (a) < (b)
by more than the dense spread, and (a) <= 1.2x dense.

Run:  python benchmarks/llm_pruning.py --quick   (~3 min, smaller model)
      python benchmarks/llm_pruning.py           (~20 min)
Timings are wall times on the machine it runs on (its load average is printed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras
import keras_hub
import numpy as np
from post_training import stdlib_bytes, windows

from kprune import llm
from kprune.utils.table import format_table

SETTINGS = {
    # seq, hidden, heads, kv, head_dim, intermediate, layers, train bytes, dense epochs, recovery tokens
    True: {"seq": 64, "hidden": 64, "heads": 4, "kv": 2, "head_dim": 16, "inter": 256, "layers": 4,
           "train_bytes": 120_000, "dense_epochs": 1, "recovery_tokens": 40_000, "batch": 16},
    False: {"seq": 64, "hidden": 64, "heads": 4, "kv": 2, "head_dim": 16, "inter": 256, "layers": 6,
            "train_bytes": 200_000, "dense_epochs": 1, "recovery_tokens": 100_000, "batch": 16},
}


def backbone(s, hidden=None, inter=None, layers=None):
    return keras_hub.models.Gemma3Backbone(
        vocabulary_size=256, image_size=16, num_layers=layers or s["layers"],
        num_query_heads=s["heads"], num_key_value_heads=s["kv"], hidden_dim=hidden or s["hidden"],
        intermediate_dim=inter or s["inter"], head_dim=s["head_dim"],
        use_sliding_window_attention=False, final_logit_soft_cap=None,
        attention_logit_soft_cap=None)


def causal_lm(bb):
    return keras_hub.models.Gemma3CausalLM(backbone=bb, preprocessor=None)


def as_inputs(x):
    return {"token_ids": x, "padding_mask": np.ones_like(x)}


def train(model, x, y, tokens, lr, batch, seed):
    """Next-token training on `tokens` tokens (whole batches); returns seconds."""
    n = max(1, tokens // (x.shape[1] * batch)) * batch
    idx = np.random.default_rng(seed).permutation(len(x))
    idx = np.resize(idx, n)
    steps = n // batch
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(lr, steps)),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = time.perf_counter()
    model.fit(as_inputs(x[idx]), y[idx], batch_size=batch, epochs=1, verbose=0, shuffle=False)
    return time.perf_counter() - start, n * x.shape[1]


def perplexity(model, x, y):
    nll = []
    for i in range(0, len(x), 64):
        logits = keras.ops.convert_to_numpy(model(as_inputs(x[i:i + 64]))).astype(np.float64)
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        nll.append(-np.take_along_axis(logp, y[i:i + 64, :, None], -1)[..., 0])
    return float(np.exp(np.concatenate(nll).mean()))


def width_for_half(s, dense_params, hidden, heads, kv):
    """The MLP size that leaves ~50% of the non-embedding parameters at these widths."""
    attn = hidden * (2 * heads + 2 * kv) * s["head_dim"]
    norms = 4 * hidden + 2 * s["head_dim"]
    per_layer = (dense_params / 2 - hidden) / s["layers"]
    return round((per_layer - attn - norms) / (3 * hidden) / 8) * 8


def width_candidates(s, dense_params):
    """Width configs at 50%: hidden 3/4 + MLP; MLP only; half the query heads + MLP."""
    out = []
    for hidden, heads, kv in ((s["hidden"] * 3 // 4, s["heads"], s["kv"]),
                              (s["hidden"], s["heads"], s["kv"]),
                              (s["hidden"], s["heads"] // 2, s["kv"])):
        out.append({"hidden_dim": hidden, "num_query_heads": heads, "num_key_value_heads": kv,
                        "intermediate_dim": width_for_half(s, dense_params, hidden, heads, kv)})
    return out


def distill(student, teacher, x, y, tokens, batch, seed):
    """Logit distillation on `tokens` tokens; returns (seconds, tokens)."""
    n = max(1, tokens // (x.shape[1] * batch)) * batch
    idx = np.resize(np.random.default_rng(seed).permutation(len(x)), n)
    ids = np.concatenate([x[idx], y[idx][:, -1:]], 1)  # windows of seq + 1 tokens
    opt = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, n // batch))
    start = time.perf_counter()
    llm.distill(student, teacher, ids, epochs=1, batch_size=batch, optimizer=opt, verbose=1,
                shuffle=False)
    return time.perf_counter() - start, n * x.shape[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    s = SETTINGS[args.quick]
    t0 = time.perf_counter()
    train_b, test_b = stdlib_bytes(s["train_bytes"])
    x, y = windows(train_b, s["seq"], step=s["seq"] // 2)
    xt, yt = windows(test_b, s["seq"])
    xt, yt = xt[:256], yt[:256]
    dense_tokens = s["dense_epochs"] * len(x) * s["seq"]
    rows, ppl, info = [], {}, {}

    dense = []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        model = causal_lm(backbone(s))
        seconds, tokens = train(model, x, y, dense_tokens, 2e-3, s["batch"], seed)
        dense.append(model)
        ppl[f"dense{seed}"] = perplexity(model, xt, yt)
        info[f"dense{seed}"] = (tokens, seconds)
        print(f"dense seed {seed}: perplexity {ppl[f'dense{seed}']:.3f} ({tokens:,} tokens, {seconds:.0f} s)",
              flush=True)
    teacher = dense[0]
    spread = abs(ppl["dense0"] - ppl["dense1"])
    _, dense_params = llm.parameter_counts(teacher)
    calib = x[np.random.default_rng(0).choice(len(x), 64, replace=False)]

    # Minitron ranks candidate architectures of the target size; here by the perplexity
    # right after pruning (on training windows, not the held-out text).
    start = time.perf_counter()
    scores = llm.width_importance(teacher, calib)
    xs, ys = x[-128:], y[-128:]
    best = None
    for cand in width_candidates(s, dense_params):
        pruned = llm.prune_width(teacher, scores=scores, **cand)
        p = perplexity(pruned, xs, ys)
        print(f"width candidate {cand}: training-window perplexity after pruning {p:.3f}", flush=True)
        if best is None or p < best[0]:
            best = (p, cand, pruned)
    _, chosen, width = best
    hidden, inter = chosen["hidden_dim"], chosen["intermediate_dim"]
    info["prune_w"] = time.perf_counter() - start
    ppl["c"] = perplexity(width, xt, yt)
    info["c"] = (0, info["prune_w"])
    info["a"] = distill(width, teacher, x, y, s["recovery_tokens"], s["batch"], 2)
    ppl["a"] = perplexity(width, xt, yt)
    print(llm.config_report(teacher, width))

    start = time.perf_counter()
    depth = llm.prune_depth(teacher, calib, num_layers=s["layers"] // 2)
    prune_d = time.perf_counter() - start
    ppl["b_raw"] = perplexity(depth, xt, yt)
    info["b"] = distill(depth, teacher, x, y, s["recovery_tokens"], s["batch"], 2)
    ppl["b"] = perplexity(depth, xt, yt)

    keras.utils.set_random_seed(3)
    scratch = causal_lm(type(width.backbone).from_config(width.backbone.get_config()))
    info["d"] = train(scratch, x, y, info["a"][1], 2e-3, s["batch"], 2)
    ppl["d"] = perplexity(scratch, xt, yt)

    def frac(m):
        return llm.parameter_counts(m)[1] / dense_params

    rows = [
        ["dense (seed 0)", f"{dense_params:,}", "1.00", f"{ppl['dense0']:.3f}", f"{info['dense0'][0]:,}",
         f"{info['dense0'][1]:.0f}"],
        ["dense (seed 1)", f"{dense_params:,}", "1.00", f"{ppl['dense1']:.3f}", f"{info['dense1'][0]:,}",
         f"{info['dense1'][1]:.0f}"],
        ["(a) width + distillation", f"{llm.parameter_counts(width)[1]:,}", f"{frac(width):.2f}",
         f"{ppl['a']:.3f}", f"{info['a'][1]:,}", f"{info['a'][0] + info['prune_w']:.0f}"],
        ["(b) depth + distillation", f"{llm.parameter_counts(depth)[1]:,}", f"{frac(depth):.2f}",
         f"{ppl['b']:.3f}", f"{info['b'][1]:,}", f"{info['b'][0] + prune_d:.0f}"],
        ["(c) width, no recovery", f"{llm.parameter_counts(width)[1]:,}", f"{frac(width):.2f}",
         f"{ppl['c']:.3f}", "0", f"{info['prune_w']:.0f}"],
        ["    depth, no recovery", f"{llm.parameter_counts(depth)[1]:,}", f"{frac(depth):.2f}",
         f"{ppl['b_raw']:.3f}", "0", f"{prune_d:.0f}"],
        ["(d) (a)'s config from scratch", f"{llm.parameter_counts(scratch)[1]:,}", f"{frac(scratch):.2f}",
         f"{ppl['d']:.3f}", f"{info['d'][1]:,}", f"{info['d'][0]:.0f}"],
    ]
    print(f"\nByte-level Gemma3-style decoder ({s['layers']} blocks, hidden {s['hidden']}, "
          f"{s['heads']} query / {s['kv']} KV heads x {s['head_dim']}, MLP {s['inter']}, context "
          f"{s['seq']}), trained on {len(train_b):,} bytes of stdlib source; perplexity on "
          f"{xt.size:,} held-out bytes of other stdlib files. Width: hidden {s['hidden']}->{hidden}, "
          f"query heads {s['heads']}->{chosen['num_query_heads']}, MLP {s['inter']}->{inter} (the best "
          f"of 3 candidates right after pruning); depth: {s['layers']}->{s['layers'] // 2} blocks.")
    print(format_table(["model", "non-embedding params", "fraction", "perplexity", "tokens trained",
                        "seconds"], rows))

    def verdict(ok):
        return "PASS" if ok else "MISS"

    print(f"\nTargets (a difference counts only beyond the dense spread over 2 seeds, {spread:.3f}):")
    for label, other in (("(d) scratch", "d"), ("(c) no recovery", "c"), ("(b) depth", "b")):
        diff = ppl[other] - ppl["a"]
        print(f"   (a) {ppl['a']:.3f} < {label} {ppl[other]:.3f}: margin {diff:+.3f} "
              f"-> {verdict(diff > spread)}")
    ratio = ppl["a"] / ppl["dense0"]
    print(f"   (a) within 1.2x dense: {ppl['a']:.3f} / {ppl['dense0']:.3f} = {ratio:.3f}x "
          f"-> {verdict(ratio <= 1.2)}")
    print(f"   50% of the non-embedding parameters removed: width {1 - frac(width):.1%}, "
          f"depth {1 - frac(depth):.1%}")
    print(f"\nTotal {time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.1f} "
          f"(on {os.cpu_count()} CPUs; a loaded machine makes every time longer).")


if __name__ == "__main__":
    main()
