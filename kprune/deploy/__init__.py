"""kprune.deploy: pruning for a deployment target's measured speed.

* `policy`: `PruneForLatencyOnXNNPack` (which layers XNNPACK's sparse path
  can run).
* `latency`: `LatencyModel(model, measurer=LiteRTMeasurer())`, per-layer
  latency tables measured on the target runtime (cached on disk), and
  predictions of the whole model's latency at any channel widths.
* `budget`: `prune_for_latency(model, budget=0.5)`, channel widths chosen for
  a latency budget (greedy knapsack over the table, on `kprune.structured`'s
  dependency graph), the thin model, and its measured latency.
* `patterns`: `choose_patterns(model, sparsity=0.9)`, per Dense layer the
  measured gain of dense / Block((4, 1)) float32 / Block((16, 1)) int8, and
  `target_report(path)` for `kprune report --target`.

See docs/deploy.md.
"""

from kprune.deploy.budget import (
                                  LatencyPlan,
                                  LatencyResult,
                                  allocate,
                                  check_budget,
                                  measure_result,
                                  prune_for_latency,
)
from kprune.deploy.latency import (
                                  LatencyCache,
                                  LatencyModel,
                                  LiteRTMeasurer,
                                  default_cache_dir,
                                  measure_model,
                                  runtime_key,
)
from kprune.deploy.patterns import (
                                  LayerPattern,
                                  PatternReport,
                                  choose_patterns,
                                  target_report,
)

__all__ = [
                                  "LatencyCache",
                                  "LatencyModel",
                                  "LatencyPlan",
                                  "LatencyResult",
                                  "LayerPattern",
                                  "LiteRTMeasurer",
                                  "PatternReport",
                                  "allocate",
                                  "check_budget",
                                  "choose_patterns",
                                  "default_cache_dir",
                                  "measure_model",
                                  "measure_result",
                                  "prune_for_latency",
                                  "runtime_key",
                                  "target_report",
]
