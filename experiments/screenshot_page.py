"""A screenshot of `python -m ferjax.serve`'s page after uploading a photo (for the
README): serves the shipped model in-process and drives Debian's chromium.

    python experiments/screenshot_page.py PHOTO OUT.png
"""

import sys

from playwright.sync_api import sync_playwright

from ferjax import loadtest, serve
from ferjax.predictor import Predictor


def main() -> None:
  photo, out = sys.argv[1], sys.argv[2]
  app = serve.create_app(Predictor.from_pretrained())
  with loadtest.running_server(app) as url, sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1000, "height": 720})
    page.goto(url + "/")
    page.set_input_files("#file", photo)
    page.wait_for_selector("#faces li .label", timeout=60_000)
    page.screenshot(path=out, full_page=True)
    browser.close()


if __name__ == "__main__":
  main()
