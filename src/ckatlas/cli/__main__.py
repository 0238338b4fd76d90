"""`python -m ckatlas.cli`: the `ckatlas` command."""

import sys

from ckatlas.cli import main

sys.exit(main())
