"""What a training run shows and hears on its terminal: the progress of an epoch and
its summary line (on stderr), and the stop signal (SIGINT/SIGTERM), which the loop
checks between steps."""

from __future__ import annotations

import signal
import sys


class StopSignal:
  """Turns SIGINT/SIGTERM into a flag checked at step boundaries; a second one kills.

  `received` is the signal's number once one came, else None.
  """

  def __init__(self):
    self.received: int | None = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGINT, signal.SIGTERM):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: no signal handling
        pass
    return self

  def _handle(self, signum, frame):
    if self.received is not None:
      raise KeyboardInterrupt
    self.received = signum
    print(f"\n{signal.Signals(signum).name} received: saving a checkpoint at the next "
          "step (send it again to quit at once)", file=sys.stderr, flush=True)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


class Progress:
  """A tqdm bar on a terminal; otherwise a plain line every ~quarter epoch."""

  def __init__(self, *, epoch: int, epochs: int, total: int, initial: int):
    self.is_tty = sys.stderr.isatty()
    self.desc = f"epoch {epoch}/{epochs}"
    self.total = total
    self._bar = None
    if self.is_tty:
      from tqdm import tqdm
      self._bar = tqdm(total=total, initial=initial, desc=self.desc, unit="step",
                       leave=True, dynamic_ncols=True)

  @property
  def log_every(self) -> int:
    return 10 if self.is_tty else max(1, self.total // 4)

  def update(self, step: int, n: int, **stats) -> None:
    text = " ".join(f"{k}={v}" for k, v in stats.items())
    if self._bar is not None:
      self._bar.update(n)
      self._bar.set_postfix_str(text, refresh=False)
    else:
      print(f"{self.desc} step {step}/{self.total} {text}", file=sys.stderr, flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


def epoch_done(row: dict, *, epochs: int, improved: bool) -> None:
  """The line that ends an epoch: its metrics row, and a star where it improved."""
  val = ("no validation (final fit)" if row["val_accuracy"] is None else
         f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.4f}")
  print(f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f} "
        f"acc {row['train_accuracy']:.4f} | {val} | {row['epoch_seconds']:.0f}s "
        f"{row['images_per_second']:.0f} img/s" + (" *" if improved else ""),
        file=sys.stderr, flush=True)
