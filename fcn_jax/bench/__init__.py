"""Benchmarks: JAX against the project's PyTorch FCN, analytic FLOP counts, scaling.

- :mod:`fcn_jax.bench.flops`: FLOPs of every layer from the model's geometry table;
- :mod:`fcn_jax.bench.plan`: the cases of a run, checked before anything runs;
- :mod:`fcn_jax.bench.harness`: same weights, same inputs, interleaved timing (``bench.py``);
- :mod:`fcn_jax.bench.scaling`: time and memory against size, batch and devices
  (``bench.py --scaling``); :mod:`fcn_jax.bench.dataparallel` is its per-device-count child;
- :mod:`fcn_jax.bench.peaks`: the device's peak TFLOP/s.

Nothing here is imported by the rest of the library.
"""
