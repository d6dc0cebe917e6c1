"""jaxseg: CNN image segmentation in JAX/Flax with convolution open to inspection."""

__version__ = "0.1.0"
