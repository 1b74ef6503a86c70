"""Experiments built on the stages: variant comparisons over seeds, the demo, the HTML report."""
