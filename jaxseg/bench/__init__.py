"""Benchmarks: conv impls per layer, whole training steps, peers (PyTorch, Keras).

- `timing`: median-after-compile timing, GEMM peak, device and memory facts;
- `layers`: the conv layer shapes of a model (captured from it, or a table);
- `conv`: every impl on a layer, checked against lax, then timed;
- `train`: seconds per training step;
- `parallel`: the step on one device vs each data-parallel layout on N;
- `peers`: the same step in PyTorch and Keras 3, interleaved;
- `report`, `plot`: what `jaxseg bench` prints and draws.
"""
