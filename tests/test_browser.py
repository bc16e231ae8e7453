"""The evaluation report plays in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``)
driven by Selenium opens ``report.html`` from a local HTTP server, and every ``<video>`` loads and decodes.

Skips, with the reason, when Chromium, its driver or Selenium is missing (``bash install.sh`` as root installs
them on Debian). Selenium gets an explicit driver path, so Selenium Manager never runs and nothing is downloaded.
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_evaluate import load_metrics, make_tiny_run

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER_NAMES = ("chromedriver",)
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions", "--no-first-run", "--mute-audio",
    "--autoplay-policy=no-user-gesture-required", "--window-size=1280,1600",
)  # fmt: skip
TIMEOUT_S = 30.0


def _which(names: tuple[str, ...]) -> str | None:
    for name in names:
        path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file() else None)
        if path:
            return path
    return None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """The folder over HTTP with byte ranges (``Range: bytes=a-b``, 206): Chromium seeks in a video only where the
    server serves ranges, as any web server does; the standard library's handler does not."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass

    def end_headers(self) -> None:
        self.send_header("Accept-Ranges", "bytes")
        super().end_headers()

    def do_GET(self) -> None:  # noqa: N802 (the base class's name)
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        path = Path(self.translate_path(self.path))
        if match is None or not path.is_file() or match.group(0) == "bytes=-":
            super().do_GET()
            return
        data = path.read_bytes()
        first, last = match.groups()
        start = int(first) if first else max(0, len(data) - int(last))
        end = min(int(last), len(data) - 1) if first and last else len(data) - 1
        if start >= len(data) or start > end:
            self.send_error(416)
            return
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self.wfile.write(data[start : end + 1])


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A headless Chromium WebDriver, or a skip saying what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    chromium, driver_path = _which(CHROMIUM_NAMES), _which(CHROMEDRIVER_NAMES)
    if chromium is None or driver_path is None:
        pytest.skip(
            "Chromium and its WebDriver are needed for the browser test "
            f"(found chromium={chromium}, chromedriver={driver_path}); on Debian: apt-get install chromium chromium-driver"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=driver_path)  # explicit: Selenium Manager is not run
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(TIMEOUT_S)
    driver.set_script_timeout(TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An evaluation of a tiny PPO run (so the page has a learning curve) with two replay videos."""
    from mmrl.evaluate import main

    run = make_tiny_run(tmp_path_factory.mktemp("runs") / "tiny")
    out = run / "eval"
    assert main([f"run={run}", "episodes=8", "video.episodes=2", f"out={out}"]) == 0
    return out


@pytest.fixture(scope="module")
def server_url(report_dir: Path) -> Iterator[str]:
    """``http://127.0.0.1:<port>/`` serving the evaluation folder, stopped at the end."""
    handler = functools.partial(_QuietHandler, directory=str(report_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


VIDEO_STATE_JS = """
return Array.from(document.querySelectorAll('video')).map(v => ({
  src: v.getAttribute('src'), readyState: v.readyState, duration: v.duration,
  error: v.error ? v.error.code + ' ' + v.error.message : null, width: v.videoWidth, height: v.videoHeight}));
"""


def test_report_videos_play_in_chromium(browser: object, server_url: str, report_dir: Path) -> None:
    driver = browser
    driver.get(server_url + "report.html")  # type: ignore[attr-defined]
    expected = load_metrics(report_dir)["videos"]
    assert expected, "the evaluation should have written videos"
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        states = driver.execute_script(VIDEO_STATE_JS)  # type: ignore[attr-defined]
        errors = [s for s in states if s["error"]]
        assert not errors, f"video errors in Chromium: {errors}"
        ready = len(states) == len(expected) and all(s["readyState"] >= 2 and (s["duration"] or 0) > 0 for s in states)
        if ready:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"videos not ready after {TIMEOUT_S:.0f} s: {states}")
        time.sleep(0.25)
    for state, video in zip(states, expected, strict=True):
        assert state["src"] == video["file"]
        assert (state["width"], state["height"]) == (video["width"], video["height"])
        assert state["duration"] == pytest.approx(video["frames"] / video["fps"], rel=0.2)

    # the learning curve image loaded too (no broken images, nothing from outside the folder)
    images = driver.execute_script(  # type: ignore[attr-defined]
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);"
    )
    assert images and all(complete and width > 0 for _, complete, width in images), images
    resources = driver.execute_script(  # type: ignore[attr-defined]
        "return performance.getEntriesByType('resource').map(r => r.name);"
    )
    assert all(name.startswith(server_url) for name in resources), resources


LAYOUT_JS = """
function box(e) { var r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; }
return Array.from(document.querySelectorAll('.replay')).map(r => ({
  controls: r.querySelector('video').controls, video: box(r.querySelector('video')), figure: box(r.querySelector('figure')),
  player: box(r.querySelector('.player')), playerShown: r.querySelector('.player').offsetHeight > 0,
  steps: box(r.querySelector('.steps'))}));
"""


def test_replay_controls_never_cover_the_picture_and_tables_sit_beside(browser: object, server_url: str, report_dir: Path) -> None:
    """Chromium draws a video's own controls over the bottom of the picture while it is paused; the report swaps
    them for a bar under the video, so the bar's box and the video's box do not overlap. At this window's width
    (1280 px) each step table sits to the right of its video. Clicking a row of the table shows its frame."""
    driver = browser
    driver.get(server_url + "report.html")  # type: ignore[attr-defined]
    layout = driver.execute_script(LAYOUT_JS)  # type: ignore[attr-defined]
    assert layout and len(layout) == len(load_metrics(report_dir)["videos"])
    for replay in layout:
        video, player, figure, steps = replay["video"], replay["player"], replay["figure"], replay["steps"]
        assert replay["controls"] is False and replay["playerShown"], replay
        assert video[3] - video[1] > 50 and player[1] >= video[3], f"the bar must lie below the picture: {replay}"
        assert steps[0] >= figure[2] and steps[1] < video[3], f"the step table must sit beside the video: {replay}"

    # a click on the row of step 1 shows frame 1 (the server serves byte ranges, so the video can seek)
    video = load_metrics(report_dir)["videos"][0]
    driver.execute_script("document.querySelector('.replay tr[data-step=\"1\"]:not(.truth)').click();")  # type: ignore[attr-defined]
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        time_now, label, highlighted = driver.execute_script(  # type: ignore[attr-defined]
            "var r = document.querySelector('.replay'); return [r.querySelector('video').currentTime, "
            "r.querySelector('.frame').textContent, r.querySelector('tr.now').dataset.step];"
        )
        if label == f"frame 1/{video['frames'] - 1}" and highlighted == "1":
            break
        if time.monotonic() > deadline:
            pytest.fail(f"the row click did not show frame 1: time {time_now}, label {label!r}, row {highlighted}")
        time.sleep(0.1)
    assert time_now == pytest.approx(1.5 / video["fps"], abs=1e-3)
