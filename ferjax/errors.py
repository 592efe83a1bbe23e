"""Errors that ferjax reports to the user as one clear paragraph, not as a traceback."""


class FerjaxError(Exception):
  """Base class: the message says what is wrong and how to fix it."""


class DataError(FerjaxError):
  """The FER2013 input is missing, unreadable or malformed."""


class ConfigError(FerjaxError):
  """A run's configuration is invalid or conflicts with its workdir."""


class TrainingDiverged(FerjaxError):
  """The loss became NaN or infinite."""


_DISK_FULL = (28, 122)  # ENOSPC, EDQUOT


def describe_os_error(e: BaseException) -> str:
  """What went wrong, in words: the OSError at the root of `e` if there is one."""
  seen = e
  while seen is not None:
    if isinstance(seen, OSError) and seen.strerror:
      where = f" ('{seen.filename}')" if seen.filename else ""
      return f"{seen.strerror}{where}"
    seen = seen.__cause__ or seen.__context__
  text = str(e).strip().splitlines()
  return text[0][:300] if text else type(e).__name__


def run_cli(main) -> None:
  """Runs `main()`; a FerjaxError exits with its message and status 2, no traceback;
  so does a full disk, wherever it is hit."""
  import sys
  try:
    main()
  except FerjaxError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except OSError as e:
    if e.errno not in _DISK_FULL:
      raise
    print(f"error: {describe_os_error(e)}. Free some disk space and run the same "
          "command again (a training run resumes from its last checkpoint).",
          file=sys.stderr)
    sys.exit(2)
  except KeyboardInterrupt:  # outside training's own handler (e.g. the final report)
    print("interrupted", file=sys.stderr)
    sys.exit(130)
