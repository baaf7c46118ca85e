"""The paper's tables and their reproduction (``reproduce.py``).

- :mod:`fcn_jax.paper.tables`: the paper's numbers, read from ``assets/paper_tables.toml``;
- :mod:`fcn_jax.paper.report`: ours beside the paper's, as markdown and JSON;
- :mod:`fcn_jax.paper.reproduce`: finds each row's weights and evaluates them;
- :mod:`fcn_jax.paper.timing`: Table 1's forward time, measured or read from bench.py's JSON.

Only :mod:`~fcn_jax.paper.reproduce` and :mod:`~fcn_jax.paper.timing` import jax, so reading
and printing the tables is cheap.
"""
