"""A float64 reference of a whole network's predictions, and the float32 tolerance
that any of its float32 paths (bucket sizes, CPU kernels, ONNX, devices) is held to.

Two float32 paths differ by their own rounding, which depends on the CPU (FMA or not,
vector width, the kernels XLA or onnxruntime picks there). Each path is therefore
compared with the float64 computation of the same network, never with another float32
path, and held to a fraction of the result's scale that float32 rounding, as estimated
below, stays under. (The reference rounds its logits to float32 once, as the network
returns float32: 2^-24 of their scale.) The reference shares the network's definition,
pixel normalisation and views with the JAX paths; the ONNX graph and onnxruntime's
views are built separately, so the ONNX tests check those too.

The estimate behind NET_REL. A layer's output is a sum of n products. Rounding each
product and partial sum to float32 (unit roundoff u = 2^-24 = 6.0e-8), with independent
errors, leaves an error near sqrt(n / 2) u of the layer's output scale; this is a
probabilistic estimate, not a bound (Higham's worst case, n u, assumes every rounding
goes the same way; blocked sums as in a matrix product do better). A convolution by
Winograd F(2x2, 3x3) (its transforms' coefficients are 0, 1/2 and 1) is taken to grow
that by up to 4. Summed over the layers of the largest network tested, `vgg_fast` at 40
px (convolutions with n = 9 to 3456, every one but the first counted as Winograd, and
its two dense layers), it comes to about 730 u = 4.4e-5, assuming each layer's error
reaches the logits with a gain near one: the measured errors do not grow with depth
(below). NET_REL is 1e-4 of the logits' largest magnitude, or of 1 where they are all
smaller (`logit_tolerance`), about twice that estimate. Measured on a 2-core AMD EPYC
(tiny, seed_cnn, vgg_fast and vgg_slim, with and without TTA, JAX at 1, 9 and 37 crops,
onnxruntime): 2.4e-7 (vgg_slim) to 1.3e-6 (tiny), 75 times under NET_REL. An error in
the computation itself (a wrong chunk, tile, view, padding or calibration) moves logits
by about their own scale; a BatchNorm epsilon of 1e-3 for 1e-5 changes each normalised
value by about 5e-4 of itself where the variances are near one.

Probabilities. The softmax's Jacobian diag(p) - p p^T has rows whose magnitudes sum to
2 p_i (1 - p_i) <= 1/2, so an error e in every logit moves each probability by at most
e / 2; a calibration multiplies the logits by its scale first. Where a test compares a
float32 argmax with the float64 one, it first checks that the float64 top two are
further apart than float32 can move them (`clear_top`): the crops are fixed, so that
holds or fails on every machine alike.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ferjax import augment, models

NET_REL = 1e-4


def logits64(info, params, batch_stats, crops, *, tta: bool = False) -> np.ndarray:
  """The network's logits for uint8 crops [N, 48, 48], computed in float64 with XLA's
  convolution: [N, C], or [10, N, C] (one per view) with `tta`. `info`: anything with
  the network's `model`, `num_classes` and `input_size` (a ModelInfo or a Config)."""
  assert getattr(info, "dtype", "float32") == "float32", "a float32 network's reference"
  net = models.create_model(info.model, num_classes=info.num_classes,
                            dtype=jnp.float64, conv_impl="xla")
  with jax.enable_x64(True):
    to64 = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)
    variables = {"params": to64(params), "batch_stats": to64(batch_stats)}
    x = jnp.asarray(np.asarray(crops), jnp.float64) / 255.0

    @jax.jit  # compiled once: several times faster than op by op
    def run(variables, x):
      apply = lambda v: net.apply(variables, v[..., None], train=False)
      if tta:
        return jax.lax.map(apply, augment.tta_views(x, size=info.input_size))
      return apply(augment.center_crop(x, info.input_size))
    return np.asarray(run(variables, x), np.float64)


def _softmax(z: np.ndarray) -> np.ndarray:
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def probs64(info, logits: np.ndarray, *, tta: bool = False,
            calibrated: bool = True) -> np.ndarray:
  """Probabilities [N, C] from `logits64`'s output, as `Classifier.classify` forms
  them: calibrated (where `info` carries a calibration), the mean over views with TTA."""
  z = logits
  if calibrated:
    scaling = info.scaling(tta)
    z = z * np.asarray(scaling.scale) + np.asarray(scaling.bias)
  p = _softmax(z)
  return p.mean(0) if tta else p


def logit_tolerance(ref_logits: np.ndarray) -> float:
  """How far float32 logits may be from the float64 ones: NET_REL of their scale."""
  return NET_REL * max(float(np.abs(ref_logits).max()), 1.0)


def prob_tolerance(info, ref_logits: np.ndarray, *, tta: bool = False,
                   calibrated: bool = True) -> float:
  """How far float32 probabilities may be from the float64 ones (module docstring)."""
  gain = max(info.scaling(tta).scale) if calibrated else 1.0
  return 0.5 * gain * logit_tolerance(ref_logits)


def assert_logits_close(got, ref_logits, what: str = "logits") -> None:
  """float32 logits `got` are within `logit_tolerance` of the float64 reference."""
  err = float(np.abs(np.asarray(got, np.float64) - ref_logits).max())
  tol = logit_tolerance(ref_logits)
  assert err <= tol, (f"{what}: largest error {err:.3g} against float64, more than the "
                      f"{tol:.3g} float32 rounding can explain (tests/reference.py)")


def assert_probs_close(got, info, ref_logits, *, tta: bool = False,
                       calibrated: bool = True, decimals: int | None = None,
                       what: str = "probabilities") -> None:
  """float32 probabilities `got` are within `prob_tolerance` of the float64 ones, and
  within half a unit of their last digit more where they were printed with `decimals`."""
  want = probs64(info, ref_logits, tta=tta, calibrated=calibrated)
  err = float(np.abs(np.asarray(got, np.float64) - want).max())
  tol = prob_tolerance(info, ref_logits, tta=tta, calibrated=calibrated)
  if decimals is not None:
    tol += 0.5 * 10.0**-decimals
  assert err <= tol, (f"{what}: largest error {err:.3g} against float64, more than the "
                      f"{tol:.3g} float32 rounding can explain (tests/reference.py)")


def clear_top(info, ref_logits, *, tta: bool = False, calibrated: bool = True
              ) -> np.ndarray:
  """Per crop: whether the float64 probabilities' top two classes are further apart than
  twice `prob_tolerance`, so that any float32 path within it has the same argmax."""
  p = np.sort(probs64(info, ref_logits, tta=tta, calibrated=calibrated), axis=-1)
  return p[:, -1] - p[:, -2] > 2 * prob_tolerance(info, ref_logits, tta=tta,
                                                   calibrated=calibrated)
