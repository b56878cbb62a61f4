"""The image metrics every evaluator reports (PSNR, SSIM) and the dataset helpers."""

import numpy as np
import pytest

from vasa_jax.eval import metrics


def test_psnr_identical_is_capped_and_decreases_with_noise():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
  np.testing.assert_allclose(metrics.psnr(x, x), metrics.PSNR_CAP_DB, rtol=1e-5)
  assert np.all(np.isinf(metrics.psnr(x, x, max_db=None)))
  # A constant offset of 1 grey level: MSE 1 -> 20 log10(255) dB.
  y = np.clip(x.astype(np.int32) + 1, 0, 255).astype(np.uint8)
  ref = 10 * np.log10(255.0 ** 2 / np.mean((x.astype(np.float64) - y) ** 2, axis=(1, 2, 3)))
  np.testing.assert_allclose(metrics.psnr(x, y), ref, rtol=1e-5)
  prev_p, prev_s = np.full(2, np.inf), np.full(2, np.inf)
  for sigma in (2.0, 8.0, 32.0):
    noisy = np.clip(x + rng.normal(0, sigma, x.shape), 0, 255).astype(np.uint8)
    p, s = np.asarray(metrics.psnr(x, noisy)), np.asarray(metrics.ssim(x, noisy))
    assert p.shape == (2,) and s.shape == (2,)
    assert np.all(p < prev_p) and np.all(s < prev_s)
    prev_p, prev_s = p, s
  np.testing.assert_allclose(metrics.ssim(x, x), 1.0, atol=1e-5)
  assert np.asarray(metrics.ssim(x[0], x[0])).shape == ()


def test_host_psnr_and_ssim_equal_the_jax_ones():
  rng = np.random.default_rng(3)
  for shape in ((40, 52, 3), (9, 13, 3)):
    a = rng.integers(0, 255, shape).astype(np.uint8)
    b = np.clip(a + rng.normal(0, 25, shape), 0, 255).astype(np.uint8)
    assert metrics.ssim_image(a, b) == pytest.approx(float(metrics.ssim(a, b)), abs=1e-5)
    assert metrics.psnr_image(a, b) == pytest.approx(float(metrics.psnr(a, b)), abs=1e-3)
    assert metrics.psnr_image(a, a) == pytest.approx(float(metrics.psnr(a, a)))
