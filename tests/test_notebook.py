"""docs/quickstart.ipynb runs top to bottom (the tiny variant on generated data)."""

from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

NOTEBOOK = Path(__file__).parents[1] / "docs" / "quickstart.ipynb"


def test_quickstart_notebook_runs(tmp_path, toy_zip, tfds_dir, monkeypatch):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  env = {"FERJAX_DATA": str(toy_zip), "FERJAX_VARIANT": "tiny", "FERJAX_EPOCHS": "2",
         "FERJAX_WORKDIR": str(tmp_path / "run"), "TFDS_DATA_DIR": str(tfds_dir)}
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(tmp_path)}})
  client.execute()
  outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                    for o in c.get("outputs", []))
  assert "test accuracy" in outputs and "epochs_run" in outputs
  kinds = [o.get("output_type") for c in nb.cells for o in c.get("outputs", [])]
  assert "error" not in kinds
  # The annotated photo is shown as an image.
  last = nb.cells[-2]["outputs"]
  assert any("image/png" in o.get("data", {}) for o in last)
  assert (tmp_path / "run" / "curves.png").is_file()
