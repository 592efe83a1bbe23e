"""ferjax.console: the stop signal, the progress lines and the epoch's summary."""

import os
import signal

import pytest

from ferjax import console


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_is_a_flag_then_a_second_one_quits(sig, capsys):
  before = signal.getsignal(sig)
  with console.StopSignal() as stop:
    assert stop.received is None
    os.kill(os.getpid(), sig)
    assert stop.received == sig
    assert "received: saving a checkpoint at the next step" in capsys.readouterr().err
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), sig)
  assert signal.getsignal(sig) is before  # the previous handler is back


def test_progress_off_a_terminal_prints_a_line_every_quarter_epoch(capsys):
  progress = console.Progress(epoch=2, epochs=5, total=20, initial=0)
  assert not progress.is_tty and progress.log_every == 5
  progress.update(5, 5, loss="0.5000", acc="0.7500")
  progress.close()
  assert capsys.readouterr().err == "epoch 2/5 step 5/20 loss=0.5000 acc=0.7500\n"
  assert console.Progress(epoch=1, epochs=1, total=2, initial=0).log_every == 1


def test_an_epoch_ends_with_its_summary_and_a_star_where_it_improved(capsys):
  row = {"epoch": 3, "train_loss": 0.5, "train_accuracy": 0.8, "val_loss": 0.75,
         "val_accuracy": 0.625, "epoch_seconds": 12.4, "images_per_second": 345.6}
  console.epoch_done(row, epochs=10, improved=True)
  console.epoch_done(row, epochs=10, improved=False)
  assert capsys.readouterr().err.splitlines() == [
      "epoch 3/10: train loss 0.5000 acc 0.8000 | val loss 0.7500 acc 0.6250 | 12s "
      "346 img/s *",
      "epoch 3/10: train loss 0.5000 acc 0.8000 | val loss 0.7500 acc 0.6250 | 12s "
      "346 img/s"]
