"""Networks: the stage-1 renderers' (volume: the appearance-volume warping decoder; geo_decoder:
the mesh renderer's mouth compositor) and stage 2's MotionDiT, with their building blocks."""

from vasa_jax.models.volume import (PatchDiscriminator, VolumeDecoder, float_to_images,
                                    images_to_float, param_count, volume_shape)

__all__ = ["VolumeDecoder", "PatchDiscriminator", "float_to_images", "images_to_float",
           "param_count", "volume_shape"]
