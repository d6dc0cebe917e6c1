"""`ConvPolicy`: the tuning rules of the `auto` conv route, one frozen value.

`auto` (`jaxseg.ops.auto`) picks, per layer and per platform, which
implementation runs. On the CPU the rules below choose between the C++
kernels (`jaxseg.ops.cpu`), XLA's convolution with GEMM gradients
(`jaxseg.ops.conv_grad`), the stride-phase transposed conv
(`jaxseg.ops.phase`) and plain XLA; on other platforms `auto` is XLA.

The defaults are what the models use. A benchmark or test that wants another
rule passes another value (``dataclasses.replace(DEFAULT_POLICY, winograd=False)``)
to `ops.conv(..., policy=...)` or to a model (``conv_policy=``); nothing reads
module globals. Where each threshold was measured is in
experiments/bench/RESULTS.md (sessions 2-6, 9, 11).
"""

from __future__ import annotations

import dataclasses

from jaxseg.errors import ConfigError

STRIDED_DX = ("kernel", "col2im", "xla")


@dataclasses.dataclass(frozen=True)
class ConvPolicy:
  """Rules of the `auto` route on the CPU (all layers: float32, channels-last).

  Attributes:
    cpu_kernels: use the C++ kernels at all (direct and Winograd).
    winograd: 3x3/1 (and 5x5/2, 6x6/2 by space-to-depth) 2-D convs with at
      least `winograd_min_channels` input and output channels on at most
      `winograd_max_pixels` output pixels per image run as Winograd F(4x4, 3x3):
      the many-channel layers on small images, where its 4x fewer
      multiplications beat XLA's conv.
    winograd_3d: 3x3x3 stride-1 SAME 3-D convs with at least
      `winograd_3d_min_channels` input and output channels run as Winograd
      F(2x2, 3x3) over the in-plane taps (`cpu.winograd3d`): 2.25x fewer
      multiplications than the direct kernels. Fused band by band of tile rows
      ("winograd3d"), except on at most `winograd_3d_products_max_voxels`
      output voxels in the whole batch ("winograd3d_products": the transforms
      and per-position products over the whole batch), the deepest layers,
      where the kernel outweighs the data and each band would read all of it.
    direct_max_channel_product, direct_min_pixels: other stride-1 2-D convs with
      C_in * C_out at most this on at least this many output pixels per image
      run the C++ direct kernels (few channels on large images, where XLA:CPU's
      conv is slow).
    direct_max_patch: any 2-D conv with taps * C_in at most this (a first layer
      on one channel) runs the C++ direct kernels too.
    direct_3d: every 3-D conv the kernels support runs on them (XLA:CPU's 3-D
      convs were several times slower on every layer of a 3-D U-Net).
    direct_min_dx_channels: below this many input channels the input gradient is
      one GEMM and an overlap-add (the kernel holds 16 channels per vector).
    gemm_grad: ungrouped convs not on the kernels, strided or with few output rows,
      keep XLA's forward but take dW as GEMMs (XLA:CPU's strided dW is 2-4x
      slower than its forward).
    gemm_small_patch: dW is one GEMM over the transposed patches when taps * C_in
      is at most this, else one GEMM per tap (no patches matrix).
    gemm_max_rows_stride1, gemm_stride1_small_only: stride-1 convs take GEMM dW only
      with at most this many output rows (N * pixels) and, if set, small patches.
    strided_dx: input gradient of strided convs on the GEMM route: "kernel" (stride
      phases on the C++ forward kernel, from `direct_min_dx_channels` channels),
      "col2im" (one GEMM + overlap-add) or "xla" (XLA's conv over the dilated cotangent).
    transpose_phase: strided transposed convs in stride-phase form (one stride-1
      conv and a depth-to-space) instead of XLA's conv over the stride-dilated input.
    transpose_rows: kernel <= stride transposed convs (2x2/2) as one GEMM per row
      phase, without the depth-to-space transpose.
    transpose_direct: kernel == stride transposed convs (the U-Net's up-convs) on the
      C++ kernels, which write each phase's GEMM rows in place (else "phase_rows").
  """
  cpu_kernels: bool = True
  winograd: bool = True
  winograd_min_channels: int = 32
  winograd_max_pixels: int = 64 * 64
  winograd_3d: bool = True
  winograd_3d_min_channels: int = 16
  winograd_3d_products_max_voxels: int = 4 * 4 * 8 * 8
  direct_max_channel_product: int = 256 * 128
  direct_min_pixels: int = 32 * 32
  direct_max_patch: int = 64
  direct_3d: bool = True
  direct_min_dx_channels: int = 16
  gemm_grad: bool = True
  gemm_small_patch: int = 64
  gemm_max_rows_stride1: int = 2 ** 14
  gemm_stride1_small_only: bool = True
  strided_dx: str = "kernel"
  transpose_phase: bool = True
  transpose_rows: bool = True
  transpose_direct: bool = True

  def __post_init__(self):
    if self.strided_dx not in STRIDED_DX:
      raise ConfigError(f"ConvPolicy.strided_dx must be one of {', '.join(STRIDED_DX)}, got {self.strided_dx!r}")


DEFAULT_POLICY = ConvPolicy()


def resolve(policy: ConvPolicy | None) -> ConvPolicy:
  """`policy`, or the default; ConfigError for anything else."""
  if policy is None:
    return DEFAULT_POLICY
  if not isinstance(policy, ConvPolicy):
    raise ConfigError(f"policy must be a jaxseg.ops.ConvPolicy, got {type(policy).__name__}")
  return policy
