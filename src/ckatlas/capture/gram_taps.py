"""`GramTaps`: each tapped output becomes its centred Gram inside the forward hook."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ckatlas.errors import UserInputError
from ckatlas.capture.layers import LayerSpec
from ckatlas.capture.taps import _Taps
from ckatlas.cka.products import channel_products, double_centred, full_precision, memory_order, self_product



class GramTaps(_Taps):
    """Context manager: each tapped module's output becomes its (n, n) Gram at once.

    The activation, shifted by the mean of its first 32 examples into a reused
    buffer, is multiplied with itself in its own precision (float32 for
    float32/16 activations) and the product centred exactly (``H G H``); only
    the Gram is kept, so memory is one forward pass plus L Grams. A layer
    constant over the examples gets an exactly zero Gram. On the CPU a layer
    whose mean is small next to its spread (``|X|^2 <= 3 |H X|^2``: every layer
    of a trained ResNet) takes its next Gram from the activation as it is,
    without the shifted copy, while that stays accurate (``<= 6``).

    A tapped eval-mode BatchNorm whose input is the output of the tapped layer
    just before it (conv -> BN) costs no product of its own: the BN is a
    per-channel scale ``a`` once centred, so from per-channel Grams ``G_c`` of
    the input, ``sum_c G_c`` is the input's Gram and ``sum_c a_c^2 G_c`` the BN's
    (the pair is learnt on the first batch; each later batch checks that the BN
    is fed the same, unmodified tensor, else computes its Gram directly).

    Example:
        >>> with GramTaps(model, "encoder.layer.*") as taps:
        ...     taps.expect(len(x)); model(x)
        ...     grams = taps.stacked()  # (L, n, n) float32, in forward order
    """

    def __init__(self, model: nn.Module, layers: LayerSpec, *, what: str = "model", tokens: str = "auto",
                 float64: bool = False) -> None:
        super().__init__(model, layers, what=what, tokens=tokens)
        self.float64 = float64  # Grams in float64 whatever the activations' dtype (measures built on eigenvalues)
        self._buffers: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
        self._feeds: dict[str, str] = {}  # tapped layer -> the tapped BatchNorm it feeds
        self._last: tuple[str, torch.Tensor] | None = None  # the previous tapped layer's output
        self._stash: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._uncentred: set[str] = set()  # layers whose next Gram is taken without the centring pass
        self._pending: dict[str, str] = {}  # layer -> how its Gram was taken, in the pass running
        self._routes: dict[str, str] = {}  # the same for the last pass taken

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        self._buffers.clear()
        self._last = None
        self._stash.clear()

    def expect(self, n: int | None, mask: torch.Tensor | None = None) -> None:
        super().expect(n, mask)
        self._last = None
        self._stash.clear()
        self._pending = {}

    def take(self) -> dict[str, Any]:
        routes = self._pending
        out = super().take()
        self._routes = {name: routes[name] for name in out if name in routes}
        return out

    @property
    def routes(self) -> dict[str, str]:
        """How each layer's Gram was taken in the last forward pass taken (a diagnostic).

        ``"centred"``: the product of a shifted copy; ``"uncentred"``: the product of the
        activation as it is (a layer whose mean is small next to its spread, CPU);
        ``"paired"``: an eval BatchNorm's Gram from the per-channel Grams of the tapped layer
        that feeds it. Every route gives the same centred Gram up to rounding.
        """
        return dict(self._routes)

    def _process(self, name: str, tensor: torch.Tensor, module: nn.Module, args: Any) -> torch.Tensor:
        source = args[0] if isinstance(args, tuple) and args else None
        last, self._last = self._last, (name, tensor)
        stash = self._stash.pop(name, None)
        if stash is not None:
            fed, sample, gram = stash
            if source is fed and torch.equal(_sample(source), sample):
                self._pending[name] = "paired"
                return gram
        elif last is not None and source is last[1] and last[0] not in self._feeds:
            if _bn_scale(module, source) is not None:
                self._feeds[last[0]] = name  # used from the next batch on
        bn = self._feeds.get(name)
        if bn is not None:
            scale = _bn_scale(self.model.get_submodule(bn), tensor)
            if scale is not None:
                gram, bn_gram = self._gram(tensor, scale)
                self._stash[bn] = (tensor, _sample(tensor), bn_gram)
                self._pending[name] = "centred"
                return gram
        return self._gram(tensor, name=name)[0]

    def _gram(
        self, t: torch.Tensor, scale: torch.Tensor | None = None, *, name: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The centred Gram of `t`; with a per-channel `scale`, also that of ``scale * t``.

        With a layer `name` (CPU, no `scale`), the layer's Gram is taken from the
        activation as it is, without the centring pass, while its mean is small next
        to its spread (see `_uncentred_gram`); otherwise from a shifted copy.
        """
        with full_precision(t.device):
            if name is not None and name in self._uncentred and not self.float64:
                gram = self._uncentred_gram(t)
                if gram is not None:
                    self._pending[name] = "uncentred"
                    return gram, None
                self._uncentred.discard(name)
            if name is not None:
                self._pending[name] = "centred"
            return self._centred_gram(t, scale, name)

    def _uncentred_gram(self, t: torch.Tensor) -> torch.Tensor | None:
        """``H X X' H`` from the product of the activation as it is, or None when that is not accurate.

        Rounding errors of the product scale with ``|x_i| |x_j|``, which the mean inflates
        over the centred entries by about r = |X|^2 / |H X|^2: accepted while r <= 6 (float32
        errors then stay within 6x those of a centred product; a trained ResNet's layers have
        r = 1 to 3); above, the caller takes the centred path and keeps to it.
        """
        t = memory_order(t.detach())
        if t.dtype != torch.float32 or not t.is_contiguous() or t.device.type != "cpu":
            return None
        gram = self_product(t.reshape(t.shape[0], -1))
        total = float(gram.diagonal().sum())
        gram = double_centred(gram)
        centred = float(gram.diagonal().sum())
        if not (centred > 0 and total <= _UNCENTRED_MAX * centred):
            return None
        return gram

    def _centred_gram(
        self, t: torch.Tensor, scale: torch.Tensor | None, name: str | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        t = t.detach() if scale is not None else memory_order(t.detach())
        n = t.shape[0]
        dtype = t.dtype if t.dtype in (torch.float32, torch.float64) else (
            torch.float32 if t.is_floating_point() else torch.float64
        )
        if self.float64:
            dtype = torch.float64
        key = (t.device, dtype)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < t.numel():
            buf = self._buffers[key] = torch.empty(t.numel(), dtype=dtype, device=t.device)
        # Shift by the mean of the first few examples, then centre the Gram exactly: H (X - 1 s') (X - 1 s')' H
        # = H X X' H for any shift s, and the rounding error stays that of a centred product as long as
        # s is close to the batch mean (|mean - s|^2 is about 1/32 of the spread). Reads 1/8 of the
        # activation instead of all of it for the exact mean.
        k = min(n, _SHIFT_EXAMPLES)
        if t.dtype == dtype and t.is_contiguous():
            # A (1, k) x (k, p) product: about 3x faster than a reduction over dim 0.
            weights = torch.full((1, k), 1.0 / k, dtype=dtype, device=t.device)
            shift = (weights @ t.reshape(n, -1)[:k]).view(1, *t.shape[1:])
        else:
            shift = t[:k].mean(dim=0, keepdim=True, dtype=dtype)
        if scale is None:
            centred = buf[: t.numel()].view(t.shape)
            torch.sub(t, shift, out=centred)
            gram, other = double_centred(self_product(centred.view(n, -1))), None
            if name is not None and t.device.type == "cpu" and t.dtype == torch.float32:
                # r = |X|^2 / |H X|^2 = 1 + n |mean|^2 / |H X|^2, with the shift for the mean
                spread = float(gram.diagonal().sum())
                if spread > 0 and 1.0 + n * float(shift.double().square().sum()) / spread <= _UNCENTRED_ENTER:
                    self._uncentred.add(name)
        else:  # channel-major (c, n, rest): one product per channel
            c = t.shape[1]
            centred = buf[: t.numel()].view(c, n, -1)
            torch.sub(t.reshape(n, c, -1), shift.reshape(1, c, -1), out=centred.permute(1, 0, 2))
            weights = torch.stack([torch.ones_like(scale), scale * scale]).to(dtype)
            gram, other = (double_centred(g) for g in channel_products(centred, weights))
        if n > 1:
            if t.device.type == "cpu":
                # A layer constant over the examples leaves only the rounding error of its mean.
                if torch.equal(t[0], t[1]) and torch.equal(t, t[:1].expand_as(t)):
                    gram.zero_()
                    if other is not None:
                        other.zero_()
            else:  # no host synchronisation per layer
                constant = (t == t[:1]).all()
                gram = torch.where(constant, torch.zeros_like(gram), gram)
                if other is not None:
                    other = torch.where(constant, torch.zeros_like(other), other)
        return gram, other

    def stacked(self) -> torch.Tensor:
        """The Grams of the forward pass just run, as one (L, n, n) tensor in layer order.

        Raises:
            UserInputError: a layer's activations (or their Gram) hold NaN or Inf.
        """
        grams = self.take()
        stack = torch.stack(list(grams.values()))
        # |K_ij| <= sqrt(K_ii K_jj): a Gram is finite when its diagonal is, and any NaN or
        # Inf activation makes its example's diagonal entry NaN or Inf.
        bad = ~torch.isfinite(stack.diagonal(dim1=1, dim2=2)).all(dim=1)
        if bool(bad.any()):
            first = self._names[int(bad.nonzero()[0, 0])]
            raise UserInputError(
                f"layer {first!r} of {self.what} produced NaN or Inf activations (or their Gram overflowed "
                f"{stack.dtype}); CKA needs finite activations"
            )
        return stack


# Per-channel products with fewer features each are slower than a second Gram of the BN's own
# output (measured: 64 features, 64 channels, n = 256: 3.7 vs 2.0 ms): no pairing below this.
_MIN_CHANNEL_SIZE = 128


_SHIFT_EXAMPLES = 32  # the shift before each Gram product is the mean of this many examples
# A layer whose |X|^2 / |H X|^2 was at most _UNCENTRED_ENTER (centred path) takes its next Gram
# without the centring pass, as long as the ratio stays at most _UNCENTRED_MAX.
_UNCENTRED_ENTER, _UNCENTRED_MAX = 3.0, 6.0


def _bn_scale(module: nn.Module, source: Any) -> torch.Tensor | None:
    """The per-channel scale of an eval-mode BatchNorm on `source`, or None when not pairable.

    With running statistics, ``bn(x) = a * x + b`` per channel, ``a = weight / sqrt(var + eps)``.
    """
    if not isinstance(module, nn.modules.batchnorm._BatchNorm) or module.training or module.running_var is None:
        return None
    if not isinstance(source, torch.Tensor) or source.device.type != "cpu":  # a GPU has Gram time to spare
        return None
    if source.ndim < 3 or not source.is_contiguous():
        return None
    if not source.is_floating_point() or source[0, 0].numel() < _MIN_CHANNEL_SIZE:
        return None
    scale = torch.rsqrt(module.running_var.double() + module.eps)
    if module.weight is not None:
        scale = scale * module.weight.detach().double()
    return scale


def _sample(t: torch.Tensor) -> torch.Tensor:
    """A strided sample of `t` (about 4,096 values): shows an in-place change between two hooks."""
    flat = t.detach().reshape(-1)
    return flat[:: max(1, flat.numel() // 4096)].clone()
