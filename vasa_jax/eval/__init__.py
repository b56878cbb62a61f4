"""Evaluation of trained models (stage 1: self-reenactment, `vasa_jax.eval.geo_reenact`;
the report, motion, controls, lip sync and the evaluators they use)."""
