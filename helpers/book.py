"""The collection as a static site: the executed notebooks of a run (never re-executed), a landing page and one
page per helper module from its docstrings, built with Sphinx + myst-nb (both from PyPI, offline); and a check of
the built site in a real headless browser (Chromium through its DevTools protocol).

    python -m helpers.book                      # outputs/ (make run) → outputs/book/index.html   (`make book`)
    python -m helpers.book --outputs outputs/smoke --site /tmp/book
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import cache
from .runner import ROOT, notebooks

MODULES = [  # the API pages, in the order of helpers/__init__.py
    "env", "presets", "cache", "report", "uncertainty", "viz",
    "data.formats", "data.slides", "data.annotations", "data.bundled", "data.tissue", "data.tensors",
    "simulate.histology", "simulate.ct", "simulate.datasets",
    "models", "training", "recipes", "features", "explain", "xai_metrics",
    "methods.concepts", "methods.seeded.sic", "methods.seeded.embeddings", "methods.seeded.simclr",
    "methods.dti.diffusion", "methods.dti.explorer", "methods.dti.histology_features",
    "methods.sarcoidosis.dec", "methods.sarcoidosis.clam", "methods.sarcoidosis.registration",
    "methods.sarcoidosis.cohort", "runner", "book",
]

CONF = '''project = "Explaining medical-imaging models"
author = "the xai-medimg-notebooks contributors"
extensions = ["myst_nb", "sphinx.ext.autodoc"]
nb_execution_mode = "off"            # the notebooks were executed by the run; the site only shows them
html_theme = "sphinx_book_theme"
html_title = "Explaining medical-imaging models"
html_theme_options = {"show_navbar_depth": 1, "home_page_in_toc": True}
autodoc_member_order = "bysource"
myst_enable_extensions = ["dollarmath"]
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header", "misc.highlighting_failure", "docutils",
                     "ref.python", "autodoc"]
exclude_patterns = ["_build"]
'''


class BookError(RuntimeError):
    """The site cannot be built or does not hold up in the browser."""


def _landing(runs: dict) -> str:
    rows = []
    for stem, info in runs.items():
        seconds = info["metrics"].get("seconds")
        took = f"{seconds / 60:.1f} min" if isinstance(seconds, (int, float)) else "—"
        claims = [k for k, v in info["metrics"].items() if k.startswith("claim_")]
        holding = sum(bool(info["metrics"][k]) for k in claims)
        rows.append(f"| [{stem}](notebooks/{stem}.ipynb) | {took} | {holding} of {len(claims)} |")
    readme = (ROOT / "README.md").read_text()
    intro = readme.split("\n\n")[1].strip()                 # the README's first paragraph: what the collection is
    papers = next((p for p in readme.split("\n\n") if p.startswith("Papers")), "")
    return "\n".join([
        "# Explaining medical-imaging models — research notebooks", "", intro, "",
        "## The notebooks of this run", "",
        "Run times and claims are read from each notebook's `metrics.json`; a claim *holds* when this run reproduces "
        "the paper's statement (each notebook's last section prints the table).", "",
        "| notebook | run time | claims that hold |", "| --- | --- | --- |", *rows, "",
        "## The papers", "", papers.replace("[CITATION.cff](CITATION.cff)", "`CITATION.cff` in the repository"), "",
        "## The two commands", "",
        "```bash",
        "make run     # execute every notebook → outputs/<notebook>/ (executed notebook, figures, metrics.json)",
        "make test    # unit tests and a smoke run of every notebook, each number compared with its reference",
        "```", "", "`make book` turns the executed notebooks of `make run` into this site, without re-executing them.",
        "", "```{toctree}", ":caption: Notebooks", ":maxdepth: 1", "",
        *[f"notebooks/{stem}" for stem in runs], "```", "",
        "```{toctree}", ":caption: The helpers package", ":maxdepth: 1", "", "api/index", "```", ""])


def _api_pages(source: Path) -> None:
    api = source / "api"
    api.mkdir()
    (api / "index.md").write_text("# The helpers package\n\n" + "One page per module, generated from its docstrings "
                                  "(the layout and what goes where: README, *The helpers package*).\n\n"
                                  "```{toctree}\n:maxdepth: 1\n\n" + "\n".join(MODULES) + "\n```\n")
    for name in MODULES:
        (api / f"{name}.md").write_text(f"# helpers.{name}\n\n```{{eval-rst}}\n.. automodule:: helpers.{name}\n"
                                        "   :members:\n```\n")


def collect_runs(outputs) -> dict:
    """The executed notebooks of a run folder (``outputs/<stem>/<stem>.ipynb`` + metrics.json), in order."""
    outputs = Path(outputs)
    runs = {}
    for nb in notebooks():
        executed = outputs / nb.stem / nb.name
        metrics = outputs / nb.stem / "metrics.json"
        if executed.exists() and metrics.exists():
            runs[nb.stem] = {"notebook": executed, "metrics": json.loads(metrics.read_text())}
    if not runs:
        raise BookError(f"no executed notebook under {outputs}; run `make run` (or the runner with --output {outputs}) "
                        "first: the book shows executed notebooks and never executes them itself.")
    return runs


def build(outputs=ROOT / "outputs", site=None, quiet: bool = True) -> Path:
    """Build the site from the executed notebooks under ``outputs`` into ``site`` (default ``outputs/book``);
    returns the folder that holds ``index.html``. The site folder is replaced only if this function built it."""
    from sphinx.cmd.build import build_main

    runs = collect_runs(outputs)
    site = Path(site) if site is not None else Path(outputs) / "book"
    with tempfile.TemporaryDirectory(prefix="book-source-") as tmp:
        source = Path(tmp)
        (source / "conf.py").write_text(CONF)
        (source / "index.md").write_text(_landing(runs))
        (source / "notebooks").mkdir()
        for stem, info in runs.items():
            shutil.copyfile(info["notebook"], source / "notebooks" / f"{stem}.ipynb")
        _api_pages(source)
        with cache.building(site) as staging:
            code = build_main(["-b", "html", *(["-q"] if quiet else []), str(source), str(staging)])
            if code != 0:
                raise BookError(f"sphinx-build failed (exit {code}); run `python -m helpers.book --verbose` to see why.")
    return site


# ------------------------------------------------------------------------------------ the headless browser
def find_browser() -> str | None:
    """Chromium (Debian's ``chromium``) or Chrome on the PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


class _Page:
    """One browser tab driven through the DevTools protocol (websocket-client)."""

    def __init__(self, ws_url):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)   # DevTools refuses origins
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise BookError(f"{method}: {message['error']}")
                return message.get("result", {})

    def goto(self, url, timeout=60.0):
        self.call("Page.enable")
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:     # wait for the load event (images included)
            message = json.loads(self.ws.recv())
            if message.get("method") == "Page.loadEventFired":
                return
        raise BookError(f"{url} did not finish loading in {timeout:.0f} s")

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")


_PAGE_REPORT = """JSON.stringify({
  title: document.title,
  images: Array.from(document.images).map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0})),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
  tables: document.querySelectorAll('table').length,
  text: document.body.innerText.length})"""


def check_site(site, browser: str, screenshot=None, pages=None) -> dict:
    """Open the landing page and every notebook page of a built site in headless Chromium; per page: did it load,
    does every image load (naturalWidth > 0), do its links into the site point at existing files. Saves a screenshot
    of the landing page to ``screenshot`` when given. Returns {page: report}; problems are listed in each report."""
    import urllib.request

    site = Path(site).resolve()
    pages = pages or ["index.html", *sorted(str(p.relative_to(site)) for p in (site / "notebooks").glob("*.html"))]
    profile = tempfile.mkdtemp(prefix="chromium-")
    # its own process group: Chromium's helper processes (renderer, crashpad) go down with it, and only then is the
    # profile removed (a renderer still writing into it made the removal fail on a busy machine)
    proc = subprocess.Popen([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1280,1600",
                             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if "DevTools listening on ws://" in line:
                port = int(line.split("ws://")[1].split("/")[0].split(":")[1])
            elif not line and proc.poll() is not None:
                raise BookError(f"{browser} exited with code {proc.returncode} before it listened")
        if port is None:
            raise BookError(f"{browser} did not open its DevTools port within 60 s")
        request = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT")
        target = json.loads(urllib.request.urlopen(request, timeout=30).read())
        page = _Page(target["webSocketDebuggerUrl"])
        reports = {}
        for rel in pages:
            page.goto((site / rel).as_uri())
            report = json.loads(page.evaluate(_PAGE_REPORT))
            broken_images = [i["src"] for i in report["images"] if not i["ok"]]
            broken_links = []
            for href in report["links"]:
                if href.startswith("file://"):
                    path = Path(urllib.request.url2pathname(href[len("file://"):].split("#")[0].split("?")[0]))
                    if not path.exists():
                        broken_links.append(href)
            report.update(broken_images=broken_images, broken_links=broken_links, n_images=len(report["images"]))
            del report["images"]
            reports[rel] = report
            if rel == "index.html" and screenshot is not None:
                shot = page.call("Page.captureScreenshot", format="png")
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
        page.ws.close()
        return reports
    finally:
        _stop_group(proc)
        for attempt in range(10):
            try:
                shutil.rmtree(profile)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.5)
        else:
            shutil.rmtree(profile, ignore_errors=True)


def _stop_group(proc) -> None:
    """Terminate a process started with start_new_session=True and everything it spawned; kill what lingers."""
    import signal

    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        time.sleep(0.5)             # the group's other members exit after the leader


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outputs", default=str(ROOT / "outputs"), help="the run folder (default: outputs/)")
    parser.add_argument("--site", default=None, help="where the site goes (default: <outputs>/book)")
    parser.add_argument("--verbose", action="store_true", help="show Sphinx's output")
    args = parser.parse_args(argv)
    site = build(args.outputs, args.site, quiet=not args.verbose)
    print(f"book → {site / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
