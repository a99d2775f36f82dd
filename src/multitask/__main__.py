"""`python -m multitask demo`: the same as the `multitask` command."""

import sys

from ._cli import main

sys.exit(main())
