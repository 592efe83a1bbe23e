"""Errors that ferjax reports to the user as one clear paragraph, not as a traceback."""

import importlib.util


class FerjaxError(Exception):
  """Base class: the message says what is wrong and how to fix it."""


class DataError(FerjaxError):
  """The FER2013 input is missing, unreadable or malformed."""


class ConfigError(FerjaxError):
  """A run's configuration is invalid or conflicts with its workdir."""


class TrainingDiverged(FerjaxError):
  """The loss became NaN or infinite."""


class MissingExtra(FerjaxError, ImportError):
  """A command needs an optional part of ferjax (an extra) that is not installed."""


# pyproject.toml's extras, what each is for, and the modules it installs that ferjax
# imports (a module in several extras is named under the first).
EXTRAS = {
    "jax": ("the JAX classifier: --backend jax, ferjax.export, ferjax.load_pretrained",
            ("jax", "flax")),
    "train": ("training, and reading runs and FER2013: ferjax.train, evaluate, "
              "calibrate, bench, --workdir",
              ("jax", "flax", "optax", "orbax.checkpoint", "tensorflow_datasets",
               "array_record", "matplotlib", "tqdm")),
    "video": ("videos: reading, tracking, --annotate, --timeline",
              ("imageio_ffmpeg", "trackers", "supervision", "matplotlib")),
    "serve": ("the server: ferjax.serve, ferjax.loadtest",
              ("fastapi", "starlette", "uvicorn", "multipart", "websockets", "httpx",
               "trackers")),
    "dask": ("a Dask cluster: --dask", ("dask", "distributed")),
}


def _installed(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:  # its parent package is missing
    return False


def _missing_extra_message(extra: str, missing, what: str | None = None) -> str:
  use, _ = EXTRAS[extra]
  return (f"{what or 'this command'} needs ferjax's '{extra}' extra ({use}), which is "
          f"not installed (no {', '.join(missing)}): pip install \"ferjax[{extra}]\" "
          f"(in a checkout: pip install -e \".[{extra}]\"; [all] gives every command)")


def require_extra(extra: str, *, what: str | None = None, command: bool = False) -> None:
  """Stops where a module that `extra` installs is missing, saying what to install.

  Args:
    extra: a key of EXTRAS.
    what: what needs it, for the message (default: "this command").
    command: the caller is a module run as `python -m` and checking before its own
      imports, where `run_cli` cannot catch yet: print the message and exit with 2.

  Raises:
    MissingExtra: (a FerjaxError, so `run_cli` prints it; an ImportError to code that
      imports ferjax) where a module is missing and `command` is false.
  """
  missing = [m for m in EXTRAS[extra][1] if not _installed(m)]
  if not missing:
    return
  error = MissingExtra(_missing_extra_message(extra, missing, what))
  if not command:
    raise error
  import sys
  print(f"error: {error}", file=sys.stderr)
  sys.exit(2)


def extra_for(module: str | None) -> str | None:
  """The first extra that installs `module` (or its top-level package), or None."""
  top = (module or "").split(".")[0]
  for extra, (_, modules) in EXTRAS.items():
    if any(m.split(".")[0] == top for m in modules):
      return extra
  return None


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
  so do a full disk, wherever it is hit, and an import of a module that an extra
  installs (the message names the extra)."""
  import sys
  try:
    main()
  except FerjaxError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except ModuleNotFoundError as e:
    extra = extra_for(e.name)
    if extra is None:
      raise
    print(f"error: {_missing_extra_message(extra, [e.name])}", file=sys.stderr)
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
