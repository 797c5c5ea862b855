"""The chapters as a student uses them: JupyterLab in Chromium, driven by Playwright.

`JupyterLab` starts a server on a free loopback port over a temporary workspace (copies of the
chapters, fresh Jupyter and IPython settings, figures written to a temporary folder), and stops it
and every process under it. `check_chapter` opens one chapter, runs all its cells, waits for the
kernel to go idle, and reads the page: error outputs, widgets that failed to display, JavaScript
errors. Then it finds every explorer the page shows (every displayed ipywidget with a control),
works each of its controls once (another option, a longer text, a slider step, a click) and checks
from the DOM that the explorer's output changed. The run needs no network.

    with JupyterLab(chapters) as lab, Chromium() as browser:
        report = check_chapter(browser, lab, "04_short_convolution.ipynb", screenshots)
        print(report.summary()); assert report.ok, report.failures
"""

from __future__ import annotations

import html
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHAPTERS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
STARTUP = Path(__file__).with_name("kernel_startup.py")
CHROMIUM_ENV = "LFM2_EDU_CHROMIUM"
SCREENSHOTS_ENV = "LFM2_EDU_SCREENSHOTS"
BREAK_ENV = "LFM2_EDU_BREAK"  # read by kernel_startup.py: "module:function" to break when a widget calls it

# Upper bounds, generous for slow shared machines (LFM2_EDU_BROWSER_SLOW=3 triples them).
SLOW = float(os.environ.get("LFM2_EDU_BROWSER_SLOW", "1"))
START_TIMEOUT_S = 300 * SLOW  # the server answers
RUN_TIMEOUT_S = 900 * SLOW  # one chapter, all cells
STALL_S = 60 * SLOW  # run-all asked, and no cell started: ask again (at most RUN_ATTEMPTS times)
RUN_ATTEMPTS = 3
CHANGE_TIMEOUT_S = 120 * SLOW  # one interaction, until the explorer's output has changed and the kernel is idle
IDLE_SETTLE_S = 10 * SLOW  # unchanged this long with the kernel idle: the interaction changed nothing

# Chromium as root in a container, on a closed network: no sandbox, no GPU, no background traffic.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

# JupyterLab settings for a test run: every cell kept in the DOM (no windowing), no news, no update check.
USER_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}


def chromium_path() -> str:
    """The system Chromium (Playwright's own download does not reach these machines)."""
    for candidate in (os.environ.get(CHROMIUM_ENV), shutil.which("chromium"), shutil.which("chromium-browser"),
                      "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    raise FileNotFoundError(f"expected a Chromium executable (the system package, or ${CHROMIUM_ENV}), found none")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children first seen, then theirs), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_processes(pids: list[int], grace_s: float = 10.0) -> list[int]:
    """SIGTERM, then SIGKILL after `grace_s`, each process by its id. Returns those that survived."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    for pid in pids:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    time.sleep(0.2)
    return [p for p in pids if alive(p)]


# --------------------------------------------------------------------------------- the server
class JupyterLab:
    """A JupyterLab server over a temporary workspace holding copies of `chapters`.

    env: extra environment for the server and its kernels (e.g. BREAK_ENV)."""

    def __init__(self, chapters: list[Path], env: dict[str, str] | None = None):
        self.chapters, self.extra_env = list(chapters), dict(env or {})
        self.process: subprocess.Popen | None = None
        self.started: set[int] = set()  # every process seen under the server
        self.log_path: Path | None = None

    def __enter__(self) -> "JupyterLab":
        self.tmp = Path(tempfile.mkdtemp(prefix="lfm2-edu-lab-"))
        self.root = self.tmp / "notebooks"
        self.root.mkdir()
        for path in self.chapters:
            shutil.copy(path, self.root / path.name)
        settings = self.tmp / "user-settings"
        for name, values in USER_SETTINGS.items():
            target = settings / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(values))
        startup = self.tmp / "ipython" / "profile_default" / "startup"
        startup.mkdir(parents=True)
        shutil.copy(STARTUP, startup / "00_lfm2_edu_browser_test.py")
        self.port, self.token = free_port(), secrets.token_hex(16)
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(self.tmp / "jupyter-config"),
               "JUPYTER_RUNTIME_DIR": str(self.tmp / "jupyter-runtime"), "IPYTHONDIR": str(self.tmp / "ipython"),
               "LFM2_EDU_FIGURES": str(self.tmp / "figures"), "MPLBACKEND": "module://matplotlib_inline.backend_inline",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               **self.extra_env}
        args = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={self.root}", f"--LabApp.user_settings_dir={settings}",
                f"--LabApp.workspaces_dir={self.tmp / 'workspaces'}", "--LabApp.expose_app_in_browser=True",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.news_url=None",
                f"--MappingKernelManager.kernel_info_timeout={START_TIMEOUT_S}"]  # slow kernel starts
        if os.geteuid() == 0:
            args.append("--allow-root")  # containers and CI machines are often root
        self.log_path = self.tmp / "jupyter.log"
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        self.started.add(self.process.pid)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def _wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                self.api("status")
                return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"JupyterLab did not answer on {self.url} within {timeout_s} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def remember_processes(self) -> None:
        """Note every process now under the server (kernels start in their own sessions, so a
        process group would miss them); stop() ends each of them by its id."""
        if self.process is not None:
            self.started.update(descendants(self.process.pid))

    def shutdown_kernels(self) -> None:
        self.remember_processes()
        for session in self.api("sessions") or []:
            self.api(f"sessions/{session['id']}", method="DELETE")

    def stop(self) -> list[int]:
        """Stop the server, its kernels and anything else under it; returns what survived."""
        if self.process is None:
            return []
        self.remember_processes()
        try:
            self.api("shutdown", method="POST")  # shuts the kernels down, then the server
            self.process.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            pass
        survivors = stop_processes(sorted(p for p in self.started if alive(p)))
        self.process.wait(timeout=10) if self.process.poll() is None else None
        self.process = None
        return survivors

    def __exit__(self, *exc) -> None:
        self.survivors = self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Chromium:
    """The system Chromium under Playwright, with a fresh profile; closed (and its processes
    stopped) on exit."""

    def __enter__(self):
        from playwright.sync_api import sync_playwright

        self.profile = Path(tempfile.mkdtemp(prefix="lfm2-edu-chromium-"))
        self._playwright = sync_playwright().start()
        try:
            self.context = self._playwright.chromium.launch_persistent_context(
                self.profile, executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True,
                viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
        except BaseException:
            self._playwright.stop()
            raise
        return self

    def new_page(self):
        return self.context.new_page()

    def __exit__(self, *exc) -> None:
        driver = self._driver_pid()
        before = descendants(driver) if driver else []
        try:
            self.context.close()
        finally:
            self._playwright.stop()
            self.survivors = stop_processes([p for p in before if alive(p)], grace_s=5)
            shutil.rmtree(self.profile, ignore_errors=True)

    def _driver_pid(self) -> int | None:
        """The Playwright driver (node), started by this process: Chromium runs under it."""
        for pid in descendants(os.getpid()):
            try:
                if b"playwright" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return pid
            except OSError:
                continue
        return None


# --------------------------------------------------------------------------------- a chapter
@dataclass
class Interaction:
    control: str  # what was worked: "select 'conv layer'", "textarea", "slider 'temperature'"
    action: str  # what was done: "picked 'layer 3'", "typed ' and a dog'", "one step right"
    changed: str = ""  # what changed in the explorer's output, in words; empty: nothing
    error: str = ""


@dataclass
class Explorer:
    cell: int  # the cell's index in the notebook, from 0, markdown cells counted
    code: str  # the cell's last line of code, to name the explorer
    controls: int
    interactions: list[Interaction] = field(default_factory=list)
    screenshot: str = ""

    @property
    def name(self) -> str:
        return f"cell {self.cell} `{self.code}`"

    @property
    def failures(self) -> list[str]:
        out = []
        for i in self.interactions:
            if i.error:
                out.append(f"explorer {self.name}: {i.control}: {i.action}: {i.error}")
            elif not i.changed:
                out.append(f"explorer {self.name}: {i.control}: {i.action}: its output did not change")
        return out


@dataclass
class ChapterReport:
    chapter: str
    code_cells: int = 0
    executed: int = 0
    errors: list[str] = field(default_factory=list)  # error outputs, widget errors, JavaScript errors
    explorers: list[Explorer] = field(default_factory=list)
    static_widgets: int = 0  # displayed widgets without a control (a note, a table)
    seconds: float = 0.0
    screenshots: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the run had to retry

    @property
    def failures(self) -> list[str]:
        out = list(self.errors)
        if self.executed < self.code_cells:
            out.append(f"{self.code_cells - self.executed} of {self.code_cells} code cells did not run")
        return out + [f for e in self.explorers for f in e.failures]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def interactions(self) -> int:
        return sum(len(e.interactions) for e in self.explorers)

    def summary(self) -> str:
        lines = [f"{self.chapter}: {self.executed}/{self.code_cells} code cells run in {self.seconds:.0f} s, "
                 f"{len(self.explorers)} explorers found, {self.interactions} interactions, "
                 f"{self.static_widgets} widgets without controls, "
                 f"{'OK' if self.ok else f'{len(self.failures)} FAILURES'}"]
        for e in self.explorers:
            lines.append(f"  explorer {e.name}: {e.controls} controls")
            for i in e.interactions:
                lines.append(f"    {i.control}: {i.action} -> {i.error or i.changed or 'NOTHING CHANGED'}")
        lines += [f"  note: {n}" for n in self.notes] + [f"  FAILED: {f}" for f in self.failures]
        return "\n".join(lines)


# JavaScript run in the page. The app is exposed as window.jupyterapp (expose_app_in_browser).
JS_NOTEBOOK_READY = """() => {
  const app = window.jupyterapp; if (!app) return false;
  const panel = app.shell.currentWidget;
  return !!(panel && panel.content && panel.content.widgets && panel.sessionContext && panel.context
            && panel.context.isReady && panel.sessionContext.session && panel.sessionContext.session.kernel
            && panel.sessionContext.session.kernel.connectionStatus === 'connected'
            && panel.sessionContext.session.kernel.status === 'idle');  // it answered kernel_info
}"""

JS_STATE = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code' && c.model.sharedModel.getSource().trim());
  const errors = [];
  let executed = 0;
  for (const cell of cells) {
    if (cell.model.executionCount !== null && cell.model.executionCount !== undefined
        && !cell.node.querySelector('.jp-InputArea-prompt')?.textContent.includes('*')) executed += 1;
    const outputs = cell.model.outputs;
    for (let i = 0; i < outputs.length; i++) {
      const out = outputs.get(i).toJSON();
      const index = panel.content.widgets.indexOf(cell);
      if (out.output_type === 'error') errors.push(`cell ${index}: ${out.ename}: ${out.evalue}`);
      if (out.output_type === 'stream' && out.name === 'stderr' && String(out.text).includes('Traceback'))
        errors.push(`cell ${index}: a traceback on stderr: ${String(out.text).slice(-300)}`);
    }
  }
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return {codeCells: cells.length, executed, errors, kernel: kernel ? kernel.status : 'none'};
}"""

# The explorers: each widget view displayed as an output of a cell (not the outputs nested inside
# a widget), tagged with data-lfm2-view so that Playwright can find it again.
JS_WIDGETS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const found = [];
  panel.content.widgets.forEach((cell, index) => {
    if (cell.model.type !== 'code') return;
    const outputs = cell.node.querySelectorAll('.jp-Cell-outputArea > .jp-OutputArea-child > .jp-OutputArea-output');
    Array.from(outputs).filter(o => o.querySelector(':scope > .jupyter-widgets')).forEach((view, n) => {
      const source = cell.model.sharedModel.getSource().split('\\n').filter(l => l.trim() && !l.trim().startsWith('#'));
      const tag = `${index}-${n}`;
      view.setAttribute('data-lfm2-view', tag);
      found.push({cell: index, n, tag, code: (source[source.length - 1] || '').trim().slice(0, 90)});
    });
  });
  return found;
}"""

# A view's content that the kernel writes: everything but the controls the test works itself.
JS_SIGNATURE = """(view) => {
  const copy = view.cloneNode(true);
  copy.querySelectorAll('select, textarea, input, .widget-readout, .noUi-target, button, .widget-label')
      .forEach(e => e.remove());
  return copy.innerHTML;
}"""

JS_WIDGET_ERRORS = """(view) => {
  const errors = [];
  if (view.textContent.includes('Error displaying widget')) errors.push('Error displaying widget');
  view.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]').forEach(
      e => errors.push('an error inside the explorer: ' + e.textContent.slice(-300)));
  return errors;
}"""

CONTROLS = ("select, textarea, input[type=text], input[type=number], input[type=checkbox], .noUi-handle, "
            "button.jupyter-button, input[type=radio]")


def _view(page, tag: str):
    return page.locator(f'[data-lfm2-view="{tag}"]')


def _describe_change(before: str, after: str) -> str:
    """What changed between two signatures, in words: images redrawn, new words."""
    images = re.compile(r'<img[^>]*src="([^"]*)"')
    old_images, new_images = images.findall(before), images.findall(after)
    words = lambda markup: html.unescape(re.sub(r"<[^>]+>", " ", markup)).split()  # noqa: E731
    parts = []
    if old_images != new_images:
        parts.append(f"{sum(i not in old_images for i in new_images)} of {len(new_images)} images redrawn")
    if words(before) != words(after):
        old = set(words(before))
        new = [w for w in words(after) if w not in old]
        parts.append("text changed" + (f", new: {' '.join(new)[:60]!r}" if new else ""))
    return ", ".join(parts) or "markup changed (styles, highlights)"


def _label_of(control) -> str:
    """A control's description as the page shows it (the widget label beside it)."""
    return control.evaluate("""(e) => {
      const w = e.closest('.widget-inline-hbox, .widget-dropdown, .widget-textarea, .widget-text, .widget-slider,'
                          + '.widget-checkbox, .widget-hslider') || e.parentElement;
      const clean = (t) => (t || '').replace(/\u200b/g, '').trim();
      const label = w && w.querySelector('.widget-label');
      return clean(label && label.textContent) || clean(e.closest('label') && e.closest('label').textContent)
             || clean(e.textContent).slice(0, 30);
    }""")


def _work(control, kind: str) -> str:
    """Work one control once, so that its value changes; returns what was done."""
    if kind == "select":
        options = control.evaluate("(e) => Array.from(e.options).map(o => o.textContent)")
        current = control.evaluate("(e) => e.selectedIndex")
        if len(options) < 2:
            return ""
        pick = (current + 1) % len(options)  # the next option, or the first after the last
        control.select_option(index=pick)
        return f"picked {options[pick]!r}"
    if kind in ("textarea", "text"):
        addition = " and the cat sat on the mat" if kind == "textarea" else "2"
        control.click()
        control.press("Control+End")  # the end of the text
        control.type(addition, delay=5)
        control.evaluate("(e) => { e.dispatchEvent(new Event('change', {bubbles: true})); e.blur(); }")
        return f"typed {addition!r}"
    if kind == "number":
        value = control.input_value()
        control.fill(str(float(value or 0) + 1))
        control.press("Enter")
        return f"set {value} + 1"
    if kind == "slider":
        control.focus()
        control.press("ArrowRight")
        control.press("ArrowRight")
        return "two steps right"
    control.click()
    return "clicked"


def _kind(control) -> str:
    tag, kind, classes = control.evaluate("(e) => [e.tagName.toLowerCase(), e.type || '', e.className || '']")
    if tag == "select":
        return "select"
    if tag == "textarea":
        return "textarea"
    if tag == "input":
        return {"text": "text", "number": "number", "checkbox": "checkbox", "radio": "radio"}.get(kind, kind)
    return "slider" if "noUi-handle" in classes else "button"


def _wait_idle(page, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    state = page.evaluate(JS_STATE)
    while state["kernel"] != "idle" and time.monotonic() < deadline:
        time.sleep(0.25)
        state = page.evaluate(JS_STATE)
    return state


def check_chapter(browser: Chromium, lab: JupyterLab, chapter: str, screenshots: Path | None = None) -> ChapterReport:
    """Open a chapter in JupyterLab, run all cells, read the page, work every explorer."""
    report = ChapterReport(chapter)
    if screenshots:
        screenshots.mkdir(parents=True, exist_ok=True)
    page = browser.new_page()
    js_errors: list[str] = []
    page.on("pageerror", lambda e: js_errors.append(f"JavaScript error: {e}"))
    page.on("console", lambda m: js_errors.append(f"console error: {m.text}") if m.type == "error"
            and "Error displaying widget" in m.text else None)
    start = time.monotonic()
    try:
        page.goto(f"{lab.url}/lab/tree/{chapter}?reset&token={lab.token}")
        page.set_default_timeout(60_000 * SLOW)
        page.wait_for_function(JS_NOTEBOOK_READY, timeout=START_TIMEOUT_S * 1000, polling=500)
        lab.remember_processes()
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
        deadline = time.monotonic() + RUN_TIMEOUT_S
        for attempt in range(RUN_ATTEMPTS):
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
            started, stall = False, time.monotonic() + STALL_S
            while True:
                time.sleep(0.5)
                state = page.evaluate(JS_STATE)
                started = started or state["executed"] > 0 or state["kernel"] == "busy"
                done = state["executed"] >= state["codeCells"] and state["kernel"] == "idle"
                if done or (state["errors"] and state["kernel"] == "idle") or time.monotonic() > deadline:
                    break
                if not started and time.monotonic() > stall:
                    break  # the request was lost (a kernel connection replaced under load): ask again
            if started:
                break
            report.notes.append(f"run-all attempt {attempt + 1}: the kernel never started; asked again")
        time.sleep(1.0)  # let the last outputs render
        state = _wait_idle(page, 60 * SLOW)
        report.code_cells, report.executed = state["codeCells"], state["executed"]
        report.errors += state["errors"]
        if time.monotonic() > deadline:
            report.errors.append(f"the cells did not finish within {RUN_TIMEOUT_S} s")
        if page.locator("text=Error displaying widget").count():
            report.errors.append("a widget output shows 'Error displaying widget'")
        lab.remember_processes()
        if screenshots:
            report.screenshots.append(_screenshot_notebook(page, screenshots / f"{Path(chapter).stem}-end.png"))
        for found in page.evaluate(JS_WIDGETS):
            view = _view(page, found["tag"])
            explorer = Explorer(found["cell"], found["code"], view.locator(CONTROLS).count())
            if not explorer.controls:
                report.static_widgets += 1
                continue
            report.explorers.append(explorer)
            explorer_errors = view.evaluate(JS_WIDGET_ERRORS)
            if explorer_errors:
                report.errors += [f"explorer {explorer.name}: {e}" for e in explorer_errors]
            for c in range(explorer.controls):
                explorer.interactions.append(_interact(page, view, view.locator(CONTROLS).nth(c)))
            if screenshots:
                path = screenshots / f"{Path(chapter).stem}-cell{found['cell']}-{found['n']}.png"
                view.scroll_into_view_if_needed()
                view.screenshot(path=str(path))
                explorer.screenshot = str(path)
                report.screenshots.append(str(path))
        state = page.evaluate(JS_STATE)
        report.errors += [e for e in state["errors"] if e not in report.errors]
        if screenshots:
            report.screenshots.append(_screenshot_notebook(page, screenshots / f"{Path(chapter).stem}-top.png", top=True))
    except Exception as e:  # a page that never became a notebook, a timeout: the chapter failed
        report.errors.append(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        if screenshots:
            try:
                path = screenshots / f"{Path(chapter).stem}-failure.png"
                page.screenshot(path=str(path))
                report.screenshots.append(str(path))
            except Exception:
                pass
    finally:
        report.errors += js_errors
        report.seconds = time.monotonic() - start
        try:
            page.close()
        finally:
            lab.shutdown_kernels()
    return report


def _screenshot_notebook(page, path: Path, top: bool = False) -> str:
    if top:
        page.evaluate("() => window.jupyterapp.shell.currentWidget.content.node.scrollTo(0, 0)")
    page.screenshot(path=str(path))
    return str(path)


def _interact(page, view, control) -> Interaction:
    kind = _kind(control)
    label = _label_of(control)
    record = Interaction(f"{kind} {label!r}" if label else kind, "")
    before = view.evaluate(JS_SIGNATURE)
    try:
        control.scroll_into_view_if_needed()
        record.action = _work(control, kind)
        if not record.action:
            record.action, record.changed = "nothing to pick (one option)", "-"
            return record
        deadline = time.monotonic() + CHANGE_TIMEOUT_S
        after, settled, idle_since = before, 0, None
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = view.evaluate(JS_SIGNATURE)
            idle = page.evaluate(JS_STATE)["kernel"] == "idle"
            settled = settled + 1 if (now == after and now != before and idle) else 0
            idle_since = (idle_since or time.monotonic()) if idle else None
            after = now
            if settled >= 2:  # changed, and the same twice in a row with the kernel idle
                break
            if now == before and idle_since and time.monotonic() - idle_since > IDLE_SETTLE_S:
                break  # the kernel has long finished and nothing changed
        if after != before:
            record.changed = _describe_change(before, after)
        errors = view.evaluate(JS_WIDGET_ERRORS)
        if errors:
            record.error = "; ".join(errors)
    except Exception as e:
        record.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return record
