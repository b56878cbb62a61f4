"""Evaluation of trained models (stage 1: self / cross reenactment, `vasa_jax.eval.reenact`)."""
