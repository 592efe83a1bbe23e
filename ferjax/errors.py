"""Errors that ferjax reports to the user as one clear paragraph, not as a traceback."""


class FerjaxError(Exception):
  """Base class: the message says what is wrong and how to fix it."""


class DataError(FerjaxError):
  """The FER2013 input is missing, unreadable or malformed."""


class ConfigError(FerjaxError):
  """A run's configuration is invalid or conflicts with its workdir."""


class TrainingDiverged(FerjaxError):
  """The loss became NaN or infinite."""


def run_cli(main) -> None:
  """Runs `main()`; a FerjaxError exits with its message and status 2, no traceback."""
  import sys
  try:
    main()
  except FerjaxError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except KeyboardInterrupt:  # outside training's own handler (e.g. the final report)
    print("interrupted", file=sys.stderr)
    sys.exit(130)
