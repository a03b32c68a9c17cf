"""`python -m lir.cli`: the `lir` command."""

import sys

from lir.cli import main

sys.exit(main())
