"""The research harness behind the reference reports of docs/results/, apart from the library.

Run from the repository root (it is not installed with the package; `riser_lite` never imports it):

    python -m lab.sweep ...     # `riser-lite compare` over learning rates: a stability map
    python -m lab.choose ...    # each variant's setting, picked on validation sweeps by a fixed rule
"""
