"""Benchmarks: JAX against the project's PyTorch FCN, analytic FLOP counts, scaling.

``bench.py``, one module per job:

- :mod:`fcn_jax.bench.plan`: the cases of a run, checked before anything runs;
- :mod:`fcn_jax.bench.harness`: :func:`~fcn_jax.bench.harness.run_bench`, one run put together;
- :mod:`fcn_jax.bench.env`: devices, precision settings, peaks, the run's metadata;
- :mod:`fcn_jax.bench.network`: one network in both frameworks, its inputs and recipe;
- :mod:`fcn_jax.bench.jax_side`, :mod:`fcn_jax.bench.torch_side`: each framework's runners;
- :mod:`fcn_jax.bench.timing`: precision and the interleaved timer (torch-free; ``paper/``
  uses it too);
- :mod:`fcn_jax.bench.schedule`: cases measured in turn, failures recorded, the run goes on;
- :mod:`fcn_jax.bench.records`: ``bench.json``'s schema, writer and reader;
- :mod:`fcn_jax.bench.markdown`: the tables;
- :mod:`fcn_jax.bench.flops`: FLOPs of every layer from the model's geometry table;
- :mod:`fcn_jax.bench.peaks`: the device's peak TFLOP/s;
- :mod:`fcn_jax.bench.scaling`: time and memory against size, batch and devices
  (``bench.py --scaling``); :mod:`fcn_jax.bench.dataparallel` is its per-device-count child;
- :mod:`fcn_jax.bench.accelerator`: ``bench.py --suite accelerator``, with its
  :mod:`~fcn_jax.bench.budget`, :mod:`~fcn_jax.bench.suite_state`,
  :mod:`~fcn_jax.bench.suite_report`, :mod:`~fcn_jax.bench.machine` and
  :mod:`~fcn_jax.bench.device_parity`.

Nothing here is imported by the rest of the library but :mod:`fcn_jax.paper` (timing, records).
"""
