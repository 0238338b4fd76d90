"""Gram products on the CPU: the tuned pieces of `ckatlas.capture.GramTaps`, each a plain
function with the same result as the one-line product it replaces (tests compare them)."""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator
from typing import Any

import torch




def double_centred(g: torch.Tensor) -> torch.Tensor:
    """``H g H`` for a symmetric (n, n) `g` (H the centring matrix), in place: subtract the row
    and column means, add back the grand mean."""
    means = g.mean(dim=1, keepdim=True)
    return g.sub_(means).sub_(means.T).add_(means.mean())


def channel_products(x: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For channel-major (c, n, s) `x`: ``sum_c w_kc x_c x_c^T`` for the two rows k of `weights`.

    On an x86 CPU one oneDNN product per channel (`product_nt`), then one
    (2, c) x (c, n*n) product; elsewhere one batched product.
    """
    c, n, _ = x.shape
    with full_precision(x.device):
        if _onednn(x):
            parts = torch.stack([_ONEDNN_LINEAR(x[i], x[i], None, "none", [], "") for i in range(c)])
        else:
            parts = torch.bmm(x, x.transpose(1, 2))
        out = (weights @ parts.view(c, -1)).view(2, n, n)
    return out[0], out[1]


def self_product(x: torch.Tensor) -> torch.Tensor:
    """``x @ x.T`` for (n, p) `x`; on the CPU block row by block row, skipping the upper blocks.

    PyTorch has no symmetric rank-k product (BLAS syrk). With block rows of 128
    (n = 256: 2 rows, each times the rows up to it, 3 of 4 blocks) the product is
    15% faster than a plain one for p >= 4,096 (measured with oneDNN on 2 cores;
    rows of 64 or 32 are slower); the upper blocks are mirrored.
    """
    n, p = x.shape
    with full_precision(x.device):
        if x.device.type != "cpu" or n < 256 or p < 1024:
            return product_nt(x, x)
        h = max(128, -(-n // 4))
        gram = torch.empty(n, n, dtype=x.dtype)
        for start in range(0, n, h):
            stop = min(n, start + h)
            gram[start:stop, :stop] = product_nt(x[start:stop], x[:stop])
            gram[:start, start:stop] = gram[start:stop, :start].T
        return gram


def product_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` for 2-D `a`, `b`: through oneDNN's own float32 kernel on an x86 CPU.

    PyTorch's CPU matrix product calls MKL, which on AMD processors runs its
    AVX2 code; oneDNN's AVX-512 kernel (the one PyTorch's convolutions use) is
    2.3x faster there (measured: 440 vs 190 GFLOP/s, (256, 16384) Grams, 2 cores)
    and as accurate (IEEE float32 with float32 accumulation: `full_precision`).
    """
    if _onednn(a) and _onednn(b):
        return _ONEDNN_LINEAR(a, b, None, "none", [], "")
    return a @ b.T


def _find_onednn_linear() -> Any:
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        return None
    try:
        op = torch.ops.mkldnn._linear_pointwise
        x = torch.linspace(-1.0, 1.0, 320).reshape(8, 40).cos()  # no draw from the global generator
        if torch.allclose(op(x, x[:5], None, "none", [], ""), x @ x[:5].T, rtol=1e-5, atol=1e-5):
            return op
    except Exception:  # a PyTorch build without it (or with another signature): the plain product
        pass
    return None


_ONEDNN_LINEAR = _find_onednn_linear()


def _onednn(x: torch.Tensor) -> bool:
    return (
        _ONEDNN_LINEAR is not None
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.is_contiguous()
        and not x.requires_grad
    )


@contextlib.contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """On the CPU, IEEE float32 products for the duration, whatever `torch.set_float32_matmul_precision` says.

    "medium" or "high" lets oneDNN compute float32 products in bf16 on CPUs with
    AMX; a Gram must stay float32 (see BENCHMARKS.md). On CUDA the user's TF32
    settings are left alone (PyTorch's default products there are full float32):
    setting the new-style flag over a legacy ``allow_tf32`` one makes PyTorch raise
    on the next product.
    """
    matmul = getattr(torch.backends.mkldnn, "matmul", None) if device.type == "cpu" else None
    old = getattr(matmul, "fp32_precision", None)
    if old is None or old == "ieee":
        yield
        return
    matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision = old


def memory_order(t: torch.Tensor) -> torch.Tensor:
    """`t` with its non-batch dimensions permuted into memory order when that makes it contiguous.

    A Gram does not depend on the order of the features, so e.g. a channels_last
    activation is used without a copy.
    """
    if t.ndim <= 2 or t.is_contiguous():
        return t
    dims = sorted(range(1, t.ndim), key=lambda d: -t.stride(d))
    view = t.permute(0, *dims)
    return view if view.is_contiguous() else t
