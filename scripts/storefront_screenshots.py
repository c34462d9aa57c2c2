"""Screenshots of the storefront's main pages for the README, taken in Debian's chromium with
Playwright from a running storefront (e.g. the one `shoprec demo --keep-serving` starts).

    .venv/bin/python scripts/storefront_screenshots.py http://127.0.0.1:8090 docs/ \
        --query "chocolate milk" --department PRODUCE
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

VIEWPORT = {"width": 1280, "height": 900}


def shoot(page: Page, out: Path, name: str) -> None:
    path = out / f"storefront-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("out", type=Path)
    parser.add_argument("--query", default="milk", help="search words for the search page")
    parser.add_argument("--department", default=None, help="browse page (default: the first)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        anonymous = browser.new_page(viewport=VIEWPORT)
        anonymous.goto(args.url)
        shoot(anonymous, args.out, "popular")
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(args.url)
        page.get_by_role("button", name="longest history").click()
        page.wait_for_selector("#list-main")
        shoot(page, args.out, "home")
        page.locator("#list-main li.card a").first.click()
        page.wait_for_selector("#list-similar")
        shoot(page, args.out, "article")
        page.goto(f"{args.url}/browse")
        departments = page.get_by_role("navigation", name="Departments")
        if args.department:
            departments.get_by_role("link", name=args.department, exact=True).click()
        else:
            departments.get_by_role("link").first.click()
        page.wait_for_selector("li.card")
        shoot(page, args.out, "browse")
        page.goto(f"{args.url}/search?q={args.query}")
        shoot(page, args.out, "search")
        browser.close()


if __name__ == "__main__":
    main()
