"""``python -m riser_lite.data.synthetic``: see `riser_lite.data.synthetic.cli`."""

from riser_lite.data.synthetic.cli import main

main()
