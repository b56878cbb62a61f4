"""Networks: stage 1 face latent model (face_latent) and its building blocks."""

from vasa_jax.models.face_latent import (FaceLatentModel, PatchDiscriminator, float_to_images,
                                         images_to_float, param_count, volume_shape)

__all__ = ["FaceLatentModel", "PatchDiscriminator", "float_to_images", "images_to_float",
           "param_count", "volume_shape"]
