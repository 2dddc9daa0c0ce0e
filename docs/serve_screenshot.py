"""Take the README's screenshot of the page at / (docs/serve.png): start `mtkit serve` on a
model, type a sentence in headless Chromium, translate with beam 5, save the page.

    python docs/serve_screenshot.py --model RUN_DIR [--text "..."] [-o docs/serve.png]
"""

from __future__ import annotations

import argparse
import shutil

from playwright.sync_api import sync_playwright

from mtkit.serve.client import ServerProcess


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="run directory (NAME=RUN_DIR names it)")
    parser.add_argument("--text", default="The cat is sleeping on the sofa.")
    parser.add_argument("--beam", default="5")
    parser.add_argument("-o", "--output", default="docs/serve.png")
    args = parser.parse_args()
    with ServerProcess("--model", args.model) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 900, "height": 600}, device_scale_factor=1)
        page.goto(server.url)
        page.wait_for_selector("#model option", state="attached")
        page.fill("#source", args.text)
        page.select_option("#beam", args.beam)
        page.click("#translate")
        page.wait_for_selector(".result .translation")
        page.screenshot(path=args.output, full_page=True)
        browser.close()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
