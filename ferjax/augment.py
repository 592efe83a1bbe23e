"""On-device data augmentation, per example, driven by `jax.random` keys.

Everything here is traceable and runs inside the jitted train step: a batch key is split
into one key per example and the per-example function is `vmap`ped. The same key always
gives the same augmentation, so a resumed run redraws exactly what it drew before.

Geometric changes (flip, rotation, scale, translation) are composed into one affine map
and applied with a single bilinear resampling; then brightness/contrast; then random
erasing. Each is switched off by setting its strength to zero.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.scipy import ndimage


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Strengths of each augmentation; 0 (or False) switches it off.

  Attributes:
    flip: flip left-right with probability 1/2.
    max_rotation: rotation in degrees, uniform in [-max, max].
    max_scale: zoom, uniform in [1 - max, 1 + max].
    max_translate: shift as a fraction of the side, uniform in [-max, max] per axis
      (a random crop of the edge-padded image).
    brightness: added, uniform in [-b, b] (pixels are in [0, 1]).
    contrast: factor around the image mean, uniform in [1 - c, 1 + c].
    erase_prob: probability of erasing one random rectangle (random erasing).
    erase_area: (min, max) fraction of the image the rectangle covers.
  """
  flip: bool = True
  max_rotation: float = 10.0
  max_scale: float = 0.1
  max_translate: float = 0.1
  brightness: float = 0.2
  contrast: float = 0.2
  erase_prob: float = 0.5
  erase_area: tuple[float, float] = (0.02, 0.2)

  @property
  def enabled(self) -> bool:
    return bool(self.flip or self.max_rotation or self.max_scale or self.max_translate
                or self.brightness or self.contrast or self.erase_prob)


NO_AUGMENT = AugmentConfig(flip=False, max_rotation=0.0, max_scale=0.0, max_translate=0.0,
                           brightness=0.0, contrast=0.0, erase_prob=0.0)


def augment_image(key: jax.Array, image: jax.Array, config: AugmentConfig) -> jax.Array:
  """Augments one image [H, W] of floats in [0, 1]; returns the same shape."""
  h, w = image.shape
  k_flip, k_rot, k_scale, k_shift, k_bright, k_contrast, k_erase = jax.random.split(key, 7)

  if config.flip or config.max_rotation or config.max_scale or config.max_translate:
    angle = jnp.deg2rad(config.max_rotation) * jax.random.uniform(
        k_rot, minval=-1.0, maxval=1.0)
    scale = 1.0 + config.max_scale * jax.random.uniform(k_scale, minval=-1.0, maxval=1.0)
    shift = config.max_translate * jnp.array([h, w]) * jax.random.uniform(
        k_shift, (2,), minval=-1.0, maxval=1.0)
    flip = jnp.where(config.flip & jax.random.bernoulli(k_flip), -1.0, 1.0)
    # Output pixel p samples the input at c + M^-1 (p - c - shift), where M rotates,
    # scales and (optionally) mirrors about the centre c.
    center = jnp.array([(h - 1) / 2, (w - 1) / 2])
    rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32),
                              jnp.arange(w, dtype=jnp.float32), indexing="ij")
    y = rows - center[0] - shift[0]
    x = cols - center[1] - shift[1]
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    src_y = (cos * y - sin * x) / scale + center[0]
    src_x = flip * (sin * y + cos * x) / scale + center[1]
    image = ndimage.map_coordinates(image, [src_y, src_x], order=1, mode="nearest")

  if config.brightness or config.contrast:
    mean = jnp.mean(image)
    factor = 1.0 + config.contrast * jax.random.uniform(k_contrast, minval=-1.0, maxval=1.0)
    delta = config.brightness * jax.random.uniform(k_bright, minval=-1.0, maxval=1.0)
    image = jnp.clip((image - mean) * factor + mean + delta, 0.0, 1.0)

  if config.erase_prob:
    image = _random_erase(k_erase, image, config)
  return image


def _random_erase(key, image, config: AugmentConfig):
  """With probability erase_prob, fills one random rectangle with a random grey level."""
  h, w = image.shape
  k_apply, k_area, k_ratio, k_y, k_x, k_fill = jax.random.split(key, 6)
  area = h * w * jax.random.uniform(k_area, minval=config.erase_area[0],
                                    maxval=config.erase_area[1])
  log_ratio = jax.random.uniform(k_ratio, minval=jnp.log(0.3), maxval=jnp.log(3.3))
  eh = jnp.clip(jnp.sqrt(area * jnp.exp(log_ratio)), 1, h)
  ew = jnp.clip(jnp.sqrt(area / jnp.exp(log_ratio)), 1, w)
  y0 = jax.random.uniform(k_y) * (h - eh)
  x0 = jax.random.uniform(k_x) * (w - ew)
  rows = jnp.arange(h)[:, None]
  cols = jnp.arange(w)[None, :]
  inside = (rows >= y0) & (rows < y0 + eh) & (cols >= x0) & (cols < x0 + ew)
  inside &= jax.random.bernoulli(k_apply, config.erase_prob)
  return jnp.where(inside, jax.random.uniform(k_fill), image)


def augment_batch(key: jax.Array, images: jax.Array, config: AugmentConfig) -> jax.Array:
  """Augments a batch [B, H, W] with an independent draw per example."""
  if not config.enabled:
    return images
  keys = jax.random.split(key, images.shape[0])
  return jax.vmap(augment_image, in_axes=(0, 0, None))(keys, images, config)


def random_crop(key: jax.Array, images: jax.Array, size: int) -> jax.Array:
  """A random size x size crop of each image of a batch [B, H, W] (one draw each)."""
  b, h, w = images.shape
  if size == h and size == w:
    return images
  k_y, k_x = jax.random.split(key)
  ys = jax.random.randint(k_y, (b,), 0, h - size + 1)
  xs = jax.random.randint(k_x, (b,), 0, w - size + 1)
  crop = lambda im, y, x: jax.lax.dynamic_slice(im, (y, x), (size, size))
  return jax.vmap(crop)(images, ys, xs)


def center_crop(images: jax.Array, size: int) -> jax.Array:
  """The central size x size crop of each image of a batch [B, H, W]."""
  h, w = images.shape[1:]
  y, x = (h - size) // 2, (w - size) // 2
  return images[:, y:y + size, x:x + size]


def tta_views(images: jax.Array, *, shift: int = 2, size: int | None = None
              ) -> jax.Array:
  """Test-time views of a batch [B, H, W], each also flipped: V = 10 views [V, B, S, S].

  For a network that sees the whole image (`size` None or H): identity and 4 shifts by
  `shift` pixels with edge padding. For one trained on random crops of side `size`:
  the ten-crop views (the four corner crops and the centre crop).
  """
  h, w = images.shape[1:]
  if size is not None and size < h:
    views = [center_crop(images, size)]
    for y, x in ((0, 0), (0, w - size), (h - size, 0), (h - size, w - size)):
      views.append(images[:, y:y + size, x:x + size])
    views += [v[:, :, ::-1] for v in views]
    return jnp.stack(views)
  padded = jnp.pad(images, ((0, 0), (shift, shift), (shift, shift)), mode="edge")
  views = [images]
  for dy, dx in ((-shift, 0), (shift, 0), (0, -shift), (0, shift)):
    views.append(jax.lax.dynamic_slice(padded, (0, shift + dy, shift + dx),
                                       (images.shape[0], h, w)))
  views += [v[:, :, ::-1] for v in views]
  return jnp.stack(views)
