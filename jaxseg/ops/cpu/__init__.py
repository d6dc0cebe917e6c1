"""Hand-written C++ convolution kernels for the CPU, called through XLA's FFI.

- `build`: compile `_cpu_conv.cc` on first use, load it, register its handlers;
  `build.available()` says whether this host can use them (AVX-512, a compiler).
- `direct`: direct convolution and weight-gradient kernels; the input gradient
  from the forward kernel on the flipped kernel (`direct.conv`); transposed
  convs whose kernel equals the stride (`direct.conv_transpose_geo`).
- `winograd`: Winograd F(4x4, 3x3) from the kernels' tile transforms and
  batched products (`winograd.conv_geo`).
- `winograd3d`: 3x3x3 convs as Winograd F(2x2, 3x3) over the in-plane taps,
  depth taps a (3, 1, 1) conv per tile position on the direct kernels, from
  its own tile and kernel transforms (`winograd3d.conv_geo`).

Which layers take these paths is `jaxseg.ops.auto`'s rule; they only ever run
in the CPU branch of a platform-dependent function, so a program lowered for
another platform holds none of their custom calls.
"""

from jaxseg.ops.cpu.build import available

__all__ = ["available"]
