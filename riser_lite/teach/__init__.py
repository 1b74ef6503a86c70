"""Classroom helpers: plotly figures, ipywidgets views, exercises and checkers, notebook and Colab helpers."""
