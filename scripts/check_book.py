#!/usr/bin/env python3
"""Truth checks for the c10k-chat book (called by scripts/check-book.sh).

mdBook is forgiving in ways a book about real code cannot afford:
  * `{{#include file.rs:anchor}}` with a missing anchor renders as *nothing*;
  * an include of a missing file logs an error and still exits 0;
  * a link or image to a missing page or file is built without a word.
So this script fails on each of those, on includes by line number (they break
on the next edit), and on any chapter still holding the CHAPTER-NOT-WRITTEN
marker, so that nothing unfinished lands silently. It also fails when the
benchmark results the book quotes are older than the code they measured
(`stale`), and, in a real browser, on a table wider than the text column.

Commands (standard library only, Python 3.9+):
  check_book.py sources BOOK_DIR       includes, anchors and markers in BOOK_DIR/src
  check_book.py html BUILD_DIR         links and images in the built HTML
  check_book.py stale REPO             fail when a stage crate, or a crate the
                                       stages are built from, changed after the
                                       git revision of the results the book quotes
                                       (its tests/, benches/ and examples/ aside:
                                       they are not in the measured binary)
  check_book.py browser BUILD_DIR [PAGE...] [--screenshots DIR]
                                       open every chapter (or PAGE, e.g. comparison)
                                       in headless Chromium, save a screenshot of
                                       the whole page in DIR, and fail unless every
                                       <img> loaded and no table is wider than the
                                       content column
  check_book.py self-test              prove the checks fail on broken input

Each command prints what it checked and exits 1 when it found a problem.
"""

from __future__ import annotations

import base64
import fcntl
import html.parser
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

MARKER = "CHAPTER-NOT-WRITTEN"

# mdBook's own pattern for {{#...}} links (mdbook-driver, links preprocessor):
# an escaped `\{{#...}}` is literal text, anything else is a directive.
LINK_RE = re.compile(
    r"""\\\{\{\#.*?\}\}                  # escaped: left alone by mdBook
      | \{\{\s*\#([a-zA-Z0-9_]+)\s+      # {{#include / {{#rustdoc_include ...
        ([^}]+)\}\}                      # path[:anchor-or-lines] and options
    """,
    re.VERBOSE,
)
# mdBook's anchor markers: `ANCHOR: name` / `ANCHOR_END: name` anywhere on a line.
ANCHOR_START_RE = re.compile(r"ANCHOR:\s*([\w_-]+)")
ANCHOR_END_RE = re.compile(r"ANCHOR_END:\s*([\w_-]+)")
INCLUDE_KINDS = {"include", "rustdoc_include"}
# Nested includes: mdBook follows includes inside included files this deep.
MAX_DEPTH = 10


def anchor_body(text: str, name: str) -> list[str] | None:
    """Returns the lines between `ANCHOR: name` and `ANCHOR_END: name`
    (without marker lines), or None when the pair is not there."""
    inside = False
    body: list[str] = []
    for line in text.splitlines():
        if inside:
            end = ANCHOR_END_RE.search(line)
            if end and end.group(1) == name:
                return body
            if not ANCHOR_START_RE.search(line) and not end:
                body.append(line)
        else:
            start = ANCHOR_START_RE.search(line)
            if start and start.group(1) == name and not ANCHOR_END_RE.search(line):
                inside = True
    return None


def check_includes_in(md: Path, text: str, depth: int, problems: list[str]) -> int:
    """Checks every include directive of one Markdown text; returns how many."""
    count = 0
    for m in LINK_RE.finditer(text):
        kind, target = m.group(1), m.group(2)
        if kind is None or kind not in INCLUDE_KINDS:
            continue  # escaped, or {{#title}} / {{#playground}}
        count += 1
        where = f"{md}: {{{{#{kind} {target.strip()}}}}}"
        spec = target.split()[0]
        path_part, _, selector = spec.partition(":")
        path = (md.parent / path_part).resolve()
        if not path.is_file():
            problems.append(f"{where}: file not found ({path})")
            continue
        included = path.read_text(encoding="utf-8", errors="replace")
        if selector:
            # Line numbers ("10", "2:8", ":5", "3:") break on the next edit.
            if re.fullmatch(r"\d*(:\d*)?", selector):
                problems.append(f"{where}: includes by line number; use an anchor")
                continue
            body = anchor_body(included, selector)
            if body is None:
                problems.append(
                    f"{where}: anchor '{selector}' not found "
                    f"(need '// ANCHOR: {selector}' and '// ANCHOR_END: {selector}')"
                )
                continue
            if not any(line.strip() for line in body):
                problems.append(f"{where}: anchor '{selector}' is empty")
                continue
        elif not included.strip():
            problems.append(f"{where}: the included file is empty")
        if path.suffix == ".md" and depth < MAX_DEPTH:
            count += check_includes_in(path, included, depth + 1, problems)
    return count


def check_sources(book: Path) -> list[str]:
    """Checks includes, anchors and unwritten-chapter markers under book/src."""
    src = book / "src"
    problems: list[str] = []
    if not src.is_dir():
        return [f"{src}: not a directory"]
    chapters = sorted(src.rglob("*.md"))
    includes = 0
    for md in chapters:
        text = md.read_text(encoding="utf-8")
        includes += check_includes_in(md, text, 0, problems)
        if MARKER in text:
            problems.append(f"{md}: chapter not written yet ({MARKER})")
    print(f"sources: {len(chapters)} Markdown files, {includes} includes checked")
    return problems


class _Refs(html.parser.HTMLParser):
    """Collects the ids and the local references of one HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        # Every id= and <a name=> on the page: the targets of #fragments.
        self.ids: set[str] = set()
        # (tag, attribute value) for every href/src that may point at a file.
        self.refs: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v for k, v in attrs if v is not None}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "name" in a:
            self.ids.add(a["name"])
        if tag in ("a", "link") and "href" in a:
            self.refs.append((tag, a["href"]))
        if tag in ("img", "script", "source", "iframe") and "src" in a:
            self.refs.append((tag, a["src"]))
        if tag == "object" and "data" in a:
            self.refs.append((tag, a["data"]))


def check_html(build: Path) -> list[str]:
    """Checks that every local link, image and asset of the built book exists,
    and that every #fragment names an id on its target page."""
    problems: list[str] = []
    if not build.is_dir():
        return [f"{build}: not a directory (build the book first)"]
    pages: dict[Path, _Refs] = {}
    for page in sorted(build.rglob("*.html")):
        parser = _Refs()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        pages[page.resolve()] = parser
    checked = 0
    for page, parser in pages.items():
        # 404.html is served from the site root (<base href="/">), not from its folder.
        if page.name == "404.html":
            continue
        for tag, ref in parser.refs:
            url = urllib.parse.urlsplit(ref)
            if url.scheme or ref.startswith("//"):
                continue  # external: not ours to check offline
            checked += 1
            where = f"{page.relative_to(build.resolve())}: <{tag}> {ref}"
            target = page
            if url.path:
                target = (page.parent / urllib.parse.unquote(url.path)).resolve()
                if target.is_dir():
                    target = target / "index.html"
                try:
                    target.relative_to(build.resolve())
                except ValueError:
                    problems.append(f"{where}: points outside the built book")
                    continue
                if not target.is_file():
                    problems.append(f"{where}: no such file")
                    continue
            if url.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else set()
                if urllib.parse.unquote(url.fragment) not in ids:
                    problems.append(f"{where}: no id '{url.fragment}' on that page")
    print(f"html: {len(pages)} pages, {checked} local links/images/assets checked")
    # mdBook 0.5 renders every image twice (inline and zoomed): report once.
    return list(dict.fromkeys(problems))


# ------------------------------------------------------------------ stale --

# The results the book quotes: book-results.sh writes one source.md per run.
SOURCE_GLOB = "book/src/generated/**/source.md"
SOURCE_ROW_RE = re.compile(r"^\|\s*(results|git revision|stages)\s*\|\s*`([^`]+)`\s*\|", re.M)
# crates/NN-name: the stages (00 is the count() example, not a stage).
STAGE_DIR_RE = re.compile(r"^crates/(\d\d)-[^/]+$")
# The parts of a crate that its release binary does not contain.
UNMEASURED_PART_RE = re.compile(r"^crates/[^/]+/(tests|benches|examples)/")


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)


def _package(manifest: Path) -> tuple[str | None, list[str]]:
    """A crate's package name and its `chat-*` dependencies (normal ones only)."""
    text = manifest.read_text(encoding="utf-8")
    name = re.search(r'^\[package\][^\[]*?^name\s*=\s*"([^"]+)"', text, re.M | re.S)
    deps = re.search(r"^\[dependencies\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
    chat = re.findall(r"^(chat-[\w-]+)\s*[.=]", deps.group(1), re.M) if deps else []
    return (name.group(1) if name else None), chat


def measured_crates(repo: Path, binaries: set[str] | None = None) -> dict[str, str]:
    """Every crate whose code a benchmark result measures: the stages
    (crates/NN-*, NN > 00) and the `chat-*` crates they are built from
    (chat-core, chat-net, ...). With `binaries`, only the stages whose package
    (= binary) is one of them, and what those are built from. Maps its folder
    to a description."""
    crates = {}
    by_name = {}
    for manifest in sorted((repo / "crates").glob("*/Cargo.toml")):
        name, deps = _package(manifest)
        folder = manifest.parent.relative_to(repo).as_posix()
        if name:
            by_name[name] = folder
        m = STAGE_DIR_RE.match(folder)
        if m and m.group(1) != "00" and (binaries is None or name in binaries):
            crates[folder] = (f"the stage {name}", deps)
    measured = {folder: what for folder, (what, _) in crates.items()}
    for folder, (what, deps) in crates.items():
        for dep in deps:
            if dep in by_name and by_name[dep] not in measured:
                measured[by_name[dep]] = f"{dep}, which the stages are built from"
    if "crates/chat-core" not in measured and (repo / "crates/chat-core").is_dir():
        measured["crates/chat-core"] = "chat-core, the protocol every stage runs"
    return measured


def run_binaries(repo: Path, results: str, rows: dict[str, str]) -> set[str] | None:
    """The stage binaries a quoted run measured: its source.md's `stages` row
    (binaries, comma-separated), or the commands in its run.json; None when
    neither says (then every stage counts)."""
    if "stages" in rows:
        return {b.strip() for b in rows["stages"].split(",") if b.strip()}
    index = repo / results / "run.json"
    if index.is_file():
        try:
            stages = json.loads(index.read_text(encoding="utf-8")).get("stages", [])
        except ValueError:
            return None
        found = {st["command"].split()[0].rsplit("/", 1)[-1] for st in stages
                 if st.get("command") and not st.get("peer") and not st.get("baseline")}
        return found or None
    return None


def rerun_command(results: str) -> str:
    if results.startswith("results/c10k"):
        return ("scripts/compare.sh --full --no-peer --scenarios idle --out results/c10k, "
                "then scripts/book-results.sh")
    if results.startswith("results/cluster"):
        return "scripts/cluster.sh (it rewrites book/src/generated/cluster/)"
    if results.startswith("results/unpinned"):
        return ("scripts/compare.sh --no-peer --no-baseline --stages threads,epoll,tokio-ct,tokio-mt "
                "--scenarios chat,flood --cpu none --server-cpu none --out results/unpinned, "
                "then scripts/book-results.sh")
    return "scripts/compare.sh, then scripts/book-results.sh results/<the new run>"


def check_stale(repo: Path) -> list[str]:
    """Fails when code a quoted result measured changed after its revision."""
    problems: list[str] = []
    sources = sorted(repo.glob(SOURCE_GLOB))
    if not sources:
        return [f"{repo}: no {SOURCE_GLOB}: the book quotes no results (run scripts/book-results.sh)"]
    measured = measured_crates(repo)
    checked = 0
    for source in sources:
        rows = dict(SOURCE_ROW_RE.findall(source.read_text(encoding="utf-8")))
        results, rev = rows.get("results", "?"), rows.get("git revision")
        where = source.relative_to(repo).as_posix()
        if not rev or rev == "unknown":
            problems.append(f"{where}: no git revision recorded for {results}: rerun "
                            f"{rerun_command(results)}")
            continue
        rev = rev.removesuffix("-dirty")
        if _git(repo, "cat-file", "-e", f"{rev}^{{commit}}").returncode != 0:
            problems.append(f"{where}: revision {rev} of {results} is not in this "
                            f"repository's history: rerun {rerun_command(results)}")
            continue
        binaries = run_binaries(repo, results, rows)
        crates = measured_crates(repo, binaries) if binaries else measured
        changed = _git(repo, "diff", "--name-only", rev, "HEAD", "--", *crates).stdout.split()
        # A crate's tests, benches and examples are not in the binary a run measured.
        changed = [f for f in changed if not UNMEASURED_PART_RE.match(f)]
        checked += 1
        stale = [folder for folder in sorted(crates)
                 if any(f.startswith(folder + "/") for f in changed)]
        if stale:
            names = ", ".join(f"{folder} ({crates[folder]})" for folder in stale)
            problems.append(
                f"{results}, quoted by {where}, is stale: measured at {rev}, and since then "
                f"{names} changed; rerun {rerun_command(results)}")
    print(f"stale: {len(sources)} quoted runs, {checked} compared with HEAD "
          f"over {len(measured)} measured crates")
    return problems


# ---------------------------------------------------------------- browser --

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
]

# Waits (in the page) for every image to finish, then reports each one.
IMAGES_JS = """
(async () => {
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => {
    i.addEventListener('load', r); i.addEventListener('error', r);
  })));
  return imgs.map(i => ({src: i.currentSrc || i.src,
                         width: i.naturalWidth, height: i.naturalHeight}));
})()
"""


class Cdp:
    """A minimal Chrome DevTools Protocol client over --remote-debugging-pipe:
    Chromium reads NUL-terminated JSON commands on fd 3 and writes replies and
    events on fd 4. No npm, no websocket library, no TCP port."""

    def __init__(self, chromium: str, profile: str, timeout: float) -> None:
        # Keep our pipe ends well above 4 so the dup2 in the child cannot
        # clobber them.
        to_child_r, to_child_w = (self._high(fd) for fd in os.pipe())
        from_child_r, from_child_w = (self._high(fd) for fd in os.pipe())

        def wire_fds() -> None:  # runs in the child, before exec
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self.proc = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=wire_fds,
            pass_fds=(3, 4),
        )
        os.close(to_child_r)
        os.close(from_child_w)
        # Chromium's own stderr is chatty; drain it in the background into a
        # file so that a full pipe can never stall the browser.
        self.stderr_log = tempfile.TemporaryFile()
        self._drain = subprocess.Popen(
            ["cat"], stdin=self.proc.stderr, stdout=self.stderr_log
        )
        self.out = to_child_w
        self.inp = from_child_r
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []
        self.deadline = time.monotonic() + timeout

    @staticmethod
    def _high(fd: int) -> int:
        high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(fd)
        return high

    def _read_message(self) -> dict:
        while b"\0" not in self.buf:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self.inp], [], [], left)
            if ready:
                chunk = os.read(self.inp, 1 << 20)
                if not chunk:
                    raise ConnectionError("Chromium closed the pipe (did it crash?)")
                self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, session: str | None = None, **params) -> dict:
        """Sends one command and returns its result, keeping events for later."""
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self.out, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read_message()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, session: str | None = None) -> dict:
        """Returns the first event named `method` (of `session`, when given),
        already seen or next."""
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method and (
                        session is None or event.get("sessionId") == session):
                    return self.events.pop(i)
            self.events.append(self._read_message())

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (OSError, RuntimeError, TimeoutError, ConnectionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._drain.wait(timeout=10)
        os.close(self.out)
        os.close(self.inp)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


# Every table in the content column that is wider than the column (mdBook
# wraps tables in a scrolling div, so a wide table does not break the page:
# it hides columns behind a scroll bar, which a reader never finds).
TABLES_JS = """
(() => {
  const main = document.querySelector('main');
  if (!main) return {column: 0, tables: []};
  const style = getComputedStyle(main);
  const column = main.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const tables = Array.from(main.querySelectorAll('table')).map((t, i) => {
    const head = t.querySelector('tr');
    return {index: i, width: t.getBoundingClientRect().width,
            header: head ? head.innerText.replace(/\\s+/g, ' ').slice(0, 80) : ''};
  });
  return {column, tables};
})()
"""

# Chromium renders a page taller than this in several captures: one capture
# of a very tall page can come back blank below the GPU's texture limit.
MAX_CAPTURE = 8000
VIEWPORT = (1280, 900)


def chapters(build: Path) -> list[str]:
    """The chapters of the built book, in reading order (from its print
    page's neighbours: every .html except the generated index pages)."""
    skip = {"print.html", "404.html", "toc.html", "index.html"}
    pages = [p.relative_to(build).with_suffix("").as_posix()
             for p in sorted(build.rglob("*.html"))
             if p.name not in skip and "/generated/" not in p.as_posix()]
    return pages


def _eval(cdp: "Cdp", session: str, expression: str, wait: bool = False):
    result = cdp.call("Runtime.evaluate", session, expression=expression,
                      awaitPromise=wait, returnByValue=True)
    return result.get("result", {}).get("value")


def _screenshot(cdp: "Cdp", session: str, path: Path) -> str:
    """Captures the whole page into `path` (`path` plus -2, -3... for the
    parts of a page taller than MAX_CAPTURE); returns what was written."""
    size = cdp.call("Page.getLayoutMetrics", session)["cssContentSize"]
    height = int(size["height"]) + 1
    width = VIEWPORT[0]
    parts = []
    top, n = 0, 1
    while top < height:
        h = min(MAX_CAPTURE, height - top)
        shot = cdp.call("Page.captureScreenshot", session, format="png",
                        captureBeyondViewport=True,
                        clip={"x": 0, "y": top, "width": width, "height": h, "scale": 1})
        out = path if n == 1 else path.with_name(f"{path.stem}-{n}{path.suffix}")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(shot["data"]))
        parts.append(out.name)
        top += h
        n += 1
    return f"{width}x{height} in {len(parts)} part(s): {', '.join(parts)}"


def check_page(cdp: "Cdp", build: Path, page: str, shots: Path | None) -> tuple[list[str], int]:
    """One page: images loaded, tables fit, screenshot. Returns the problems
    and the number of images."""
    html_file = (build / page).with_suffix(".html").resolve()
    if not html_file.is_file():
        return [f"{html_file}: no such page in the built book"], 0
    problems: list[str] = []
    target = cdp.call("Target.createTarget", url="about:blank")["targetId"]
    session = cdp.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    try:
        cdp.call("Page.enable", session)
        cdp.call("Network.enable", session)
        cdp.call("Emulation.setDeviceMetricsOverride", session, width=VIEWPORT[0],
                 height=VIEWPORT[1], deviceScaleFactor=1, mobile=False)
        cdp.events.clear()
        nav = cdp.call("Page.navigate", session, url=html_file.as_uri())
        if nav.get("errorText"):
            return [f"{page}: {nav['errorText']}"], 0
        cdp.wait_event("Page.loadEventFired", session)
        images = _eval(cdp, session, IMAGES_JS, wait=True) or []
        for event in cdp.events:
            if event.get("method") == "Network.loadingFailed" and event.get("sessionId") == session:
                p = event.get("params", {})
                problems.append(f"{page}: a request failed: {p.get('errorText')} ({p.get('type')})")
        reported = set()
        for img in images:
            ok = img["width"] > 0
            # mdBook 0.5 renders each image twice (inline and zoomed): report each once.
            if (img["src"], ok) in reported:
                continue
            reported.add((img["src"], ok))
            if not ok:
                problems.append(f"{page}: image did not load: {img['src']}")
        layout = _eval(cdp, session, TABLES_JS) or {"column": 0, "tables": []}
        column = layout["column"]
        for t in layout["tables"]:
            if t["width"] > column + 0.5:
                problems.append(
                    f"{page}: table {t['index'] + 1} is {t['width']:.0f} px wide, the "
                    f"content column {column:.0f} px: {t['header']!r}")
        shot = ""
        if shots is not None:
            name = page.replace("/", "-") + ".png"
            shot = "; screenshot " + _screenshot(cdp, session, shots / name)
        print(f"browser: {page}: {len(reported)} images, {len(layout['tables'])} tables "
              f"(column {column:.0f} px){shot}")
        return problems, len(images)
    finally:
        cdp.call("Target.closeTarget", targetId=target)


def check_browser(build: Path, pages: list[str], shots: Path | None) -> list[str]:
    """Opens every chapter (or `pages`) in headless Chromium at 1280 px:
    every <img> must load, no table may be wider than the content column,
    and with `shots` each whole page is saved as a screenshot there."""
    chromium = find_chromium()
    if chromium is None:
        return ["chromium not found (scripts/check-book.sh --browser installs it)"]
    pages = pages or chapters(build)
    if not pages:
        return [f"{build}: no chapters found (build the book first)"]
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="check-book-chromium-") as profile:
        cdp = Cdp(chromium, profile, timeout=60 + 10 * len(pages))
        try:
            for page in pages:
                found, _ = check_page(cdp, build, page, shots)
                problems += found
        except (TimeoutError, ConnectionError, RuntimeError) as e:
            cdp.stderr_log.seek(0)
            tail = cdp.stderr_log.read().decode(errors="replace")[-2000:]
            problems.append(f"browser check failed: {e}\n{tail}")
        finally:
            cdp.close()
    print(f"browser: {len(pages)} pages checked")
    return problems


# -------------------------------------------------------------- self-test --


def self_test() -> list[str]:
    """Builds small broken books in a temporary folder and checks that each
    check catches its case (and passes the clean case)."""
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="check-book-selftest-") as tmp:
        root = Path(tmp)
        code = root / "crates" / "x" / "src" / "lib.rs"
        code.parent.mkdir(parents=True)
        code.write_text(
            "// ANCHOR: good\nfn good() {}\n// ANCHOR_END: good\n"
            "// ANCHOR: empty\n// ANCHOR_END: empty\n"
        )
        src = root / "book" / "src"
        src.mkdir(parents=True)

        def sources_with(chapter: str) -> list[str]:
            (src / "chapter.md").write_text(chapter)
            return check_sources(root / "book")

        cases = {
            "clean": ("{{#include ../../crates/x/src/lib.rs:good}}\n", False),
            "escaped": ("\\{{#include ../../crates/x/src/lib.rs:nope}}\n", False),
            "missing anchor": ("{{#include ../../crates/x/src/lib.rs:nope}}\n", True),
            "empty anchor": ("{{#include ../../crates/x/src/lib.rs:empty}}\n", True),
            "missing file": ("{{#rustdoc_include ../../crates/x/src/gone.rs}}\n", True),
            "line numbers": ("{{#include ../../crates/x/src/lib.rs:1:2}}\n", True),
            "marker": (f"# T\n\n<!-- {MARKER} -->\n", True),
        }
        for name, (chapter, should_fail) in cases.items():
            failed = bool(sources_with(chapter))
            status = "ok" if failed == should_fail else "WRONG"
            print(f"self-test: sources, {name}: {'fails' if failed else 'passes'} ({status})")
            if failed != should_fail:
                problems.append(f"self-test: sources, {name}: expected "
                                f"{'failure' if should_fail else 'success'}")

        build = root / "build"
        (build / "images").mkdir(parents=True)
        (build / "images" / "a.svg").write_text("<svg/>")
        (build / "other.html").write_text('<h1 id="there">x</h1>')

        def html_with(body: str) -> list[str]:
            (build / "index.html").write_text(f"<html><body>{body}</body></html>")
            return check_html(build)

        html_cases = {
            "clean": ('<a href="other.html#there">x</a><img src="images/a.svg">'
                      '<a href="https://example.com/">e</a>', False),
            "broken link": ('<a href="nothere.html">x</a>', True),
            "broken fragment": ('<a href="other.html#nowhere">x</a>', True),
            "missing image": ('<img src="images/b.png">', True),
            "outside the book": ('<a href="../crates/x/src/lib.rs">x</a>', True),
        }
        for name, (body, should_fail) in html_cases.items():
            failed = bool(html_with(body))
            status = "ok" if failed == should_fail else "WRONG"
            print(f"self-test: html, {name}: {'fails' if failed else 'passes'} ({status})")
            if failed != should_fail:
                problems.append(f"self-test: html, {name}: expected "
                                f"{'failure' if should_fail else 'success'}")
        problems += self_test_stale(root / "stale")
        problems += self_test_browser(root / "browser")
    return problems


def _expect(problems: list[str], what: str, failed: bool, should_fail: bool) -> None:
    status = "ok" if failed == should_fail else "WRONG"
    print(f"self-test: {what}: {'fails' if failed else 'passes'} ({status})")
    if failed != should_fail:
        problems.append(f"self-test: {what}: expected {'failure' if should_fail else 'success'}")


def self_test_stale(repo: Path) -> list[str]:
    """A small git repository: results measured at one commit, then a change
    to the count example (not measured), then one to a stage and one to
    chat-core (both measured)."""
    problems: list[str] = []
    if shutil.which("git") is None:
        print("self-test: stale: skipped (no git)")
        return problems
    def write(path: str, text: str) -> None:
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    def commit(message: str) -> str:
        _git(repo, "add", "-A")
        _git(repo, "-c", "user.name=self-test", "-c", "user.email=self-test@invalid",
             "commit", "-q", "-m", message)
        return _git(repo, "rev-parse", "--short=12", "HEAD").stdout.strip()
    repo.mkdir(parents=True)
    _git(repo, "init", "-q")
    write("crates/chat-core/Cargo.toml", '[package]\nname = "chat-core"\n')
    write("crates/chat-net/Cargo.toml", '[package]\nname = "chat-net"\n')
    write("crates/05-epoll/Cargo.toml",
          '[package]\nname = "chat-epoll"\n\n[dependencies]\nchat-core.workspace = true\n'
          'chat-net = { path = "../chat-net" }\n')
    write("crates/00-count/Cargo.toml", '[package]\nname = "chat-count"\n')
    for c in ("chat-core", "chat-net", "05-epoll", "00-count"):
        write(f"crates/{c}/src/lib.rs", "// v1\n")
    rev = commit("v1")
    write("book/src/generated/comparison/source.md",
          f"| | |\n|---|---|\n| results | `results/run` |\n| git revision | `{rev}` |\n")
    commit("results")
    _expect(problems, "stale, fresh results", bool(check_stale(repo)), False)
    write("crates/00-count/src/lib.rs", "// v2\n")
    commit("count")
    _expect(problems, "stale, an unmeasured crate changed", bool(check_stale(repo)), False)
    write("crates/05-epoll/tests/conformance.rs", "// v2\n")
    commit("a stage's test")
    _expect(problems, "stale, only a stage's tests changed", bool(check_stale(repo)), False)
    write("crates/chat-net/src/lib.rs", "// v2\n")
    commit("net")
    found = check_stale(repo)
    _expect(problems, "stale, a crate the stage is built from changed",
            bool(found) and "crates/chat-net" in found[0], True)
    write("crates/05-epoll/src/lib.rs", "// v2\n")
    commit("epoll")
    found = check_stale(repo)
    _expect(problems, "stale, a stage changed (named, with the command to rerun)",
            bool(found) and "crates/05-epoll" in found[0] and "scripts/compare.sh" in found[0],
            True)
    write("book/src/generated/comparison/source.md",
          "| | |\n|---|---|\n| results | `results/run` |\n| git revision | `0123456789ab` |\n")
    commit("unknown revision")
    _expect(problems, "stale, a revision not in the history", bool(check_stale(repo)), True)
    # A run that says which stages it measured is stale only for those (and what they are built
    # from): the cluster stage changing does not make a run of chat-epoll stale.
    write("crates/12-cluster/Cargo.toml",
          '[package]\nname = "chat-cluster"\n\n[dependencies]\nchat-core.workspace = true\n')
    write("crates/12-cluster/src/lib.rs", "// v1\n")
    rev = commit("cluster")
    write("book/src/generated/comparison/source.md",
          f"| | |\n|---|---|\n| results | `results/run` |\n| git revision | `{rev}` |\n"
          "| stages | `chat-epoll` |\n")
    commit("results of chat-epoll only")
    write("crates/12-cluster/src/lib.rs", "// v2\n")
    commit("cluster changed")
    _expect(problems, "stale, a stage the run did not measure changed", bool(check_stale(repo)), False)
    write("crates/chat-core/src/lib.rs", "// v3\n")
    commit("core changed")
    found = check_stale(repo)
    _expect(problems, "stale, a crate the run's stage is built from changed",
            bool(found) and "crates/chat-core" in found[0] and "12-cluster" not in found[0], True)
    return problems


def self_test_browser(build: Path) -> list[str]:
    """A page with the book's column: a narrow table passes, a wide one fails."""
    problems: list[str] = []
    if find_chromium() is None:
        print("self-test: browser: skipped (no chromium; --browser installs it)")
        return problems
    build.mkdir(parents=True)
    cells = "".join(f"<td>column{i}-with-a-long-name</td>" for i in range(14))
    page = ("<html><body><main style='max-width: 750px; margin: auto'>"
            "<table><tr><td>narrow</td></tr></table>{}</main></body></html>")
    (build / "narrow.html").write_text(page.format(""))
    (build / "wide.html").write_text(page.format(f"<table><tr>{cells}</tr></table>"))
    _expect(problems, "browser, narrow tables", bool(check_browser(build, ["narrow"], None)), False)
    _expect(problems, "browser, a table wider than the column",
            any("px wide" in p for p in check_browser(build, ["wide"], None)), True)
    return problems


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "sources":
        problems = check_sources(Path(argv[1]))
    elif len(argv) >= 2 and argv[0] == "html":
        problems = check_html(Path(argv[1]))
    elif len(argv) >= 2 and argv[0] == "stale":
        problems = check_stale(Path(argv[1]))
    elif len(argv) >= 2 and argv[0] == "browser":
        rest = argv[2:]
        shots = None
        if "--screenshots" in rest:
            at = rest.index("--screenshots")
            if at + 1 >= len(rest):
                print(__doc__, file=sys.stderr)
                return 2
            shots = Path(rest[at + 1])
            rest = rest[:at] + rest[at + 2:]
        problems = check_browser(Path(argv[1]), rest, shots)
    elif argv[:1] == ["self-test"]:
        problems = self_test()
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
