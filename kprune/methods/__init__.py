"""Pruning methods built on the core: pruning at initialisation (`at_init`),
one-shot pruning of trained models (`one_shot`), lottery tickets,
movement pruning, regularisers, criteria (OBD, FPGM, LAMP), distillation and
forgetting reports."""
