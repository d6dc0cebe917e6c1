"""Test setup, before JAX is imported: four faked CPU devices, and the CPU only where no GPU
backend is installed.

With a CUDA or ROCm plugin of jaxlib installed (`pip install -e '.[cuda12]'`)
JAX picks its GPU, so the compiled-kernel tests (tests/kernels) run the
Pallas kernels compiled instead of skipping; everything else runs there too.
Without one, JAX_PLATFORMS=cpu spares JAX its search for accelerators.
"""

import importlib.util
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=4").strip()
_GPU_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin")
if not any(importlib.util.find_spec(p) for p in _GPU_PLUGINS):
  os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Property tests draw the same examples on every run unless HYPOTHESIS_PROFILE=explore: a
# failure found stays reproducible, and CI's verdict does not depend on the draw (one local run
# saw XLA:CPU abort while compiling a random transposed-conv shape, not reproduced in 700 more
# examples). `HYPOTHESIS_PROFILE=explore make test` draws new examples each run.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("repeatable", derandomize=True)
_hypothesis_settings.register_profile("explore", derandomize=False)
_hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
