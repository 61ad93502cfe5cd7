"""The editor in a real browser: paint with the mouse, Apply, read the returned pictures, Save.

Needs Chromium (Debian: `apt-get install -y chromium`) and Playwright (`pip install -e ".[dev,editor]"`);
Playwright drives the system Chromium, its own browser download is never used.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rewriting import load_delta
from rewriting.editor.browser import PageDriver, chromium_path, serve
from test_editor import STATISTICS

pytest.importorskip("gradio", reason="the editor needs gradio: pip install -e '.[dev,editor]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright: pip install -e '.[dev]'")
CHROMIUM = chromium_path()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found (/usr/bin/chromium); install it with "
                                                         "`apt-get install -y chromium` or set $REWRITING_CHROMIUM")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from rewriting.editor.config import compose_config, session_from_config
    root = tmp_path_factory.mktemp("editor_browser")
    cfg = compose_config([f"statistics.num_samples={STATISTICS}", f"statistics.cache_dir={root / 'cache'}",
                          "trainer=cpu"])
    session = session_from_config(cfg, str(root / "saved"))
    app, url = serve(session)
    yield session, url, root
    app.close()


@pytest.fixture(scope="module")
def regions(served):
    from rewriting.editor.config import compose_config
    from rewriting.edits.config import spec_from_config
    session = served[0]
    spec = spec_from_config(compose_config([]).edit, session.generator, session.segmenter, None)
    request = spec.request
    return ({r.image_id: r.load_mask() for r in request.context[:3]},
            (request.copy.image_id, request.copy.load_mask()), (request.paste.image_id, request.paste.load_mask()))


def grown(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    return torch.nn.functional.max_pool2d(mask[None, None], 2 * pixels + 1, 1, pixels)[0, 0] > 0


def test_paint_apply_and_save_in_a_real_browser(served, regions, tmp_path):
    session, url, _ = served
    from rewriting.editor.handlers import Handlers
    outbound = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1400})
        page.on("request", lambda request: outbound.append(request.url)
                if not request.url.startswith((url.rstrip("/"), "data:", "blob:")) else None)
        page.goto(url, wait_until="load")
        page.wait_for_selector("#paint-overlay", timeout=60_000)
        driver = PageDriver(page, session, Handlers(session).display_size)

        # The gallery opens an image on click.
        page.locator("#gallery img").nth(2).click()
        page.wait_for_selector('#paint-area[data-image-id="2"]', timeout=30_000)

        # Mark with nothing painted: a message, no region. Undo takes back the last stroke.
        driver.open_image(2)
        assert "nothing is painted on image 2" in driver.mark()
        centre = driver.screen(driver.display_size / 2, driver.display_size / 2)
        driver.stroke([centre, (centre[0] + 30, centre[1])])
        page.click("#paint-undo")
        assert "nothing is painted" in driver.mark()
        assert session.masks["context"] == {}

        context, (copy_id, copy_mask), (paste_id, paste_mask) = regions
        for image_id, mask in context.items():
            assert "Marked the context" in driver.paint_mask(image_id, "context", mask)
        assert "Marked the copy" in driver.paint_mask(copy_id, "copy", copy_mask)
        # Apply before a paste target exists: a clear message in the page, nothing applied.
        assert "the paste target is empty" in driver.click_and_wait("#apply", "Error")
        assert session.rules == []
        assert "Marked the paste" in driver.paint_mask(paste_id, "paste", paste_mask)
        # What the browser painted is where the regions are (the brush is a few pixels wide).
        painted = session.masks["paste"][paste_id]
        painted = torch.nn.functional.interpolate(painted[None, None], size=paste_mask.shape, mode="area")[0, 0]
        assert (painted * paste_mask).sum() / paste_mask.sum() > 0.8
        assert (painted * (~grown(paste_mask, 3)).float()).sum() < 0.1 * painted.sum()

        page.screenshot(path=str(tmp_path / "before_apply.png"), full_page=True)
        assert "Applied" in driver.apply()
        page.screenshot(path=str(tmp_path / "after_apply.png"), full_page=True)
        before, after = driver.gallery_images("before"), driver.gallery_images("after")
        assert len(before) == len(after) >= 5
        # The paste image changed around the painted paste region and far less elsewhere.
        change = np.abs(after[0].astype(float) - before[0].astype(float)).mean(-1)
        change = torch.from_numpy(change).float()
        size = change.shape[-1]
        near = torch.nn.functional.interpolate(grown(paste_mask, 2).float()[None, None], size=(size, size))[0, 0] > 0
        far = torch.nn.functional.interpolate((~grown(paste_mask, 10)).float()[None, None], size=(size, size))[0, 0] > 0
        assert change[near].mean() > 2 * change[far].mean() and change[near].mean() > 20, \
            (change[near].mean(), change[far].mean())
        assert len(session.rules) == 1 and session.rules[0].enabled

        folder = tmp_path / "saved_from_browser"
        page.locator("#save-folder textarea, #save-folder input").first.fill(str(folder))
        assert "Saved to" in driver.click_and_wait("#save", "Saved to|Error")
        tensors, metadata = load_delta(folder / "delta.safetensors")
        (name, delta), = session.rules[0].deltas.items()
        assert torch.equal(tensors[name], delta) and metadata["layer"] == session.default_layer
        assert (folder / "edit.json").is_file() and (folder / "stack.json").is_file()
        browser.close()
    assert outbound == [], f"the page made outbound requests: {outbound}"
