"""Evaluation: the paper's metrics and scoring a weights directory on a split.

``metrics`` (confusion matrix, the release's ``score.py`` metrics), ``evaluate`` (the loop that
accumulates the confusion matrices), ``observers`` (what else sees each batch: the protocol,
per-image scores), ``torch_observer`` (the PyTorch comparison), ``options`` (how to evaluate),
``result`` (the scores, their JSON and report), ``heads`` (which label key each head reads).
"""
