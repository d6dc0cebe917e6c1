"""Convolution, transposed convolution and pooling, channels-last, 1 to 3 spatial dims.

Every conv implementation ("direct", "im2col", "matrix", "lax", "pallas") has
the same keyword-only signature and the semantics of `lax.conv_general_dilated`;
`conv_transpose` is its adjoint; `conv_matrix` shows the conv as a sparse matrix.
`jaxseg.reference` holds the NumPy loops they are all tested against.
"""

from jaxseg.ops.conv import CONV_IMPLS, conv
from jaxseg.ops.conv_matrix import conv_matrix, selection_matrix
from jaxseg.ops.conv_transpose import CONV_TRANSPOSE_IMPLS, conv_transpose
from jaxseg.ops.pooling import (POOL_IMPLS, avg_pool, max_pool, max_pool_lax, max_pool_with_argmax,
                                 max_unpool)

__all__ = [
  "CONV_IMPLS", "CONV_TRANSPOSE_IMPLS", "conv", "conv_transpose", "conv_matrix", "selection_matrix",
  "POOL_IMPLS", "max_pool", "max_pool_lax", "avg_pool",
  "max_pool_with_argmax", "max_unpool",
]
