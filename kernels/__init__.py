"""Hand-written Pallas kernels, used by `jaxseg.ops` when asked for impl="pallas".

One file per kernel (block-size dataclass, kernel, jitted wrapper with a
custom VJP, plain-jnp `*_reference`):

- conv.py           `conv_pallas`: 2-D conv as an implicit GEMM. BlockSizes:
                    block_m=64 output pixels, block_n / block_k = min(64, next
                    power of two of Cout / Cin) channels (>= 16, powers of two).
- conv_transpose.py `conv_transpose_pallas`: the adjoint, one stride phase per
                    grid slot (the lab's 31x31 / 16 layer: 256 phases x 4 taps).
- pool.py           `max_pool_pallas`: max + argmax forward, gather backward.
                    PoolBlockSizes: block_m=64, block_c = min(64, pow2 >= C).
- fused_loss.py     `fused_ce_dice`: softmax CE + per-class Dice sums in one
                    pass. LossBlockSizes: block_rows=256.
- backend.py        interpret default (CPU) and the GPU compiler (Triton).

The conv kernels are imported lazily by `jaxseg.ops`, so JAX's Pallas is only
loaded when a Pallas impl is used.
"""
