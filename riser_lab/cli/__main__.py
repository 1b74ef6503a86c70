"""`python -m riser_lab.cli`: the `riser-lite` command."""

import sys

from riser_lab.cli import main

sys.exit(main())
