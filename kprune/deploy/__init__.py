"""Pruning for a deployment target: `policy` (`PruneForLatencyOnXNNPack`)."""
