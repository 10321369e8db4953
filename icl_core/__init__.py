"""Core library of the induction-heads explorer: models, training, snapshots and metrics.

Nothing in this package imports Streamlit, so every function is usable (and tested) on its own.
"""
