"""``python -m examples.echo_cxr serve`` on a tiny run: the live view shows the block being decoded with
its still-masked positions, side by side decodes AR and ECHO at once, and a real browser (headless
Chromium from Debian, driven by selenium) submits a synthetic study and reads the report.

The browser test needs ``chromium`` and ``chromedriver`` (Debian: ``apt-get install -y chromium
chromium-driver``). ``make test`` installs them when it runs as root (``make browser-deps``) and sets
``BLOCKDISTILL_REQUIRE_BROWSER=1``, under which a missing browser fails the test with that command;
a plain ``pytest`` run without them skips it with the same message.

``BLOCKDISTILL_UPDATE_SCREENSHOT=1`` copies the page's screenshot (always taken, into a temporary
folder) to ``docs/demo/serve.png``; other runs leave the tree clean.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from examples.echo_cxr.config import load_echo_config
from examples.echo_cxr.data.synthetic import generate_sample
from examples.echo_cxr.serve import MASKED, LiveDecode, Models, build_app, example_studies, stream
from tests.echo_cxr.tiny_run import CONFIGS, make_tiny_run

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "demo" / "serve.png"
BROWSER_INSTALL = "apt-get install -y chromium chromium-driver"


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
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        msg = (f"headless Chromium is missing (chromium: {chromium}, chromedriver: {driver}); install it with "
               f"`sudo {BROWSER_INSTALL}` (`make test` does so when run as root), see the README")
        if os.environ.get("BLOCKDISTILL_REQUIRE_BROWSER") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                 "--window-size=1280,1000", "--hide-scrollbars"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=opts)


def _value(driver, elem_id):
    return driver.find_element("css selector", f"#{elem_id} textarea").get_attribute("value")


def _submit(driver, ids, timeout=30.0):
    """Click "Generate report" and wait for this request's finished texts: every pane's
    ``(report, stats)`` changed from what the page showed before the click (the stats line carries the
    measured tokens/s), its stats line says done, and the texts are settled. Returns
    ``[(report, stats), ...]``."""
    before = [(_value(driver, f"report-{i}"), _value(driver, f"stats-{i}")) for i in ids]
    driver.find_element("css selector", "#generate").click()
    end, last = time.monotonic() + timeout, None
    while time.monotonic() < end:
        now = [(_value(driver, f"report-{i}"), _value(driver, f"stats-{i}")) for i in ids]
        if all(n != b and n[1].startswith(("done", "error")) for n, b in zip(now, before)):
            if now == last:  # the textareas update one by one: the same texts twice, 0.1 s apart
                return now
            last = now
        time.sleep(0.1)
    raise AssertionError(f"no report within {timeout}s: {now}")


def test_browser_submits_a_synthetic_study_and_reads_the_report(setup, tmp_path, monkeypatch):
    """Headless Chromium: the default bundled study; an upload of two generated PNGs through the page's
    file input; then side by side (AR vs ECHO). Each report on the page is the one the model decodes
    for that study; the screenshot is taken from the top of the page with both reports finished."""
    root, cfg, models, examples = setup
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))  # uploads land here, not in /tmp/gradio
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    uploads = []
    for k in range(2):  # a two-view study the page has never seen, in its own folder
        uploads.append(tmp_path / "upload" / f"study_view{k}.png")
        uploads[-1].parent.mkdir(exist_ok=True)
        generate_sample(4242 + k).to_pil().save(uploads[-1])
    t0 = time.monotonic()
    driver = _browser(tmp_path)
    app = build_app(models, examples)
    port = _free_port()
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                       share=False, allowed_paths=[str(root)])
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(driver, 30).until(ec.element_to_be_clickable(("css selector", "#generate")))
        first = list(examples.values())[0]
        ((report, stats),) = _submit(driver, ["a"])
        want = _expected(models, "echo_onestep_L8", first)
        assert report == want["output"]
        assert stats.startswith(f"done · {want['tokens']} tokens · NFE {want['nfe']} · TPF ") and "tokens/s" in stats

        # upload: the generated PNGs' paths typed into the page's file input, as a user's file dialog does
        driver.find_element("css selector", "#upload input[type=file]").send_keys("\n".join(map(str, uploads)))
        def previewed(d):  # the page's study gallery shows the upload: the server has its files
            srcs = [img.get_attribute("src") or "" for img in d.find_elements("css selector", "#preview img")]
            return all(any(u.name in s for s in srcs) for u in uploads)

        WebDriverWait(driver, 30).until(previewed)
        ((report, stats),) = _submit(driver, ["a"])
        want = _expected(models, "echo_onestep_L8", uploads)
        assert report == want["output"], stats  # the upload wins over the example
        assert stats.split(" · ")[:3] == ["done", f"{want['tokens']} tokens", f"NFE {want['nfe']}"]
        assert {u.name for u in uploads} <= {p.name for p in (tmp_path / "gradio").rglob("*.png")}

        driver.find_element("css selector", "#side input[type=checkbox]").click()
        (a, sa), (b, sb) = _submit(driver, ["a", "b"])
        want_a, want_b = _expected(models, "ar", uploads), _expected(models, "echo_onestep_L8", uploads)
        assert (a, b) == (want_a["output"], want_b["output"])
        assert f"NFE {want_a['nfe']} " in sa and f"NFE {want_b['nfe']} " in sb and want_a["nfe"] > want_b["nfe"]

        driver.execute_script("window.scrollTo(0, 0)")
        time.sleep(0.2)
        shot = tmp_path / "serve.png"
        assert driver.save_screenshot(str(shot))
        from PIL import Image

        width, height = driver.execute_script("return [window.innerWidth, window.innerHeight]")
        assert Image.open(shot).size == (width, height) and driver.execute_script("return window.scrollY") == 0
        for elem in ("report-a", "stats-a", "report-b", "stats-b"):  # the finished reports are in the shot
            bottom = driver.execute_script(f"return document.querySelector('#{elem}').getBoundingClientRect().bottom")
            assert 0 < bottom <= height, (elem, bottom, height)
        if os.environ.get("BLOCKDISTILL_UPDATE_SCREENSHOT") == "1":
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, SCREENSHOT)  # synthetic studies only: no real X-ray
    finally:
        driver.quit()
        app.close()
    assert time.monotonic() - t0 < 60


@pytest.mark.parametrize("case", ["present", "root", "user"])
def test_make_browser_deps_installs_or_prints_the_command(tmp_path, case):
    """``make browser-deps`` (run by ``make install`` and ``make test``) with a fake ``apt-get`` and
    ``id`` first on PATH: nothing when Chromium is there; installs it as root; prints the command else."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "apt.log"
    (fake / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    (fake / "id").write_text(f"#!/bin/sh\necho {0 if case == 'root' else 1000}\n")
    for f in fake.iterdir():
        f.chmod(0o755)
    exe = "sh" if case == "present" else "no-such-chromium-for-this-test"
    done = subprocess.run(["make", "-s", "-C", str(ROOT), "browser-deps", f"CHROMIUM={exe}", "CHROMEDRIVER=sh"],
                          env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines() if log.exists() else []
    if case == "present":
        assert (done.stdout, calls) == ("", [])
    elif case == "root":
        assert calls == ["update -q", "install -y chromium chromium-driver"]
    else:
        assert calls == [] and "sudo apt-get install -y chromium chromium-driver" in done.stdout


def test_readme_serve_line_on_a_demo_layout(setup, tmp_path):
    """The README's serve line, run as a process from a folder laid out as ``make demo`` leaves it
    (models under ``runs/demo``, the default config the tiny demo's): the page answers on 127.0.0.1
    and offers every trained variant and the bundled synthetic studies."""
    import json
    import re
    import urllib.request

    root, cfg, models, examples = setup
    readme = (ROOT / "README.md").read_text()
    (line,) = re.findall(r"^PYTHONPATH=src:\. \.venv/bin/python -m examples\.echo_cxr (serve.*)$", readme, re.M)
    cwd = tmp_path / "cwd"
    shutil.copytree(root / "run", cwd / "runs" / "demo")
    (cwd / "examples").symlink_to(ROOT / "examples")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "NO_PROXY": "127.0.0.1,localhost",
           "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    proc = subprocess.Popen([sys.executable, "-m", "examples.echo_cxr", *line.split(), "--port", str(port)],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        end, config = time.monotonic() + 60, None
        while config is None and time.monotonic() < end and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as r:
                    config = json.loads(r.read())
            except OSError:
                time.sleep(0.3)
        assert config is not None, proc.stdout.read() if proc.poll() is not None else "no answer within 60 s"
        props = {c["props"].get("elem_id"): c["props"] for c in config["components"] if "props" in c}
        assert [c[0] for c in props["variant"]["choices"]] == models.variants
        assert [c[0] for c in props["example"]["choices"]] == list(examples)
        assert sorted(p.name for p in (cwd / "runs" / "demo" / "serve" / "examples").iterdir()) == \
            [f"synthetic_{i}.png" for i in range(4)]
    finally:
        proc.terminate()
        proc.wait(30)


def test_released_checkpoint_is_offered_and_decoded_without_remote_code(setup, tmp_path, capsys):
    """``serve --released``: a checkpoint in ECHO's layout (``auto_map`` to a module that raises when
    imported, ``<|MASK|>``) becomes the ``released`` variant and decodes as predict decodes it; a
    missing one stops the server before it starts (exit 2)."""
    from examples.echo_cxr.predict import Predictor
    from examples.echo_cxr.serve import RELEASED
    from examples.echo_cxr.serve import main as serve_main
    from tests.echo_cxr.tiny_run import write_released_checkpoint

    root, cfg, models, examples = setup
    ckpt = tmp_path / "released"
    write_released_checkpoint(ckpt, root / "tok")
    rcfg = load_echo_config(CONFIGS / "smoke", all_stages=True, overrides=[
        f"run_dir={root / 'run'}", "eval.max_new_tokens=24", "model.mask_token=<|MASK|>"])
    served = Models(rcfg, released=ckpt)
    assert served.variants == [*models.variants, RELEASED]
    name = list(examples)[1]
    a, sa, b, sb = list(stream(served, examples, None, name, RELEASED, False, "en", poll_s=0.0))[-1]
    pred = Predictor(rcfg, model_dir=ckpt, released=True)
    want = pred.decode([pred.prompt([str(p) for p in examples[name]], "en")])[0]
    assert served.get(RELEASED).released and not served.get(RELEASED).model.spec.shift
    assert (a, b, sb) == (want["output"], "", "") and sa.startswith(f"done · {want['tokens']} tokens · NFE {want['nfe']} ")
    args = ["-c", str(CONFIGS / "smoke"), "--set", f"run_dir={root / 'run'}"]
    assert serve_main([*args, "--released", str(tmp_path / "nowhere")]) == 2
    assert "holds no model" in capsys.readouterr().err
    assert serve_main(["-c", str(CONFIGS / "smoke"), "--set", f"run_dir={tmp_path / 'empty'}"]) == 2
    assert "no trained model" in capsys.readouterr().err


def test_a_damaged_model_is_an_error_on_the_page_and_a_damaged_released_one_exit_3(setup, tmp_path, capsys):
    """A byte flipped in a run's saved model: the page shows the checksum error for that variant and
    the other variants still decode; the same damage in a ``--released`` checkpoint: exit 3."""
    from examples.echo_cxr.serve import main as serve_main
    from tests.echo_cxr.tiny_run import write_released_checkpoint

    root, cfg, models, examples = setup
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)

    def flip(path):
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    flip(run / "dcd_L8" / "model" / "model.safetensors")
    dcfg = load_echo_config(CONFIGS / "smoke", all_stages=True, overrides=[f"run_dir={run}", "eval.max_new_tokens=8"])
    damaged = Models(dcfg)
    name = list(examples)[0]
    a, sa, _, _ = list(stream(damaged, examples, None, name, "echo_onestep_L8", False, "en", poll_s=0.0))[-1]
    assert sa == "error" and a.startswith("DamagedFileError") and "model.safetensors" in a
    a, sa, _, _ = list(stream(damaged, examples, None, name, "base_onestep_L8", False, "en", poll_s=0.0))[-1]
    assert sa.startswith("done")
    ckpt = tmp_path / "released"
    write_released_checkpoint(ckpt, root / "tok")
    from blockdistill.utils.checksum import write_dir_manifest

    write_dir_manifest(ckpt)
    flip(ckpt / "model.safetensors")
    assert serve_main(["-c", str(CONFIGS / "smoke"), "--set", f"run_dir={run}", "--set", "model.mask_token=<|MASK|>",
                       "--released", str(ckpt)]) == 3
    assert "model.safetensors" in capsys.readouterr().err
