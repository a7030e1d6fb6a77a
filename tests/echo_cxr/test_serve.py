"""``python -m examples.echo_cxr serve`` on a tiny run: the live view shows the block being decoded with
its still-masked positions, side by side decodes AR and ECHO at once, and a real browser (headless
Chromium from Debian, driven by selenium) submits a synthetic study and reads the report.

The browser test needs ``/usr/bin/chromium`` and ``/usr/bin/chromedriver``: ``make test`` installs
them (``apt-get install chromium chromium-driver``); missing, the test fails rather than skips.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from examples.echo_cxr.config import load_echo_config
from examples.echo_cxr.data.synthetic import generate_sample
from examples.echo_cxr.serve import MASKED, LiveDecode, Models, build_app, example_studies, stream
from tests.echo_cxr.tiny_run import CONFIGS, make_tiny_run

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "demo" / "serve.png"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    make_tiny_run(root / "run", root / "tok")
    cfg = load_echo_config(CONFIGS / "smoke", all_stages=True,
                           overrides=[f"run_dir={root / 'run'}", "eval.max_new_tokens=24"])
    models = Models(cfg)
    examples = example_studies(cfg, root / "examples")
    return root, cfg, models, examples


def _expected(models, variant, images, language="en"):
    pred = models.get(variant)
    return pred.decode([pred.prompt([str(p) for p in images], language)])[0]


def test_examples_are_the_projects_synthetic_studies(setup):
    root, cfg, models, examples = setup
    assert [len(v) for v in examples.values()] == [1, 2, 1]
    from PIL import Image

    first = next(iter(examples.values()))[0]
    want = generate_sample(90_001, None).to_pil()
    assert Image.open(first).size == (cfg.data.image_size,) * 2 and want.mode == "L"
    assert set(models.variants) == {"ar", "base_multistep_L4", "base_multistep_L8", "base_onestep_L8",
                                    "echo_onestep_L8"}


class _Recording(LiveDecode):
    """Renders the page's view at every forward (from the decoding thread itself)."""

    def __init__(self, *args):
        self.seen, self.views = [], []
        super().__init__(*args)

    def _on_step(self, view):
        super()._on_step(view)
        self.views.append(view)
        self.seen.append(self.render())


def _record(pred, images):
    run = _Recording(pred, images, "en")
    run.thread.join(60)
    return run


@pytest.mark.parametrize("variant", ["echo_onestep_L8", "base_multistep_L8"])
def test_live_view_shows_still_masked_positions_and_ends_with_the_report(setup, variant):
    root, cfg, models, examples = setup
    images = list(examples.values())[1]
    run = _record(models.get(variant), images)
    want = _expected(models, variant, images)
    assert run.done and run.render()[0] == want["output"]
    texts = [t for t, _ in run.seen]
    assert any(MASKED in t for t in texts)  # the block being decoded, masked where undecided
    finals = [t.split(MASKED)[0] for t in texts]
    assert all(s.startswith("decoding · ") for _, s in run.seen)
    nfes = [int(s.split("NFE ")[1].split(" ")[0]) for _, s in run.seen]
    assert nfes == sorted(nfes) and nfes[-1] <= want["nfe"]
    mask_id = models.get(variant).model.spec.mask_token_id
    views = [v for v in run.views if not v.done]
    for v, (t, _) in zip(views, run.seen):  # masked draft slots are exactly the ▒ shown
        assert t.count(MASKED) == v.draft.count(mask_id)
    if variant == "base_multistep_L8":  # several steps per block: some views show decided draft tokens
        assert any(mask_id in v.draft and set(v.draft) != {mask_id} for v in views)
    else:  # one step per block: every view is final text plus a fully masked block
        assert all(set(v.draft) <= {mask_id} for v in views)
    assert len(set(finals)) >= 2  # the report grows block by block
    final = run.render()[1]
    assert final.startswith("done · ") and f"NFE {want['nfe']}" in final


def test_stream_side_by_side_and_errors(setup, tmp_path):
    root, cfg, models, examples = setup
    name = list(examples)[0]
    frames = list(stream(models, examples, None, name, "base_onestep_L8", True, "en", poll_s=0.0))
    a, sa, b, sb = frames[-1]
    assert a == _expected(models, "ar", examples[name])["output"]
    assert b == _expected(models, "echo_onestep_L8", examples[name])["output"]
    assert sa.startswith("done") and sb.startswith("done")
    ((a, sa, b, sb),) = list(stream(models, examples, None, None, "ar", False, "en"))
    assert sa == "error" and "pick a bundled synthetic study" in a
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"broken" * 10)
    a, sa, b, sb = list(stream(models, examples, [str(bad)], None, "echo_onestep_L8", False, "en"))[-1]
    assert sa == "error" and "Error" in a and (b, sb) == ("", "")
    good = tmp_path / "uploaded.png"
    generate_sample(777).to_pil().save(good)
    a, sa, _, _ = list(stream(models, examples, [str(good)], name, "echo_onestep_L8", False, "en"))[-1]
    assert a == _expected(models, "echo_onestep_L8", [good])["output"] and sa.startswith("done")  # upload wins
    with pytest.raises(ValueError, match="not available"):
        models.get("nope")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _browser(tmp_path):
    for exe in (CHROMIUM, CHROMEDRIVER):
        assert exe.is_file(), (f"{exe} is missing: `make test` installs it (apt-get install -y chromium "
                               "chromium-driver), see the README")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                 "--window-size=1100,760"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)


def _value(driver, elem_id):
    return driver.find_element("css selector", f"#{elem_id} textarea").get_attribute("value")


def _wait_done(driver, ids, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        stats = [_value(driver, i) for i in ids]
        if all(s.startswith(("done", "error")) for s in stats):
            return stats
        time.sleep(0.1)
    raise AssertionError(f"no report within {timeout}s: {[_value(driver, i) for i in ids]}")


def test_browser_submits_a_synthetic_study_and_reads_the_report(setup, tmp_path, monkeypatch):
    """Headless Chromium: the default bundled study, then side by side (AR vs ECHO);
    each report on the page is the one the model decodes for that study."""
    root, cfg, models, examples = setup
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    t0 = time.monotonic()
    app = build_app(models, examples)
    port = _free_port()
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                       share=False, allowed_paths=[str(root)])
    driver = _browser(tmp_path)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        button = WebDriverWait(driver, 30).until(ec.element_to_be_clickable(("css selector", "#generate")))
        first = list(examples.values())[0]
        button.click()
        (stats,) = _wait_done(driver, ["stats-a"])
        assert _value(driver, "report-a") == _expected(models, "echo_onestep_L8", first)["output"]
        assert stats.startswith("done · ") and "NFE" in stats and "TPF" in stats and "tokens/s" in stats

        driver.find_element("css selector", "#side input[type=checkbox]").click()
        button.click()
        time.sleep(0.3)
        _wait_done(driver, ["stats-a", "stats-b"])
        assert _value(driver, "report-a") == _expected(models, "ar", first)["output"]
        assert _value(driver, "report-b") == _expected(models, "echo_onestep_L8", first)["output"]
        if not SCREENSHOT.is_file() or os.environ.get("BLOCKDISTILL_UPDATE_SCREENSHOT") == "1":
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(SCREENSHOT))  # the synthetic study only: no real X-ray

    finally:
        driver.quit()
        app.close()
    assert time.monotonic() - t0 < 60
