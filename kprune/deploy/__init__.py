"""kprune.deploy: pruning for a deployment target's measured speed.

* `policy`: `PruneForLatencyOnXNNPack` (which layers XNNPACK's sparse path
  can run).
* `latency`: `LatencyModel(model, measurer=LiteRTMeasurer())`, per-layer
  latency tables measured on the target runtime (cached on disk), and
  predictions of the whole model's latency at any channel widths.
* `budget`: `prune_for_latency(model, budget=0.5)`, channel widths chosen for
  a latency budget (greedy knapsack over the table, on `kprune.structured`'s
  dependency graph), the thin model, and its measured latency.

See docs/deploy.md.
"""

from kprune.deploy.budget import (LatencyPlan, LatencyResult, allocate, check_budget, measure_result,
                                  prune_for_latency)
from kprune.deploy.latency import (LatencyCache, LatencyModel, LiteRTMeasurer, default_cache_dir,
                                   measure_model, runtime_key)

__all__ = [
    "LatencyCache", "LatencyModel", "LatencyPlan", "LatencyResult", "LiteRTMeasurer", "allocate",
    "check_budget", "default_cache_dir", "measure_model", "measure_result", "prune_for_latency",
    "runtime_key",
]
