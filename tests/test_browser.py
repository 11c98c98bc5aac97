"""The lesson notebooks in a real browser: JupyterLab, headless Chromium, selenium.

nbclient runs the code; only a browser shows what a learner sees.  For every
notebook that shows a ddpm widget (and 6-2-1, 6-2-4, 6-2-6 at least), this test
starts JupyterLab on 127.0.0.1 (a random port, a token, ``DDPM_QUICK=1``) over a
temporary copy of notebooks/, opens the notebook in Chromium, runs Run All and
checks:

* no cell ends in an error, and the browser console logged no error;
* every widget output rendered as controls (no "Loading widget..." or
  "Error displaying widget"), and ddpm's pictures are shown at their natural
  size, not stretched;
* dragging a widget's slider changes its picture;
* pressing Play advances several frames.

Screenshots go to a temporary folder (``$DDPM_SCREENSHOTS`` if set); its path is
printed at the end of the run, for CI to keep as artifacts.  Skipped cleanly
where Chromium, chromedriver, selenium or JupyterLab is missing
(``apt-get install chromium chromium-driver``; ``pip install 'ddpm[test]'``).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
REQUIRED = ("6-2-1", "6-2-4", "6-2-6")
RUN_TIMEOUT = 240          # seconds for one notebook's Run All (quick mode: ~5-60 s here)


def _browser_paths():
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return chrome, driver


def stack_present():
    """Whether this machine can run the browser test (what the lab fixture skips without)."""
    from importlib.util import find_spec
    chrome, driver = _browser_paths()
    return bool(chrome and driver) and all(
        find_spec(m) is not None for m in ("selenium", "jupyterlab", "ipywidgets", "matplotlib"))


def _notebooks():
    out = []
    for nb in sorted(NOTEBOOKS.glob("6-2-*.ipynb")):
        src = "".join("".join(c.get("source", "")) for c in json.loads(nb.read_text())["cells"])
        if nb.name.startswith(REQUIRED) or "widgets." in src:
            out.append(nb.name)
    return out


@pytest.fixture(scope="module")
def screenshots():
    import conftest
    d = Path(os.environ.get("DDPM_SCREENSHOTS") or tempfile.mkdtemp(prefix="ddpm-browser-"))
    d.mkdir(parents=True, exist_ok=True)
    conftest.SCREENSHOT_DIRS.append(str(d))          # printed in the run's summary
    return d


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """(base URL, token) of a JupyterLab serving a copy of notebooks/ on 127.0.0.1."""
    chrome, driver = _browser_paths()
    if not (chrome and driver):
        pytest.skip("needs Chromium and chromedriver (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium")
    pytest.importorskip("jupyterlab")
    pytest.importorskip("ipywidgets")
    pytest.importorskip("matplotlib")
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(NOTEBOOKS, root / "notebooks")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(16)
    env = dict(os.environ, DDPM_QUICK="1", MPLBACKEND="Agg",
               JUPYTER_CONFIG_DIR=str(root / "config"), JUPYTER_RUNTIME_DIR=str(root / "rt"),
               PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in
                                          [os.environ.get("PYTHONPATH")] if p]))
    log = open(root / "server.log", "w")
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root / 'notebooks'}",
           "--ServerApp.allow_root=True", "--LabApp.expose_app_in_browser=True",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class="
           "jupyterlab.NeverCheckForUpdate"]
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited: {(root / 'server.log').read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    pytest.fail("JupyterLab did not start within 60 s")
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}", token
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:  # pragma: no cover
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def browser(lab):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chrome, driver = _browser_paths()
    opts = Options()
    opts.binary_location = chrome
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1000", "--force-device-scale-factor=1"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(driver), options=opts)
    d.set_page_load_timeout(60)
    yield d
    d.quit()


# [kernel status, cells still queued or running] of the notebook in front, if it is `name`
_KERNEL_IDLE = """
const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
if (!w || !w.context || !w.context.path.endsWith(arguments[0])) return ['other', -1];
const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
const busy = Array.from(w ? w.node.querySelectorAll('.jp-InputArea-prompt') : [])
    .filter(e => e.textContent.includes('*')).length;
return [k ? k.status : 'none', busy];
"""

# every query is scoped to the notebook in front: earlier notebooks stay open, hidden, in tabs
_PANEL = "const panel = window.jupyterapp.shell.currentWidget.node;\n"
_WIDGET_OUTPUTS = _PANEL + """
return Array.from(panel.querySelectorAll('.jp-OutputArea-output')).filter(
    o => o.firstElementChild && o.firstElementChild.classList.contains('jupyter-widgets'));
"""
_UNRENDERED = _PANEL + """
return Array.from(panel.querySelectorAll('.jp-OutputArea-output')).map(o => o.textContent)
    .filter(t => /Loading widget|Error displaying widget|Error rendering|Model not found/.test(t))
    .map(t => t.slice(0, 300));
"""


def _wait(cond, timeout, what, poll=0.25):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _console_errors(d):
    return [e for e in d.get_log("browser") if e["level"] == "SEVERE"]


def _handle_value(handle):
    v = handle.get_attribute("aria-valuenow")
    return float(v) if v is not None else None


@pytest.mark.parametrize("name", _notebooks())
def test_notebook_in_a_real_browser(name, lab, browser, screenshots):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    base, token = lab
    d = browser
    stem = name.split("-")[0:3]
    tag = "-".join(stem)
    d.get(f"{base}/lab/tree/{name}?token={token}")
    d.get_log("browser")                                     # start the console log afresh
    t0 = time.time()
    _wait(lambda: d.execute_script(_KERNEL_IDLE, name)[0] == "idle", 90, f"{name}: the kernel")
    d.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    _wait(lambda: d.execute_script(_KERNEL_IDLE, name)[1] != 0 or d.execute_script(
        _PANEL + "return panel.querySelectorAll('.jp-OutputArea-output').length") > 0, 30,
        f"{name}: Run All to start")
    _wait(lambda: d.execute_script(_KERNEL_IDLE, name) == ["idle", 0], RUN_TIMEOUT,
          f"{name}: Run All to finish")
    time.sleep(1.0)                                          # the last widget views render
    ran = time.time() - t0
    d.save_screenshot(str(screenshots / f"{tag}-after-run-all.png"))

    errors = d.execute_script(_PANEL + """return Array.from(panel.querySelectorAll(
        '[data-mime-type="application/vnd.jupyter.error"]')).map(e => e.textContent.slice(0, 600));""")
    assert not errors, f"{name}: error output after Run All:\n" + "\n---\n".join(errors)
    stderr = d.execute_script(_PANEL + """return Array.from(panel.querySelectorAll(
        '[data-mime-type="application/vnd.jupyter.stderr"]')).map(e => e.textContent);""")
    bad = [s for s in stderr if "Traceback" in s or "Error" in s]
    assert not bad, f"{name}: errors on stderr:\n" + "\n---\n".join(s[:600] for s in bad)

    unrendered = d.execute_script(_UNRENDERED)
    assert not unrendered, f"{name}: widgets that did not render: {unrendered}"
    outputs = d.execute_script(_WIDGET_OUTPUTS)
    if name.startswith(REQUIRED) or outputs:
        assert outputs, f"{name}: no widget was displayed"
    for i, out in enumerate(outputs):
        text = out.text
        assert "Loading widget" not in text and "Error displaying widget" not in text, \
            f"{name}: widget {i} did not render: {text[:200]!r}"
        controls = out.find_elements(By.CSS_SELECTOR, ".widget-slider, .widget-play, "
                                     ".widget-toggle-buttons, .widget-dropdown, button")
        assert controls, f"{name}: widget {i} shows no controls"
        d.execute_script("arguments[0].scrollIntoView({block: 'center'});", out)
        for img in out.find_elements(By.CSS_SELECTOR, "img.ddpm-pixelated"):
            size = ("const i = arguments[0]; return [i.naturalWidth, i.naturalHeight, "
                    "i.clientWidth, i.clientHeight];")
            _wait(lambda: d.execute_script(size, img)[2] > 0, 10,
                  f"{name}: widget {i}'s picture to be laid out")   # off-screen cells are not
            nw, nh, cw, ch = d.execute_script(size, img)
            assert nw > 0 and (cw, ch) == (nw, nh), \
                f"{name}: widget {i} shows a {nw}x{nh} picture at {cw}x{ch} (stretched)"

    for i, out in enumerate(outputs):
        handles = out.find_elements(By.CSS_SELECTOR, ".widget-slider .noUi-handle")
        imgs = out.find_elements(By.CSS_SELECTOR, "img")
        if not handles or not imgs:
            continue
        d.execute_script("arguments[0].scrollIntoView({block: 'center'});", out)
        src = [im.get_attribute("src") for im in imgs]
        v0 = _handle_value(handles[0])
        lo = float(handles[0].get_attribute("aria-valuemin"))
        hi = float(handles[0].get_attribute("aria-valuemax"))
        dx = 80 if v0 < (lo + hi) / 2 else -80                # toward the middle
        ActionChains(d).click_and_hold(handles[0]).move_by_offset(dx, 0).release().perform()
        _wait(lambda: _handle_value(handles[0]) != v0, 10,
              f"{name}: widget {i}'s slider to move when dragged")
        _wait(lambda: [im.get_attribute("src") for im in imgs] != src, 20,
              f"{name}: widget {i}'s picture to change after dragging its slider")
        d.save_screenshot(str(screenshots / f"{tag}-widget{i}-dragged.png"))

        plays = out.find_elements(By.CSS_SELECTOR, ".widget-play button")
        if not plays:
            continue
        start = _handle_value(handles[0])
        plays[0].click()
        seen = {start}
        end = time.time() + 8
        while time.time() < end and len(seen) < 5:
            seen.add(_handle_value(handles[0]))
            time.sleep(0.1)
        d.save_screenshot(str(screenshots / f"{tag}-widget{i}-playing.png"))
        if len(plays) > 1:
            plays[1].click()                                 # pause
        assert len(seen) >= 5, (f"{name}: widget {i}: Play showed only frames "
                                f"{sorted(seen)} in 8 s (it should advance several)")

    errs = _console_errors(d)
    assert not errs, f"{name}: JavaScript console errors:\n" + "\n".join(
        e["message"][:300] for e in errs)
    print(f"{name}: Run All {ran:.0f} s, {len(outputs)} widget(s) checked")
    d.execute_script("window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
