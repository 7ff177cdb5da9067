"""Sweeps, estimators of the model's laws, plots and reports."""
