"""The image and adversarial losses the stage-1 trainers use (vasa_jax/losses.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import FAST_COMPILE
from vasa_jax import losses


def _run(fn, *args):
  """jax.jit(fn)(*args), compiled with cheap CPU options."""
  return jax.jit(fn).lower(*args).compile(FAST_COMPILE)(*args)


def _images(seed, b, s):
  return jnp.asarray(np.random.default_rng(seed).uniform(-1.0, 1.0, (b, s, s, 3)), jnp.float32)


def test_image_losses():
  x = _images(0, 2, 32)
  y = jnp.clip(x + 0.3 * jnp.asarray(np.random.default_rng(1).normal(size=x.shape), jnp.float32),
               -1, 1)

  def run(x, y):
    g = jax.grad(lambda a: losses.ms_ssim_loss(a, y) + losses.laplacian_l1(a, y))(x)
    return dict(ssim_xx=losses.ssim(x, x), ms_xx=losses.ms_ssim(x, x), ms_xy=losses.ms_ssim(x, y),
                loss_xx=losses.ms_ssim_loss(x, x), lap_xx=losses.laplacian_l1(x, x),
                lap_xy=losses.laplacian_l1(x, y), l1_xy=losses.l1(x, y), grad=g,
                bands=losses.laplacian_pyramid(x, 3))

  r = _run(run, x, y)
  assert abs(float(r["ssim_xx"]) - 1.0) < 1e-5
  assert abs(float(r["ms_xx"]) - 1.0) < 1e-5
  assert float(r["ms_xy"]) < 0.95
  assert float(r["loss_xx"]) == pytest.approx(0.0, abs=1e-5)
  assert float(r["lap_xx"]) == 0.0 and float(r["lap_xy"]) > 0
  assert float(r["l1_xy"]) > 0
  assert bool(jnp.all(jnp.isfinite(r["grad"])))
  assert [b.shape[1] for b in r["bands"]] == [32, 16, 8]


def test_hinge_signs_and_feature_matching():
  big = [{"logits": jnp.full((2, 4, 4, 1), 5.0), "features": [jnp.ones((2, 4, 4, 2))]}]
  small = [{"logits": jnp.full((2, 4, 4, 1), -5.0), "features": [jnp.zeros((2, 4, 4, 2))]}]
  assert float(losses.hinge_d_loss(big, small)) == 0.0          # confident and right
  assert float(losses.hinge_d_loss(small, big)) == pytest.approx(12.0)   # 6 + 6
  assert float(losses.hinge_g_loss(big)) == -5.0                 # fooled D: low G loss
  assert float(losses.hinge_g_loss(small)) == 5.0
  assert float(losses.feature_matching(big, big)) == 0.0
  assert float(losses.feature_matching(big, small)) == 1.0


def test_vgg_from_local_npz(tmp_path):
  rng = np.random.default_rng(0)
  widths = (4, 4, 8, 8)    # a small stand-in for VGG19's conv1_1..conv2_2
  arrays, cin = {}, 3
  for name, w in zip(("conv1_1", "conv1_2", "conv2_1", "conv2_2"), widths):
    arrays[f"{name}/kernel"] = rng.normal(0, 0.3, (3, 3, cin, w)).astype(np.float32)
    arrays[f"{name}/bias"] = np.zeros(w, np.float32)
    cin = w
  path = tmp_path / "vgg.npz"
  np.savez(path, **arrays)
  fn = losses.make_vgg_loss(str(path))     # reaches relu1_1 and relu2_1 only
  x = _images(0, 1, 16)
  same, diff = _run(lambda x: (fn(x, x), fn(x, -x)), x)
  assert float(same) == 0.0 and float(diff) > 0
  # torchvision layout is accepted too
  torch_arrays = {"features.0.weight": arrays["conv1_1/kernel"].transpose(3, 2, 0, 1),
                  "features.0.bias": arrays["conv1_1/bias"]}
  np.savez(tmp_path / "tv.npz", **torch_arrays)
  params, w = losses.load_vgg19_params(str(tmp_path / "tv.npz"))
  assert w == (4,)
  np.testing.assert_array_equal(np.asarray(params["params"]["conv1_1"]["kernel"]),
                                arrays["conv1_1/kernel"])
