"""Notebooks as a learner sees them: JupyterLab in headless Chromium, cells run, figures and widgets drawn.

A JupyterLab server (this interpreter, on 127.0.0.1, a free port, a token) serves a temporary folder holding
a copy of a notebook; playwright drives Debian's Chromium (never a downloaded browser) to open it, run every
cell, and check what is on the page: plotly figures with SVG traces, ipywidgets sliders, and a figure that
changes when a slider moves. Screenshots go to artifacts/browser/ (git-ignored) for a person to look at.

The widget test runs the page's JavaScript several times slower (Chrome's CPU throttling), as on a busy
machine: views built on plotly's FigureWidget (an anywidget with a fixed 2 s start-up limit) rendered empty
this way; views drawing into ipywidgets Output areas must render all the same.

Skipped where Chromium or playwright is missing, except under CI (CI=true), where that is a failure.
Every wait is bounded; the server is always shut down.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbrun import with_parameters  # noqa: E402

# One group: under `pytest -n ... --dist loadgroup` both tests share one worker, one server and one browser.
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "browser_widgets.ipynb"
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 "--disable-dev-shm-usage"]
SERVER_START_S = 90  # JupyterLab start-up, bounded
PAGE_READY_S = 120  # page loaded, kernel started and idle
RUN_ALL_S = 300  # every cell of a notebook executed
FIGURE_CHANGE_S = 60  # a slider move reaching the kernel and the new figure drawn (throttled page)
CPU_THROTTLE = 6  # the widget test's page runs its JavaScript this many times slower (1 = no throttling)
ANYWIDGET_TIMEOUT = (
    "\nanywidget gave up initializing a widget model after its fixed 2 s limit: a plotly FigureWidget ships "
    "and evaluates plotly's 5 MB widget bundle in the browser, which takes longer than that on a slow page, "
    "and its figure then stays empty. teach.widgets must draw into ipywidgets Output areas instead.")
# JupyterLab settings for the test: draw every cell (no virtual scrolling, so off-screen plots are laid
# out too), and no news or update checks (there is no network, and the browser only talks to the server).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"checkForUpdates": False,
                                                                        "fetchNews": "false"},
}


def _need(what: str) -> None:
    """Skip for `what` missing, or fail under CI, where the browser test must run."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} is required under CI for the browser test")
    pytest.skip(f"{what} not available")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kernelspec(data_dir: Path) -> None:
    """A python3 kernelspec for this interpreter, first on the search path: whatever kernels a user has
    installed elsewhere, notebooks run in the test's environment."""
    spec = data_dir / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (test)", "language": "python"}))


def _die_with_parent() -> None:
    """In the server process, before exec: Linux ends it when the test process dies, even by SIGKILL or a
    CI timeout that skips every finalizer (its kernels then exit by themselves, as orphaned kernels do)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1


class Lab:
    """A running JupyterLab server on a temporary root folder."""

    def __init__(self, root: Path, work: Path):
        self.root, self.work = root, work
        self.port, self.token = _free_port(), os.urandom(16).hex()
        self.base = f"http://127.0.0.1:{self.port}"
        self.record = work / "record.json"
        self.log_path = work / "jupyterlab.log"
        settings = work / "user-settings"
        for name, values in LAB_SETTINGS.items():
            target = settings / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(values))
        _kernelspec(work / "data")
        # Live widgets (no RISER_LITE_STATIC); notebook 01 without its LastFM part (tested by nbrun).
        env = {k: v for k, v in os.environ.items() if k not in ("RISER_LITE_STATIC", "RISER_LITE_LASTFM")}
        env.update(JUPYTER_DATA_DIR=str(work / "data"), JUPYTER_CONFIG_DIR=str(work / "config"),
                   JUPYTER_RUNTIME_DIR=str(work / "runtime"), RISER_LITE_RECORD=str(self.record),
                   PYDEVD_DISABLE_FILE_VALIDATION="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.open_browser=False",
                   "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
                   f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
                   f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={work / 'workspaces'}",
                   "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
                   "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                   "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-root")  # CI runs as root; the server only listens on 127.0.0.1
        self.log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(command, cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True, preexec_fn=_die_with_parent)

    def wait_ready(self, timeout: float = SERVER_START_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base}/api/status?token={self.token}", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"JupyterLab did not answer within {timeout} s:\n{self.log_tail()}")

    def url(self, name: str) -> str:
        """The notebook in a fresh workspace of its own (no layout restored from an earlier page)."""
        workspace = f"test-{os.urandom(4).hex()}"
        return f"{self.base}/lab/workspaces/{workspace}/tree/{name}?reset&token={self.token}"

    def recorded(self) -> dict:
        return json.loads(self.record.read_text()) if self.record.exists() else {}

    def log_tail(self, lines: int = 40) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the server and its kernels (its whole process group), politely first."""
        if self.process.poll() is None:
            for sig, wait in ((signal.SIGINT, 15), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(self.process.pid, sig)
                    if sig == signal.SIGINT:  # JupyterLab asks to confirm the first SIGINT
                        time.sleep(0.2)
                        os.killpg(self.process.pid, sig)
                    self.process.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
                except ProcessLookupError:
                    break
        try:  # kernels are in the server's process group; make sure none outlives it
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        _need("Debian's chromium (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _need("the playwright Python package")
    return path


@pytest.fixture(scope="module")
def lab(chromium, tmp_path_factory):
    root, work = tmp_path_factory.mktemp("lab-root"), tmp_path_factory.mktemp("lab-work")
    shutil.copy(FIXTURE, root / FIXTURE.name)
    nbformat.write(with_parameters(ROOT / "notebooks" / "01_data.ipynb", {"SMOKE": True}),
                   root / "01_data.ipynb")
    # Notebook 02 with a setting changed from the one 03 would train with, then 03 on the same SFT_RUN.
    nbformat.write(with_parameters(ROOT / "notebooks" / "02_sft.ipynb", {"SMOKE": True, "BATCH_SIZE": 16}),
                   root / "02_sft.ipynb")
    nbformat.write(with_parameters(ROOT / "notebooks" / "03_rollouts.ipynb", {"SMOKE": True}),
                   root / "03_rollouts.ipynb")
    # Notebook 03 on the real model, when LastFM is there (the test itself needs it and says so otherwise).
    lastfm = os.environ.get("RISER_LITE_LASTFM") or str(ROOT.parent / "shared" / "data" / "lastfm")
    if (Path(lastfm) / "train.jsonl").is_file():
        nbformat.write(with_parameters(ROOT / "notebooks" / "03_rollouts.ipynb",
                                       {"SMOKE": True, "BACKBONE": "smollm2-135m", "LASTFM_PATH": lastfm,
                                        "SFT_RUN": "real/sft"}), root / "03_rollouts_smollm2.ipynb")
    server = Lab(root, work)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True,
                                    timeout=60_000)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, lab):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    # Only the local server may be reached (the Colab badge image, for one, would go out).
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(lab.base)
                  else route.abort())
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.errors = errors
    try:
        yield page
    finally:
        context.close()


# JavaScript run in the page: the notebook open in JupyterLab and the state of its cells.
_NOTEBOOK = "window.jupyterapp && window.jupyterapp.shell.currentWidget"
_STATE = f"""() => {{
  const panel = {_NOTEBOOK};
  if (!panel || !panel.content || !panel.sessionContext) return null;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code');
  return {{
    kernel: kernel ? kernel.status : 'none',
    cells: cells.length,
    executed: cells.filter(c => c.model.executionCount !== null).length,
    errors: cells.flatMap((c, i) => c.model.outputs.toJSON()
        .filter(o => o.output_type === 'error').map(o => `cell ${{i}}: ${{o.ename}}: ${{o.evalue}}`)),
  }};
}}"""


def _wait_for(page, predicate_js: str, timeout_s: float, what: str):
    """Wait until a JS function returns a truthy value, polled in the page with a bounded timeout (a hung
    page cannot block the test); returns that value."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        return page.wait_for_function(predicate_js, polling=250, timeout=timeout_s * 1000).json_value()
    except PlaywrightTimeout:
        shot = _screenshot(page, "timeout.png")
        errors = getattr(page, "errors", [])
        slow = any("Failed to initialize model" in e for e in errors)
        raise TimeoutError(f"waited {timeout_s} s for {what} (screenshot: {shot}); page errors: {errors[:5]}"
                           + (ANYWIDGET_TIMEOUT if slow else "")) from None


def _command(page, command: str) -> None:
    """Start a JupyterLab command without waiting for its promise (run-all resolves only when done)."""
    page.evaluate("(command) => { window.jupyterapp.commands.execute(command); return true; }", command)


def run_all_cells(page, lab: Lab, name: str, cpu_throttle: float = 1, timeout: float = RUN_ALL_S) -> dict:
    """Open `name` in JupyterLab, run all cells, wait until each code cell ran and the kernel is idle.

    cpu_throttle: from the moment the notebook is open, run the page's JavaScript this many times slower.
    timeout: seconds for all cells to run.
    """
    page.goto(lab.url(name), timeout=PAGE_READY_S * 1000)
    _wait_for(page, f"() => {{ const s = ({_STATE})(); return s && s.kernel === 'idle'; }}", PAGE_READY_S,
              "the notebook to open with an idle kernel")
    if cpu_throttle != 1:
        cdp = page.context.new_cdp_session(page)
        cdp.send("Emulation.setCPUThrottlingRate", {"rate": cpu_throttle})
    _command(page, "application:toggle-left-area")  # more room for the notebook
    _command(page, "notebook:run-all-cells")
    state = _wait_for(page, f"""() => {{ const s = ({_STATE})();
        return s && s.kernel === 'idle' && (s.executed === s.cells || s.errors.length) ? s : null; }}""",
                      timeout, f"every cell of {name} to run")
    assert state["errors"] == [], f"{name}: {state['errors']}\n{lab.log_tail()}"
    assert state["executed"] == state["cells"]
    return state


_PLOTS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => ({
  traces: gd.querySelectorAll('.main-svg g.trace').length,
  width: gd.getBoundingClientRect().width,
  title: gd.layout && gd.layout.title ? (gd.layout.title.text || '') : '',
}))"""


def _plots(page) -> list[dict]:
    return page.evaluate(_PLOTS)


def _screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def test_notebook_03_runs_on_the_real_model_in_jupyterlab(page, lab, lastfm_path):
    """Notebook 03 with BACKBONE = "smollm2-135m": the pretrained model's LoRA start is trained, its groups
    are inspected in the widget and listed by name, and the tiny model rolls out beside it."""
    start = time.monotonic()
    assert (lab.root / "03_rollouts_smollm2.ipynb").is_file()
    run_all_cells(page, lab, "03_rollouts_smollm2.ipynb", timeout=2 * RUN_ALL_S)
    recorded = lab.recorded()
    assert "smollm2-135m backbone" in recorded["sft_settings"]
    assert [row["backbone"] for row in recorded["side_by_side"]] == ["tiny", "smollm2-135m"]
    assert recorded["valid_rate_constrained"] == 1.0
    assert page.locator(".jp-OutputArea-output", has_text="unconstrained (").count() >= 1  # groups by name
    assert page.locator(".jp-OutputArea-output", has_text="distinct (dedup)").count() >= 1  # the side table
    trained = lab.root / "real" / "sft-smollm2-135m-lastfm-n8-1ep-b4-v8-seed0"
    assert (trained / "model" / "base.json").is_file()  # the LoRA adapter and its base's identity
    _screenshot(page, "03_smollm2.png")
    assert page.errors == []
    print(f"\nbrowser: notebook 03 on SmolLM2 run in JupyterLab in {time.monotonic() - start:.1f} s")


def test_widgets_render_and_a_slider_changes_the_figure(page, lab):
    start = time.monotonic()
    run_all_cells(page, lab, FIXTURE.name, cpu_throttle=CPU_THROTTLE)
    recorded = lab.recorded()
    assert recorded["python"] == sys.executable  # the kernelspec the server used is this interpreter
    assert recorded["explorer_static"] is False and recorded["dashboard_static"] is False  # live widgets
    # Three figures drawn with SVG traces: the explorer, the dashboard, the static long-tail figure.
    plots = _wait_for(page, f"() => {{ const p = ({_PLOTS})(); return p.length >= 3 && "
                            "p.every(x => x.traces > 0 && x.width > 100) ? p : null; }", 60,
                      "three plotly figures with traces")
    titles = [p["title"] for p in plots]
    assert "Learnable groups under plain GRPO" in titles and "Training dashboard" in titles, titles
    assert any("opularity" in t for t in titles), titles
    # The two live figures are drawn inside the views' ipywidgets Output areas.
    assert page.locator(".widget-output .js-plotly-plot").count() == 2
    sliders = page.locator(".widget-slider")
    assert sliders.count() == 2  # the explorer's G and temperature

    # The explorer's figure: the plot in the widget box that holds the sliders.
    explorer_plot = """() => {
      const box = document.querySelector('.widget-slider').closest('.widget-vbox');
      const gd = box && box.querySelector('.widget-output .js-plotly-plot');
      return gd && gd.data ? {x: Array.from(gd.data[0].x), y: Array.from(gd.data[0].y),
                              ring: Array.from(gd.data[gd.data.length - 1].x),
                              traces: gd.querySelectorAll('.main-svg g.trace').length,
                              svg: gd.querySelector('.main-svg').innerHTML.length,
                              summary: box.querySelector('.widget-html').innerText} : null;
    }"""
    before = _wait_for(page, explorer_plot, 30, "the explorer's figure")
    assert before["x"] == [2] and before["traces"] == 2 and "G = 2" in before["summary"]  # line and ring
    assert before["ring"] == [2]

    handle = sliders.first.locator(".noUi-handle")
    handle.scroll_into_view_if_needed()
    handle.focus()
    page.keyboard.press("ArrowRight")  # G: 2 -> 4 (continuous_update=False: sent on release of the key)
    moved = (f"() => {{ const s = ({explorer_plot})(); "
             "return s && s.x.length === 2 && s.traces > 0 ? s : null; }")
    after = _wait_for(page, moved, FIGURE_CHANGE_S, "the figure to show the new group size")
    assert after["x"] == [2, 4] and after["y"][0] == pytest.approx(before["y"][0])
    assert after["y"][1] > after["y"][0]  # more draws, more groups with a hit and a miss
    assert "G = 4" in after["summary"] and after["svg"] != before["svg"]
    assert after["ring"] == [4]  # the ring follows the slider
    page.wait_for_timeout(500)  # let the new point's transition finish before the picture
    page.locator(".widget-vbox", has=sliders.first).first.scroll_into_view_if_needed()
    assert _screenshot(page, "widgets.png").stat().st_size > 10_000
    page.locator(".widget-vbox", has=sliders.first).first.screenshot(path=str(ARTIFACTS / "explorer.png"))
    assert page.errors == []
    print(f"\nbrowser: widget notebook run (page {CPU_THROTTLE}x slower), checked and slider moved in "
          f"{time.monotonic() - start:.1f} s")


def test_notebook_01_runs_in_jupyterlab(page, lab):
    start = time.monotonic()
    state = run_all_cells(page, lab, "01_data.ipynb")
    assert state["cells"] >= 15
    plots = _wait_for(page, f"() => {{ const p = ({_PLOTS})(); return p.length >= 4 && "
                            "p.every(x => x.traces > 0) ? p : null; }", 60, "notebook 01's figures")
    assert len(plots) >= 4
    assert page.locator(".riser-token").count() > 0  # the token spans of the trie walk (HTML output)
    page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
    _screenshot(page, "01_data.png")
    assert page.errors == []
    print(f"\nbrowser: notebook 01 run in JupyterLab in {time.monotonic() - start:.1f} s")


def test_notebook_03_runs_after_02_with_a_changed_setting(page, lab):
    """02 run with BATCH_SIZE = 16 writes SFT_RUN; 03 (whose own start has batch 32) uses that run as it is,
    says which settings it has, and runs to the end: a class that changes 02 keeps going."""
    start = time.monotonic()
    run_all_cells(page, lab, "02_sft.ipynb")
    assert (lab.root / "runs" / "sft-smoke" / "model").is_dir()
    run_all_cells(page, lab, "03_rollouts.ipynb")
    recorded = lab.recorded()
    assert "batch 16" in recorded["sft_settings"] and "micro backbone" in recorded["sft_settings"]
    # 02 wrote its title run and its semantic-ID run (section 8); 03 trained nothing of its own.
    assert sorted(p.name for p in (lab.root / "runs").iterdir()) == ["sft-smoke", "sft-smoke-sid"]
    shown = page.locator(".jp-OutputArea-output", has_text="SFT run runs/sft-smoke:").first
    assert "batch 16" in shown.inner_text()
    _screenshot(page, "03_after_changed_02.png")
    assert page.errors == []
    print(f"\nbrowser: 02 (changed) then 03 run in JupyterLab in {time.monotonic() - start:.1f} s")
