"""Editor speed in a real browser: Apply pressed → the After row's new pictures shown, median of several.

    python experiments/bench/editor_apply.py [--repeats 5] [--screenshot docs/editor.png]
        [--out results/bench/editor_apply_cpu.json] [OVERRIDES ...]

Serves the editor (bundled Toytown, its default edit's layer unless OVERRIDES say otherwise, e.g.
`layer=8`), paints the default edit's context, copy and paste regions with the mouse in the system
Chromium, presses Apply once to compute (or load) the layer's second moment, then `--repeats` times
more, reverting in between so each fit starts from the same weights. The time of one Apply runs from
the click until the status says Applied and every After picture has loaded in the page.
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from rewriting.atomic import write_json
from rewriting.deltas import package_version
from rewriting.editor.browser import PageDriver, chromium_path, serve
from rewriting.editor.config import compose_config, session_from_config
from rewriting.editor.handlers import Handlers
from rewriting.edits.config import spec_from_config

ROOT = Path(__file__).resolve().parents[2]


def paint_default_request(driver: PageDriver, cfg) -> None:
    """Paint the edit config's regions (context on up to three images, copy, paste) as a user would."""
    session = driver.session
    request = spec_from_config(cfg.edit, session.generator, session.segmenter, None).request
    for region in request.context[:3]:
        assert "Marked" in driver.paint_mask(region.image_id, "context", region.load_mask())
    assert "Marked" in driver.paint_mask(request.copy.image_id, "copy", request.copy.load_mask())
    assert "Marked" in driver.paint_mask(request.paste.image_id, "paste", request.paste.load_mask())


def save_screenshot(page, path: Path, width: int = 1000) -> None:
    """The whole page, scaled to `width` and palette-coded so the README's picture stays small."""
    picture = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    picture = picture.resize((width, round(picture.height * width / picture.width)), Image.LANCZOS)
    picture.quantize(256).save(path, optimize=True)


def chromium_version(path: str) -> str:
    try:
        return subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--screenshot", type=Path, default=None, help="save the page after the last Apply")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "editor_apply_cpu.json")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for run.py")
    args = parser.parse_args(argv)
    browser_path = chromium_path()
    if browser_path is None:
        sys.exit("no Chromium found: apt-get install -y chromium (or set $REWRITING_CHROMIUM)")
    from playwright.sync_api import sync_playwright
    torch.set_num_threads(args.threads)
    output_root = tempfile.mkdtemp(prefix="editor_bench_")
    cfg = compose_config(["trainer=cpu", *args.overrides])
    session = session_from_config(cfg, output_root)
    app, url = serve(session)
    clicks, fits = [], []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1250})
            page.goto(url, wait_until="load")
            page.wait_for_selector("#paint-overlay", timeout=60_000)
            driver = PageDriver(page, session, Handlers(session).display_size)
            paint_default_request(driver, cfg)
            started = time.perf_counter()
            assert "Applied" in driver.apply(), page.locator("#status").inner_text()
            first_click = time.perf_counter() - started
            for _ in range(args.repeats):
                driver.click_and_wait("#revert-all", "Reverted|Error")
                started = time.perf_counter()
                text = driver.apply()
                clicks.append(time.perf_counter() - started)
                assert "Applied" in text, text
                rule = session.rules[-1]
                fits.append(rule.metrics["edit_seconds"])
            if args.screenshot:
                args.screenshot.parent.mkdir(parents=True, exist_ok=True)
                save_screenshot(page, args.screenshot)
            browser.close()
    finally:
        app.close()
    report = {
        "apply_to_shown_seconds_median": statistics.median(clicks), "apply_to_shown_seconds": clicks,
        "first_apply_seconds_with_second_moment": first_click,
        "edit_fit_seconds_median": statistics.median(fits), "edit_fit_seconds": fits,
        "layer": int(cfg.layer), "method": str(cfg.method.get("name", cfg.method._target_)),
        "statistics_samples": int(cfg.statistics.num_samples), "repeats": args.repeats, "threads": args.threads,
        "device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU",
        "torch": torch.__version__, "chromium": chromium_version(browser_path), "package_version": package_version(),
        "generator_sha256": session.generator.checkpoint_sha256,
        "command": " ".join(["python experiments/bench/editor_apply.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    write_json(args.out, report)
    print(f"Apply → shown: median {report['apply_to_shown_seconds_median']:.2f} s over {args.repeats} "
          f"(fit {report['edit_fit_seconds_median']:.2f} s); first Apply with the second moment "
          f"{first_click:.1f} s")
    return report


if __name__ == "__main__":
    main()
