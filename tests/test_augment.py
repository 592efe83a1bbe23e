"""On-device augmentation: shapes, determinism per key, and that each op does its job."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ferjax.augment import NO_AUGMENT, AugmentConfig, augment_batch, tta_views


def _images(n=4, seed=0):
  return jnp.asarray(np.random.default_rng(seed).random((n, 48, 48)), jnp.float32)


def test_shapes_range_and_determinism_per_key():
  x = _images(8)
  cfg = AugmentConfig()
  a = augment_batch(jax.random.key(1), x, cfg)
  b = augment_batch(jax.random.key(1), x, cfg)
  c = augment_batch(jax.random.key(2), x, cfg)
  assert a.shape == x.shape and a.dtype == x.dtype
  assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  # Each example gets its own draw: identical inputs come out different.
  same = jnp.broadcast_to(x[:1], x.shape)
  out = augment_batch(jax.random.key(3), same, cfg)
  assert not np.allclose(out[0], out[1])


def test_disabled_is_identity():
  x = _images()
  np.testing.assert_array_equal(augment_batch(jax.random.key(0), x, NO_AUGMENT), x)


def test_flip_flips():
  x = _images(16)
  cfg = dataclasses.replace(NO_AUGMENT, flip=True)
  out = np.asarray(augment_batch(jax.random.key(0), x, cfg))
  flipped = [np.allclose(o, xi[:, ::-1], atol=1e-5) for o, xi in zip(out, np.asarray(x))]
  kept = [np.allclose(o, xi, atol=1e-5) for o, xi in zip(out, np.asarray(x))]
  assert all(f or k for f, k in zip(flipped, kept))
  assert 0 < sum(flipped) < len(x)  # about half, and both outcomes occur


def test_translation_shifts_content():
  img = np.zeros((48, 48), np.float32)
  img[20:28, 20:28] = 1.0
  x = jnp.asarray(np.stack([img] * 8))
  cfg = dataclasses.replace(NO_AUGMENT, max_translate=0.2)
  out = np.asarray(augment_batch(jax.random.key(0), x, cfg))
  centers = [np.argwhere(o > 0.5).mean(0) for o in out]
  moved = [np.abs(c - 23.5).max() for c in centers]
  assert max(moved) > 2.0  # up to 9.6 px
  assert all(m <= 0.2 * 48 + 1 for m in moved)
  # The mass is kept: a shift moves the square, it does not blur it away.
  assert all(abs(o.sum() - 64) < 12 for o in out)


def test_rotation_and_scale_change_geometry_only():
  x = _images(4)
  cfg = dataclasses.replace(NO_AUGMENT, max_rotation=15.0, max_scale=0.1)
  out = augment_batch(jax.random.key(0), x, cfg)
  assert not np.allclose(out, x)
  assert abs(float(out.mean()) - float(x.mean())) < 0.05


def test_brightness_contrast():
  x = jnp.full((6, 48, 48), 0.5)
  cfg = dataclasses.replace(NO_AUGMENT, brightness=0.3)
  out = np.asarray(augment_batch(jax.random.key(0), x, cfg))
  means = out.mean((1, 2))
  assert np.all(np.abs(means - 0.5) <= 0.3 + 1e-6) and np.ptp(means) > 0.05
  assert np.allclose(out, out.mean((1, 2), keepdims=True))  # uniform shift per image


def test_random_erasing_fills_one_rectangle():
  x = jnp.zeros((16, 48, 48))
  cfg = dataclasses.replace(NO_AUGMENT, erase_prob=1.0, erase_area=(0.1, 0.2))
  out = np.asarray(augment_batch(jax.random.key(0), x, cfg))
  for o in out:
    ys, xs = np.nonzero(o)
    if len(ys) == 0:  # filled with a grey level of exactly 0: possible, rare
      continue
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    assert box == len(ys)  # a solid rectangle
    assert 0.05 * 2304 <= len(ys) <= 0.25 * 2304


def test_augment_under_jit_matches_eager():
  x = _images(3)
  cfg = AugmentConfig()
  eager = augment_batch(jax.random.key(7), x, cfg)
  jitted = jax.jit(augment_batch, static_argnums=2)(jax.random.key(7), x, cfg)
  # The same draws; only float32 rounding may differ (jit fuses, e.g. into FMAs). A
  # source coordinate (below 64 px) takes about 8 roundings of 2^-24 of 64 each:
  # 3.1e-5 px. Bilinear sampling turns that into at most as much per axis times the
  # largest step between neighbouring pixels (1 in [0, 1]), and the contrast factor
  # (at most 1.2) scales it: 2 x 3.1e-5 x 1.2 = 7.3e-5. A different draw moves pixels
  # by tenths.
  np.testing.assert_allclose(eager, jitted, rtol=0, atol=1e-4)


def test_tta_views():
  x = _images(2)
  v = np.asarray(tta_views(x))
  assert v.shape == (10, 2, 48, 48)
  np.testing.assert_array_equal(v[0], x)
  np.testing.assert_array_equal(v[5], np.asarray(x)[:, :, ::-1])
  np.testing.assert_array_equal(v[1][:, 2:], np.asarray(x)[:, :-2])  # shifted down by 2
