"""The paper's tables and their reproduction (``reproduce.py``).

- :mod:`fcn_jax.paper.tables`: the paper's numbers, read from ``assets/paper_tables.toml``;
- :mod:`fcn_jax.paper.report`: ours beside the paper's, as markdown and JSON;
- :mod:`fcn_jax.paper.reproduce`: finds each row's weights, evaluates them, times the forward
  pass.

Only :mod:`~fcn_jax.paper.reproduce` imports jax, so reading and printing the tables is cheap.
"""
