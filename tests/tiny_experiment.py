"""The smallest experiment worth running in a test: ResNet-8/14 at widths 1/4 and 1/2, two seeds, one epoch on
the digits at 8x8, heatmaps on 128 test images."""

from __future__ import annotations


def tiny_toml(name: str, *, grid: str = "", extra: str = "") -> str:
    """An experiment TOML: `grid` adds lines to its [[grid]] table, `extra` tables after [cka]."""
    return f"""
name = "{name}"
description = "a tiny experiment for a test"
[dataset]
name = "digits"
resize = 8
[[grid]]
depths = [8, 14]
widths = [0.25, 0.5]
seeds = [0, 1]
{grid}
[train]
epochs = 1
[cka]
num_examples = 128
batch_size = 64
{extra}
"""
