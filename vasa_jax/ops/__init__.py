"""Numerical ops shared by the models (pure JAX; jit/vmap/grad friendly)."""

from vasa_jax.ops.grid_sample import (PADDING_MODES, grid_sample_2d, grid_sample_3d,
                                      identity_grid_2d, identity_grid_3d)

__all__ = ["PADDING_MODES", "grid_sample_2d", "grid_sample_3d", "identity_grid_2d",
           "identity_grid_3d"]
