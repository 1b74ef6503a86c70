"""`python -m riser_lite.cli`: the `riser-lite` command."""

import sys

from riser_lite.cli import main

sys.exit(main())
