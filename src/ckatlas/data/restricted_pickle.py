"""A pickle reader that admits only what the CIFAR python archives hold.

The CIFAR "python version" batches are pickled dicts of bytes, ints, lists and
NumPy arrays. Unpickling runs whatever callables a file names, so a plain
`pickle.load` of a file from elsewhere can execute arbitrary code. This reader
resolves only the NumPy globals needed to rebuild arrays (and scalars); a file
that names anything else is refused before anything from it is called.
"""

from __future__ import annotations

import importlib
import io
import pickle
from typing import IO, Any

from ckatlas.errors import UserInputError


def _numpy_attr(modules: tuple[str, ...], name: str) -> Any:
    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise AttributeError(name)  # pragma: no cover - every supported NumPy has one of them


# NumPy >= 2 keeps its internals in numpy._core; NumPy 1.x (and every pickle written
# by it, the 2009 CIFAR files included) names numpy.core.
_CORE = ("numpy._core", "numpy.core")
_ALLOWED: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {
    ("numpy", "ndarray"): (("numpy",), "ndarray"),
    ("numpy", "dtype"): (("numpy",), "dtype"),
    **{
        (f"{core}.multiarray", fn): (tuple(f"{c}.multiarray" for c in _CORE), fn)
        for core in _CORE
        for fn in ("_reconstruct", "scalar")
    },
    # Protocol 5 pickles of arrays rebuild them from an out-of-band buffer.
    **{(f"{core}.numeric", "_frombuffer"): (tuple(f"{c}.numeric" for c in _CORE), "_frombuffer") for core in _CORE},
}


class UnsafePickleError(UserInputError):
    """A pickle names a global that the expected format never holds."""


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves only the NumPy globals arrays are made of.

    Builtin containers, bytes, strings and numbers need no globals and load as
    usual; any global outside the allowed NumPy names raises `UnsafePickleError`.
    """

    def __init__(self, file: IO[bytes], *, source: str = "the file", **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        entry = _ALLOWED.get((module, name))
        if entry is None:
            raise UnsafePickleError(
                f"{self.source}: refused to unpickle: it names {module}.{name}, which a CIFAR python "
                "batch never holds (only dicts, lists, bytes, numbers and NumPy arrays are admitted)"
            )
        return _numpy_attr(*entry)


def restricted_loads(data: bytes, *, source: str = "the file") -> Any:
    """Unpickle `data` (bytes keys and values kept as bytes) with `RestrictedUnpickler`.

    Raises:
        UnsafePickleError: the pickle names a global other than NumPy's array types.
        UserInputError: the data is not a readable pickle.
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), source=source, encoding="bytes").load()
    except UserInputError:
        raise
    except Exception as exc:  # truncated or corrupt: pickle raises many kinds
        raise UserInputError(f"{source}: not a readable pickle ({type(exc).__name__}: {exc})") from None


__all__ = ["RestrictedUnpickler", "UnsafePickleError", "restricted_loads"]
