"""Classroom helpers, one idea per module.

    viz        plotly figures (one colour per model: `model_color`), rounded tables with captions
    widgets    ipywidgets views (rollout inspector, learnable-fraction explorer, live curves, dashboards)
    exercises  `check_*` checkers: "not implemented yet", diagnosis, then a hint that never holds the answer
    solutions  the reference answers, and `reveal(name)`
    start      the shared start of notebooks 03-06: `load_or_train_sft`, `sample_examples`
    notebook   `record` (values the notebook tests read back), front-end detection
"""
