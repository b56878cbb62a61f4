"""Rigid + non-rigid 3D warps of the appearance volume (pure functions).

Coordinates. Every volume `[B, D, h, w, C]` spans the normalised cube [-1, 1]^3 with
`grid_sample_3d`'s (x, y, z) order: x indexes w (image right), y indexes h (image down) and z
indexes D (depth, away from the camera; slice 0 is nearest). These are the OpenCV camera axes
of docs/conventions.md, and for a frontal head also the head's own axes.

Metres -> normalised units. The cube is a physical cube of half side

    E = ref_distance * tan(fov / 2)          (0.65 m * tan(7 deg) = 0.0798 m by default)

i.e. at the reference distance its x/y extent is exactly the camera's field of view, so the
source/driving volumes are image aligned. Because the cube is physically isotropic, rotations
act directly on normalised coordinates.

Rigid pose. A canonical (head frame) point p, in units of E, shows up in a frame with pose
(yaw, pitch, roll, tx, ty, tz) at the image-aligned volume coordinate

    q = s * R p + t,     s = ref_distance / tz,     t = s * (tx, ty, 0) / E

(weak perspective about the head centre: tz acts as a zoom relative to the reference distance,
the whole head, depth included, scales with it; tx, ty shift it in the image by their
projection). R = Rz(roll) @ Ry(yaw) @ Rx(pitch) with the signs of docs/conventions.md: yaw > 0
turns the face (head-frame -z) towards image right (+x), pitch > 0 tips the face (and chin) down
(-z towards +y),
roll > 0 is clockwise in the image (+x towards +y).

Warps (each direction becomes ONE sampling grid and ONE grid_sample_3d):
  source -> canonical: canonical voxel p samples the source volume at
      canonical_to_source(p) = s_s * R_s (p + flow_s(p)) + t_s
  canonical -> driving: driving voxel q samples the canonical volume at
      driving_to_canonical(q) = R_d^T ((q - t_d) / s_d) + flow_d(q)
With equal poses and zero flows the composition canonical_to_source(driving_to_canonical(q)) is
q: the portrait is reproduced through the identity map.

Mesh flow (`mesh_flow`): the non-rigid part that face meshes imply. Given the same mesh vertex
v at p_d,v on the driving head and at p_s,v on the portrait's (both in the canonical head frame),
a driving point u moves by a Gaussian-weighted mean of the vertices' displacements,

    flow(u) = sum_v w_v(u) (p_s,v - p_d,v) / (sum_v w_v(u) + floor),
    w_v(u) = exp(-|(u - p_d,v) / sigma|^2 / 2)      (sigma per axis: depth has its own)

so it is the vertex displacement on the face, and it falls to zero away from it (floor): hair,
neck and background stay rigid.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from vasa_jax.ops.grid_sample import grid_sample_3d, identity_grid_3d

__all__ = ["rotation_matrix", "pose_scale_shift", "canonical_to_source", "driving_to_canonical",
           "mesh_flow", "half_extent", "REFERENCE_POSE", "grid_sample_3d", "identity_grid_3d"]

REF_DISTANCE = 0.65
FOV_DEG = 14.0
# Frontal head at the reference distance: the rigid warp is the identity.
REFERENCE_POSE = (0.0, 0.0, 0.0, 0.0, 0.0, REF_DISTANCE)


def half_extent(ref_distance: float = REF_DISTANCE, fov_deg: float = FOV_DEG) -> float:
  """Half side E (metres) of the volume cube."""
  return ref_distance * math.tan(math.radians(fov_deg) / 2.0)


def rotation_matrix(yaw, pitch, roll):
  """[...] angles (rad) -> [..., 3, 3] R = Rz(roll) @ Ry(yaw) @ Rx(pitch), conventions' signs."""
  yaw, pitch, roll = (jnp.asarray(a, jnp.float32) for a in (yaw, pitch, roll))
  cy, sy = jnp.cos(yaw), jnp.sin(yaw)
  cp, sp = jnp.cos(pitch), jnp.sin(pitch)
  cr, sr = jnp.cos(roll), jnp.sin(roll)
  one, zero = jnp.ones_like(yaw), jnp.zeros_like(yaw)

  def mat(rows):
    return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)

  # Pitch about x: the face direction (0, 0, -1) goes to +y (down) for pitch > 0.
  rx = mat([[one, zero, zero], [zero, cp, -sp], [zero, sp, cp]])
  # Yaw about the (downward) y axis, signed so that the face direction (0, 0, -1) goes to +x.
  ry = mat([[cy, zero, -sy], [zero, one, zero], [sy, zero, cy]])
  rz = mat([[cr, -sr, zero], [sr, cr, zero], [zero, zero, one]])     # +x -> +y: clockwise
  return rz @ ry @ rx


def pose_scale_shift(z_pose, *, ref_distance: float = REF_DISTANCE, fov_deg: float = FOV_DEG):
  """z_pose [B, 6] -> (R [B,3,3], s [B], t [B,3]) of q = s R p + t in normalised units."""
  z_pose = jnp.asarray(z_pose, jnp.float32)
  r = rotation_matrix(z_pose[:, 0], z_pose[:, 1], z_pose[:, 2])
  s = ref_distance / z_pose[:, 5]
  e = half_extent(ref_distance, fov_deg)
  t = jnp.stack([z_pose[:, 3], z_pose[:, 4], jnp.zeros_like(s)], axis=-1) * (s[:, None] / e)
  return r, s, t


def _bcast(x, points):
  """Per-example values [B] or [B, 3] -> broadcastable against points [B, *spatial, 3]."""
  tail = x.shape[1:] if x.ndim > 1 else (1,)
  return x.reshape(x.shape[:1] + (1,) * (points.ndim - 2) + tail)


def _as_batched(points, b):
  points = jnp.asarray(points, jnp.float32)
  if points.ndim == 4:   # [D, h, w, 3] shared grid
    points = jnp.broadcast_to(points[None], (b,) + points.shape)
  return points


def canonical_to_source(points, z_pose, flow=None, **kw):
  """Canonical points p [B?, D, h, w, 3] -> source coordinates s R (p + flow) + t, float32."""
  r, s, t = pose_scale_shift(z_pose, **kw)
  p = _as_batched(points, r.shape[0])
  if flow is not None:
    p = p + flow.astype(jnp.float32)
  q = jnp.einsum("bij,b...j->b...i", r, p)
  return _bcast(s, q) * q + _bcast(t, q)


def driving_to_canonical(points, z_pose, flow=None, **kw):
  """Driving points q [B?, D, h, w, 3] -> canonical coordinates R^T ((q - t) / s) + flow."""
  r, s, t = pose_scale_shift(z_pose, **kw)
  q = _as_batched(points, r.shape[0])
  q = (q - _bcast(t, q)) / _bcast(s, q)
  p = jnp.einsum("bji,b...j->b...i", r, q)   # R^T q
  if flow is not None:
    p = p + flow.astype(jnp.float32)
  return p


def mesh_flow(points, verts_s, verts_d, *, sigma: float = 0.06, depth_sigma: float = 0.3,
              floor: float = 0.05):
  """Points u [B, *spatial, 3] (canonical frame of the driving head) -> their displacement
  [B, *spatial, 3] towards the portrait's mesh (see the module docstring). verts_s, verts_d:
  [B, V, 3], the same vertices on the portrait's and on the driving canonical mesh."""
  u = jnp.asarray(points, jnp.float32)
  b = u.shape[0]
  flat = u.reshape(b, -1, 3)
  inv = jnp.asarray([1.0 / sigma, 1.0 / sigma, 1.0 / depth_sigma], jnp.float32)
  a, d = flat * inv, jnp.asarray(verts_d, jnp.float32) * inv
  d2 = (jnp.sum(a * a, -1)[:, :, None] + jnp.sum(d * d, -1)[:, None, :]
        - 2.0 * jnp.einsum("bnc,bvc->bnv", a, d))
  w = jnp.exp(-0.5 * jnp.maximum(d2, 0.0))
  disp = jnp.asarray(verts_s, jnp.float32) - jnp.asarray(verts_d, jnp.float32)
  flow = jnp.einsum("bnv,bvc->bnc", w, disp) / (jnp.sum(w, -1, keepdims=True) + floor)
  return flow.reshape(u.shape)
