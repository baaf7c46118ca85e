"""Evaluation: the paper's metrics and scoring a weights directory on a split."""
