"""A prediction job's results folder (`predict --out DIR`): written as the job goes,
resumed after an interruption to the same results as a run never interrupted.

DIR holds three files:

  job.json       what the job computes (model, TTA, thresholds, detection, frame rate):
                 a later command must match it to add to the folder;
  results.jsonl  one JSON record per face: file, frame and time (videos), face, box,
                 label, score, probabilities, uncertain, flags ... as `--json` prints;
  files.jsonl    one record per input file once it is finished: {"file", "status":
                 "done" | "failed", "faces", "error", "end"}, where "end" is the length
                 of results.jsonl with that file's faces in it.

A file's faces are appended to results.jsonl first, flushed to disk, then its line in
files.jsonl. On start, the results are cut back to the last finished file's "end" and
a torn last line of files.jsonl is dropped, so a file cut off half way (a long video,
say) is done again from its start and none of its faces is written twice. A file that
fails is recorded with its error (any faces it had written taken back) and is not
tried again (delete its line in files.jsonl to retry it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ferjax.errors import FerjaxError, describe_os_error

JOB, RESULTS, FILES = "job.json", "results.jsonl", "files.jsonl"


def face_rows(file, faces, *, frame=None, time=None):
  """The record of each face, as `predict --json` prints it and results.jsonl holds
  it: file, frame and time (videos), the face's index, then `FacePrediction.to_dict`."""
  where = {"frame": frame, "time": round(time, 3)} if frame is not None else {}
  for k, f in enumerate(faces):
    yield {"file": str(file), **where, "face": k, **f.to_dict()}


class ResultsDir:
  """The results folder of one job (see the module's docstring)."""

  def __init__(self, folder: str | Path, job: dict):
    self.folder = Path(folder)
    if self.folder.exists() and not self.folder.is_dir():
      raise FerjaxError(f"--out: '{self.folder}' is a file; give a folder for the job's "
                        "results (it is created if missing)")
    try:
      self.folder.mkdir(parents=True, exist_ok=True)
      self._check_job(job)
      self.finished = self._read_finished()
      self._results = open(self.folder / RESULTS, "ab")
      self._files = open(self.folder / FILES, "ab")
    except OSError as e:
      raise FerjaxError(f"--out: cannot use the folder '{self.folder}': "
                        f"{describe_os_error(e)}") from None
    self.faces = 0
    self._end = self._results.tell()  # results.jsonl's length at the last finished file

  def _check_job(self, job: dict) -> None:
    path = self.folder / JOB
    try:
      old = json.loads(path.read_text())
    except FileNotFoundError:
      if any(self.folder.iterdir()):
        raise FerjaxError(f"--out: '{self.folder}' is not empty and holds no job; give "
                          "a new or empty folder") from None
      tmp = path.with_name(JOB + ".tmp")
      tmp.write_text(json.dumps(job, indent=1, sort_keys=True))
      os.replace(tmp, path)
      return
    except ValueError:
      raise FerjaxError(f"--out: '{path}' is not a job description ferjax wrote; give "
                        "another folder") from None
    if old != job:
      diff = ", ".join(f"{k}: {old.get(k)!r} there, {job.get(k)!r} now"
                       for k in sorted(set(old) | set(job)) if old.get(k) != job.get(k))
      raise FerjaxError(f"--out: '{self.folder}' holds the results of another job "
                        f"({diff}); run the same command to resume it, or give another "
                        "folder")

  def _read_finished(self) -> dict[str, dict]:
    """The finished files' records; cuts a torn tail off both files."""
    files, results = self.folder / FILES, self.folder / RESULTS
    finished, good, end = {}, 0, 0
    if files.exists():
      data = files.read_bytes()
      pos = 0
      for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
          break
        try:
          rec = json.loads(line)
        except ValueError:
          break
        finished[rec["file"]] = rec
        end = rec.get("end", end)
        pos += len(line)
      good = pos
      if good < len(data):
        with open(files, "r+b") as f:
          f.truncate(good)
    if results.exists() and results.stat().st_size > end:
      with open(results, "r+b") as f:
        f.truncate(end)
    return finished

  def is_finished(self, path) -> bool:
    return str(path) in self.finished

  def write(self, file, faces, *, frame=None, time=None) -> None:
    """Appends one record per face (as `--json` prints them)."""
    for row in face_rows(file, faces, frame=frame, time=time):
      self._results.write((json.dumps(row) + "\n").encode())
      self.faces += 1

  def _finish(self, rec: dict) -> None:
    self._results.flush()
    os.fsync(self._results.fileno())
    rec["end"] = self._end = self._results.tell()
    self._files.write((json.dumps(rec) + "\n").encode())
    self._files.flush()
    os.fsync(self._files.fileno())
    self.finished[rec["file"]] = rec

  def done(self, file, faces: int) -> None:
    """`file` is finished: its faces (all written) count `faces`."""
    self._finish({"file": str(file), "status": "done", "faces": int(faces)})

  def failed(self, file, error) -> None:
    """`file` could not be done: the faces it had written (a video that broke off) are
    taken back, its error is recorded, and it is not tried again."""
    self._results.flush()
    os.ftruncate(self._results.fileno(), self._end)
    self._results.seek(0, os.SEEK_END)
    self._finish({"file": str(file), "status": "failed", "error": str(error)})

  def close(self) -> None:
    self._results.close()
    self._files.close()
