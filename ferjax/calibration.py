"""Calibrated probabilities: how often an answer given with probability p is right.

A network trained with cross-entropy and label smoothing is not calibrated: its top
probability says little about how often it is right. Calibration fits, on the
validation split only, a per-class affine map of the logits (vector scaling,
`z * scale + bias`; with one shared scale and no bias it is temperature scaling) by
minimising the negative log-likelihood; the arg-max of the logits may move only where
the biases differ. With TTA the probabilities are the mean of the ten views' calibrated
softmaxes, and that mean gets a map of its own, fitted the same way.

Measures (all on a split's labels):
  ece: expected calibration error, 15 equal-width bins of the top probability: the
    mean over faces of |accuracy - confidence| of their bin, weighted by bin size.
  nll: mean negative log-likelihood of the true class.
  brier: mean squared distance between the probability vector and the one-hot label.

`threshold_for_accuracy` picks the lowest top probability to answer at so that the
answered faces of the validation split are at least a target fraction correct; faces
below it are `uncertain`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ferjax.modelfile import Scaling

ECE_BINS = 15
# Answered faces of the validation split must be at least this fraction correct.
DEFAULT_TARGET = 0.80
# Where a training run keeps the calibration of its best checkpoint.
RUN_FILE = "calibration.json"


def ece(probs: np.ndarray, labels: np.ndarray, *, bins: int = ECE_BINS) -> float:
  """Expected calibration error of the top probability, `bins` equal-width bins."""
  probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
  if not len(labels):
    return float("nan")
  conf = probs.max(-1)
  right = probs.argmax(-1) == labels
  # Bin k holds confidences in (k/bins, (k+1)/bins]; 0 joins the first bin.
  which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
  total = 0.0
  for k in range(bins):
    in_bin = which == k
    if in_bin.any():
      total += in_bin.sum() * abs(right[in_bin].mean() - conf[in_bin].mean())
  return float(total / len(labels))


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
  p = np.asarray(probs, np.float64)[np.arange(len(labels)), labels]
  return float(-np.log(np.maximum(p, 1e-12)).mean())


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
  probs = np.asarray(probs, np.float64)
  onehot = np.eye(probs.shape[-1])[labels]
  return float(((probs - onehot) ** 2).sum(-1).mean())


def measures(probs: np.ndarray, labels: np.ndarray) -> dict:
  """{"ece", "nll", "brier", "accuracy"} of probabilities [N, C] against labels [N]."""
  return {"ece": ece(probs, labels), "nll": nll(probs, labels),
          "brier": brier(probs, labels),
          "accuracy": float((np.asarray(probs).argmax(-1) == labels).mean())}


def calibrated_probs(logits: np.ndarray, s: Scaling) -> np.ndarray:
  """Probabilities [N, C] from logits [N, C], or [V, N, C] (the views' mean)."""
  scale, bias = s.arrays()
  p = jax.nn.softmax(jnp.asarray(logits, jnp.float32) * scale + bias)
  return np.asarray(p.mean(0) if p.ndim == 3 else p)


def fit(logits: np.ndarray, labels: np.ndarray, *, vector: bool = True,
        steps: int = 100) -> Scaling:
  """The Scaling that minimises the NLL of `labels` under `calibrated_probs(logits)`.

  `vector=False` fits one temperature (a shared scale, no bias). L-BFGS on the log of
  the scales (so they stay positive), from the identity, `steps` iterations in one
  compiled loop; for six classes it converges in a few dozen.
  """
  theta = _fit(jnp.asarray(logits, jnp.float32), jnp.asarray(labels), vector=vector,
               steps=steps)
  scale, bias = _unpack(theta, logits.shape[-1], vector)
  return Scaling(scale=tuple(float(v) for v in scale), bias=tuple(float(v) for v in bias))


def _unpack(theta, c: int, vector: bool):
  if vector:
    return jnp.exp(theta[:c]), theta[c:] - theta[c:].mean()  # biases sum to zero
  return jnp.exp(theta[:1]) * jnp.ones(c), jnp.zeros(c)


@functools.partial(jax.jit, static_argnames=("vector", "steps"))
def _fit(z, y, *, vector: bool, steps: int):
  import optax  # only here: the inference path never imports the optimizer library
  c = z.shape[-1]

  def loss(theta):
    scale, bias = _unpack(theta, c, vector)
    p = jax.nn.softmax(z * scale + bias)
    if p.ndim == 3:
      p = p.mean(0)
    return -jnp.log(jnp.maximum(jnp.take_along_axis(p, y[:, None], -1), 1e-12)).mean()

  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  def step(_, carry):
    theta, state = carry
    value, grad = value_and_grad(theta, state=state)
    updates, state = opt.update(grad, state, theta, value=value, grad=grad,
                                value_fn=loss)
    return optax.apply_updates(theta, updates), state

  theta = jnp.zeros(2 * c if vector else 1)
  theta, _ = jax.lax.fori_loop(0, steps, step, (theta, opt.init(theta)))
  return theta


def threshold_for_accuracy(probs: np.ndarray, labels: np.ndarray, *,
                           target: float) -> float:
  """The lowest top-probability threshold t such that the faces with top probability
  >= t are at least `target` correct (1.0 where no threshold reaches it)."""
  conf = np.asarray(probs).max(-1)
  right = np.asarray(probs).argmax(-1) == labels
  order = np.argsort(-conf, kind="stable")
  conf, right = conf[order], right[order]
  answered_acc = np.cumsum(right) / np.arange(1, len(right) + 1)
  # Answering the k most confident faces; ties in confidence are answered together.
  last_of_tie = np.r_[conf[1:] != conf[:-1], True]
  ok = np.flatnonzero((answered_acc >= target) & last_of_tie)
  return float(conf[ok[-1]]) if len(ok) else 1.0


def coverage(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
  """Share of faces answered (top probability >= threshold) and their accuracy."""
  conf = np.asarray(probs).max(-1)
  answered = conf >= threshold
  right = np.asarray(probs).argmax(-1) == labels
  return {"threshold": float(threshold), "coverage": float(answered.mean()),
          "answered_accuracy": float(right[answered].mean()) if answered.any()
          else float("nan")}


def risk_coverage(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(coverage, accuracy of the answered) as the threshold sweeps every confidence."""
  conf = np.asarray(probs).max(-1)
  right = np.asarray(probs).argmax(-1) == labels
  order = np.argsort(-conf, kind="stable")
  n = np.arange(1, len(right) + 1)
  return n / len(right), np.cumsum(right[order]) / n


def fit_entry(logits_single: np.ndarray, logits_tta: np.ndarray, labels: np.ndarray, *,
              vector: bool = True, target: float = DEFAULT_TARGET) -> dict:
  """The calibration entry of a ModelInfo (ferjax.inference): a Scaling and a
  threshold for single-view and for TTA logits, and under "fit" the before/after
  measures on these (validation) labels."""
  entry = {}
  report = {"n": int(len(labels)), "target_accuracy": target,
            "method": "vector" if vector else "temperature"}
  thresholds = {}
  for mode, logits in (("single", logits_single), ("tta", logits_tta)):
    scaling = fit(logits, labels, vector=vector)
    before = calibrated_probs(logits, Scaling.identity(logits.shape[-1]))
    after = calibrated_probs(logits, scaling)
    thresholds[mode] = threshold_for_accuracy(after, labels, target=target)
    entry[mode] = {"scale": list(scaling.scale), "bias": list(scaling.bias)}
    report[mode] = {"before": measures(before, labels), "after": measures(after, labels),
                    **coverage(after, labels, thresholds[mode])}
  entry["threshold"] = thresholds
  entry["fit"] = report
  return entry
