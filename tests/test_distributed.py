"""Heatmaps over torch.distributed ranks: each rank passes its own shard, every rank gets the heatmap
of all the data. Two gloo processes on the CPU against one process over everything."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from ckatlas import CKAResult, heatmap, population_heatmaps
from ckatlas.errors import UserInputError
from ckatlas.models import create_model

N, BATCH, WORLD = 64, 16, 2


def _models() -> tuple[torch.nn.Module, torch.nn.Module]:
    # float64: two processes and one must agree to 1e-10, beyond float32's rounding of the forward pass
    a = create_model("resnet8", width=0.25, in_channels=1, generator=torch.Generator().manual_seed(0),
                     dtype=torch.float64)
    b = create_model("resnet14", width=0.25, in_channels=1, generator=torch.Generator().manual_seed(1),
                     dtype=torch.float64)
    return a, b


def _inputs() -> torch.Tensor:
    return torch.randn(N, 1, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


def _rank(rank: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        a, b = _models()
        shard = _inputs().chunk(WORLD)[rank]  # this rank's own examples
        within = heatmap(DistributedDataParallel(a), shard, layers="all", batch_size=BATCH, shuffle=False)
        across = population_heatmaps({"a": a, "b": b}, shard, batch_size=BATCH, shuffle=False)
        within.save(f"{out}/within-{rank}.npz")
        heatmap(a, shard, batch_size=BATCH, shuffle=False, measure="procrustes").save(f"{out}/procrustes-{rank}.npz")
        across["a", "b"].save(f"{out}/across-{rank}.npz")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_every_rank_gets_the_heatmap_of_all_the_data(tmp_path) -> None:
    mp.spawn(_rank, args=(f"file://{tmp_path / 'rendezvous'}", str(tmp_path)), nprocs=WORLD, join=True)
    a, b = _models()
    whole = heatmap(a, _inputs(), layers="all", batch_size=BATCH, shuffle=False)
    across = heatmap(a, _inputs(), model_b=b, batch_size=BATCH, shuffle=False)
    procrustes = heatmap(a, _inputs(), batch_size=BATCH, shuffle=False, measure="procrustes")
    for rank in range(WORLD):
        got = CKAResult.load(tmp_path / f"within-{rank}.npz")
        assert got.layers_a == whole.layers_a  # the DDP wrapper's module, by its own layer names
        assert (got.n, got.num_batches, got.metadata["ranks"]) == (N, N // BATCH, WORLD)
        np.testing.assert_allclose(got.matrix, whole.matrix, rtol=0, atol=1e-10)
        # the spread of per-batch estimates: sum of squares minus k mean^2 cancels where every batch gives
        # CKA 1, so the summation order shows at 1e-8 there
        np.testing.assert_allclose(got.standard_error, whole.standard_error, rtol=1e-6, atol=1e-7)
        got = CKAResult.load(tmp_path / f"procrustes-{rank}.npz")  # a measure averaged over batches: the same
        np.testing.assert_allclose(got.matrix, procrustes.matrix, rtol=0, atol=1e-10)
        assert got.measure == "procrustes" and got.num_batches == N // BATCH
        pair = CKAResult.load(tmp_path / f"across-{rank}.npz")
        np.testing.assert_allclose(pair.matrix, across.matrix, rtol=0, atol=1e-10)


def test_distributed_without_a_process_group_is_one_clear_error() -> None:
    a, _ = _models()
    with pytest.raises(UserInputError, match="distributed=True needs an initialised torch.distributed process group"):
        heatmap(a, _inputs(), batch_size=BATCH, distributed=True)
    alone = heatmap(a, _inputs(), batch_size=BATCH, shuffle=False)  # no group: this process alone
    assert "ranks" not in alone.metadata and alone.n == N
