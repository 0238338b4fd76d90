"""Errors a user can cause.

The command line turns these into one line on stderr and exit code 2; anything
else is a bug and keeps its traceback. `ckatlas.cka` has its own
`CKAInputError` (it imports nothing of ckatlas); both are listed in
`USER_ERRORS`.
"""

from __future__ import annotations

from ckatlas.cka import CKAInputError


class UserInputError(ValueError):
    """Bad input from the user: a wrong value, a missing file, an unknown key.

    The message says what was wrong and what is expected, in one line.
    """


USER_ERRORS: tuple[type[Exception], ...] = (UserInputError, CKAInputError)

__all__ = ["UserInputError", "USER_ERRORS"]
