"""Browser benchmark: from dropping a photo on the page to the verdict and every Grad-CAM heatmap painted.

    python benchmarks/bench_browser.py --drops 10                 # starts app.py itself, rotates over examples/*.jpg
    python benchmarks/bench_browser.py --image examples/rose.jpg  # always the same photo
    python benchmarks/bench_browser.py --url http://127.0.0.1:7860/   # an app already running
    python benchmarks/bench_browser.py --server-env OMP_NUM_THREADS=1 --viewport 390x844

What is measured, per drop, in headless Chromium (Debian's ``/usr/bin/chromium`` driven by Playwright):

* The drop is a real one, as the browser delivers it when a file is dragged from the desktop: the photo's bytes
  are handed to the page, turned into a ``File`` in a ``DataTransfer``, and ``dragenter``, ``dragover`` and
  ``drop`` ``DragEvent``s are dispatched on Gradio's upload drop zone, the ``button.upload-container`` inside
  ``#fd-image`` (Gradio 6.31's upload action listens there). Building the ``File`` and the two hover events
  happen before the clock starts: in real life the browser has the file and the pointer is over the zone before
  the button is released.
* t0 is ``performance.now()`` just before the ``drop`` event is dispatched, so Gradio's upload request, the
  queue, the model and the rendering are all inside the figure.
* "verdict shown": the first frame painted after ``#fd-verdict`` holds an ``h3`` (a new answer).
* "verdict + heatmaps": the first frame painted after, in addition, ``#fd-cams`` holds at least ``--cams``
  ``<img>`` (3; 4 when a "why A, not B" map is added) and every one of them is ``complete`` with a
  ``naturalWidth``.
* Both are detected in the page by a ``MutationObserver`` and image ``load`` listeners, not by polling from
  Python, so Playwright's round trips are not in the figures. "Painted" is ``requestAnimationFrame`` followed by a
  message-channel task: that task runs once the frame whose rendering included the change has been produced.
* Between drops the page goes back to its empty state (the image's "Remove Image" button, then "Add a photo" in
  the verdict and no heatmaps), so every drop starts from the same page; photos rotate over ``examples/*.jpg``
  (or ``--image``) so no answer is a repeat of the one before.
* ``--warmup`` drops (default 2; the first one may also wait for the model to load) are not counted.

Also printed per drop, where the time goes: when Gradio's upload and queue-join requests ran (the page's resource
timing; the answer then comes over the queue's event stream), when the verdict and the heatmaps reached the DOM
and when the heatmaps were decoded (all before the frame that painted them), and the Playwright-side wall clock of
the whole call as a sanity check (a little longer than the in-page figure, never shorter). A drop whose upload
request started before t0 counts as a failure. Exit code 1 if a drop fails or times out.
"""
from __future__ import annotations

import argparse
import base64
import mimetypes
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_app import AppServer, example_images, exit_on_sigterm, parse_env, percentile, stop_and_report  # noqa: E402

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - a clear message beats a traceback
    raise SystemExit("bench_browser.py needs playwright: pip install playwright (the browser is /usr/bin/chromium)") \
        from None

# The same browser and flags as tests/test_browser.py (Playwright's own browser download is not used).
CHROMIUM = os.environ.get("FLOWERDEMO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TARGET_MS = 300.0  # the goal for the median
MIN_CAMS = 3  # CAM_CLASSES in flowerdemo/ui/presenters.py; a "why A, not B" map makes it 4
DROP_ZONE = "#fd-image button.upload-container"
READY_TEXT = "Add a photo"  # READY_MESSAGE: what the verdict area says when there is no photo
PAGE_TIMEOUT_MS = 60_000

# Installed once per page load: window.fdBench.drop(...) drops a photo and resolves with its timings.
IN_PAGE = r"""
() => {
  const afterPaint = () => new Promise(resolve => {
    // rAF runs before the frame is rendered; a task posted from it runs after that frame has been produced.
    requestAnimationFrame(() => {
      const channel = new MessageChannel();
      channel.port1.onmessage = () => resolve(performance.now());
      channel.port2.postMessage(null);
    });
  });

  const verdictShown = () => document.querySelector('#fd-verdict h3') !== null;

  const camsState = () => {
    const imgs = Array.from(document.querySelectorAll('#fd-cams img'));
    return {count: imgs.length, ready: imgs.filter(img => img.complete && img.naturalWidth > 0).length};
  };

  const allShown = minCams => {
    const cams = camsState();
    return verdictShown() && cams.count >= minCams && cams.ready === cams.count;
  };

  const inViewport = () => Array.from(document.querySelectorAll('#fd-cams img')).every(img => {
    const box = img.getBoundingClientRect();
    return box.top >= 0 && box.left >= 0 && box.bottom <= innerHeight && box.right <= innerWidth;
  });

  const requests = (t0) => {
    // Gradio's requests for this drop: the upload and the queue join (the answer comes over a stream).
    const entries = performance.getEntriesByType('resource').filter(e => e.startTime >= t0);
    const pick = part => entries.find(e => e.name.includes(part));
    const span = e => e ? {start: e.startTime - t0, end: e.responseEnd - t0} : null;
    return {upload: span(pick('/upload')), join: span(pick('/queue/join'))};
  };

  const makeFile = (b64, name, type) => {
    const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
    return new File([bytes], name, {type});
  };

  const dragEvent = (type, transfer) =>
    new DragEvent(type, {bubbles: true, cancelable: true, composed: true, dataTransfer: transfer});

  window.fdBench = {
    state: () => ({verdict: document.querySelector('#fd-verdict')?.innerText ?? null, cams: camsState(),
                   zone: document.querySelector('__ZONE__') !== null}),

    drop: (b64, name, type, minCams, timeoutMs) => new Promise((resolve, reject) => {
      const zone = document.querySelector('__ZONE__');
      if (!zone) { reject(new Error('no drop zone __ZONE__ on the page')); return; }
      if (verdictShown() || camsState().count) { reject(new Error('the page is not in its empty state')); return; }
      const transfer = new DataTransfer();
      transfer.items.add(makeFile(b64, name, type));
      zone.dispatchEvent(dragEvent('dragenter', transfer));
      zone.dispatchEvent(dragEvent('dragover', transfer));
      performance.clearResourceTimings();

      // *Dom: when the DOM first had it (not painted yet); verdictAt: the frame after the verdict, painted.
      let verdictDom = null, mapsDom = null, mapsLoaded = null, verdictAt = null;
      let finishing = false, observer = null, timer = null;
      const done = () => {
        observer.disconnect();
        document.removeEventListener('load', check, true);
        clearTimeout(timer);
      };
      function check() {
        const now = performance.now();
        if (mapsDom === null && camsState().count >= minCams) mapsDom = now;
        if (verdictAt === null && verdictShown()) {
          verdictDom = now;
          verdictAt = -1;  // claimed; the painted time arrives with the next frame
          afterPaint().then(t => { verdictAt = t; });
        }
        if (!finishing && allShown(minCams)) {
          finishing = true;
          mapsLoaded = now;
          afterPaint().then(t => {
            if (!allShown(minCams)) { finishing = false; check(); return; }  // replaced meanwhile: keep waiting
            done();
            // The verdict's frame was this one at the latest, and its callback was queued first: verdictAt is set.
            resolve({t0, verdict: verdictAt - t0, all: t - t0, verdictDom: verdictDom - t0, mapsDom: mapsDom - t0,
                     mapsLoaded: mapsLoaded - t0, cams: camsState().count, inViewport: inViewport(),
                     title: document.querySelector('#fd-verdict h3').innerText, requests: requests(t0)});
          });
        }
      }
      observer = new MutationObserver(check);
      observer.observe(document.body, {childList: true, subtree: true, characterData: true,
                                       attributeFilter: ['src']});
      // load does not bubble, but a capturing listener on the document sees every image's load.
      document.addEventListener('load', check, true);
      timer = setTimeout(() => {
        done();
        const cams = camsState();
        reject(new Error(`no complete answer within ${timeoutMs} ms: verdict ` +
          `${JSON.stringify((document.querySelector('#fd-verdict')?.innerText ?? '').slice(0, 160))}, ` +
          `${cams.count} heatmap(s), ${cams.ready} loaded`));
      }, timeoutMs);

      const t0 = performance.now();
      zone.dispatchEvent(dragEvent('drop', transfer));
      check();
    }),
  };
}
""".replace("__ZONE__", DROP_ZONE)


class BenchFailed(RuntimeError):
    pass


def parse_viewport(text: str) -> dict:
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise argparse.ArgumentTypeError(f"--viewport wants WIDTHxHEIGHT, e.g. 1280x1100, got {text!r}")
    return {"width": int(width), "height": int(height)}


def load_photos(paths: list[str]) -> list[dict]:
    """Each photo's name, MIME type and bytes (base64, to cross into the page)."""
    photos = []
    for path in paths:
        mime = mimetypes.guess_type(path)[0] or "image/jpeg"
        photos.append({"path": path, "name": os.path.basename(path), "type": mime,
                       "b64": base64.b64encode(Path(path).read_bytes()).decode("ascii")})
    return photos


def open_page(browser, url: str, viewport: dict):
    """The app's page, loaded and empty, with ``window.fdBench`` installed."""
    page = browser.new_page(viewport=viewport)
    # For loading the page and emptying it between drops; each drop has its own --timeout.
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        page.goto(url)
        page.locator(DROP_ZONE).wait_for(state="attached")
        expect(page.locator("#fd-verdict")).to_contain_text(READY_TEXT)
    except (AssertionError, PlaywrightError) as error:  # expect() raises AssertionError
        raise BenchFailed(f"the app's page at {url} did not load empty: {str(error).splitlines()[0]}") from None
    page.evaluate(IN_PAGE)
    return page


def reset(page) -> None:
    """Back to the empty page: remove the photo, wait for the ready message, no heatmaps and the drop zone."""
    remove = page.locator("#fd-image").get_by_label("Remove Image")
    try:
        if remove.count():
            remove.click()
        expect(page.locator("#fd-verdict")).to_contain_text(READY_TEXT)
        expect(page.locator("#fd-verdict h3")).to_have_count(0)
        expect(page.locator("#fd-cams img")).to_have_count(0)
        page.locator(DROP_ZONE).wait_for(state="attached")
    except (AssertionError, PlaywrightError) as error:  # expect() raises AssertionError
        raise BenchFailed(f"the page did not return to its empty state: {str(error).splitlines()[0]}") from None


def drop(page, photo: dict, min_cams: int, timeout_ms: float) -> dict:
    """One timed drop on an empty page; the result also has ``wall`` (ms), Playwright's view of the same call."""
    start = time.perf_counter()
    try:
        result = page.evaluate("([b64, name, type, minCams, timeoutMs]) => "
                               "window.fdBench.drop(b64, name, type, minCams, timeoutMs)",
                               [photo["b64"], photo["name"], photo["type"], min_cams, timeout_ms])
    except PlaywrightError as error:
        raise BenchFailed(f"drop of {photo['name']}: {error.message.splitlines()[0]}") from None
    result["wall"] = (time.perf_counter() - start) * 1e3
    if result["requests"]["upload"] is None:
        # Only requests started after t0 are listed, so this also catches a clock started after the upload.
        raise BenchFailed(f"drop of {photo['name']}: no upload request after the drop event -- was it a real drop?")
    return result


def split(result: dict) -> str:
    """Where one drop's time went (ms from t0): Gradio's requests, from the page's resource timing, and when the
    answer reached the DOM, before the frames that painted it."""
    upload, join = result["requests"]["upload"], result["requests"]["join"]
    parts = [f"upload {upload['start']:3.0f}-{upload['end']:4.0f}"]
    if join:
        parts.append(f"join {join['start']:4.0f}-{join['end']:4.0f}")
    parts.append(f"in DOM: verdict {result['verdictDom']:4.0f}, maps {result['mapsDom']:4.0f}, "
                 f"maps loaded {result['mapsLoaded']:4.0f}")
    return "   ".join(parts)


def summary(name: str, values: list[float], target: float | None = None) -> str:
    median = statistics.median(values)
    mark = ""
    if target is not None:
        mark = f"   target <= {target:.0f} ms: {'met' if median <= target else 'NOT met'}"
    return (f"{name:<26} median {median:6.0f} ms   p90 {percentile(values, 90):6.0f} ms   "
            f"min {min(values):6.0f} ms   max {max(values):6.0f} ms{mark}")


def run_drops(page, photos: list[dict], warmup: int, drops: int, min_cams: int, timeout_ms: float) -> list[dict]:
    """Warm-up drops, then the timed ones, each from the empty page; prints a line per drop."""
    results = []
    for index in range(warmup + drops):
        photo = photos[index % len(photos)]
        counted = index >= warmup
        label = f"drop {index - warmup + 1:2d}" if counted else f"warm-up {index + 1}"
        try:
            reset(page)
            result = drop(page, photo, min_cams, timeout_ms)
        except BenchFailed as error:
            raise BenchFailed(f"{label.replace('  ', ' ')}: {error}") from None
        print(f"{label:<10} {photo['name']:<26} verdict {result['verdict']:5.0f}   all {result['all']:5.0f}   "
              f"| {split(result)} | playwright wall {result['wall']:5.0f}, {result['cams']} maps, {result['title']!r}")
        if counted:
            results.append(result)
    return results


def report(results: list[dict]) -> None:
    def column(key: str) -> list[float]:
        return [r[key] for r in results]

    print(summary("verdict shown", column("verdict")))
    print(summary("verdict + all heatmaps", column("all"), TARGET_MS))
    print("where the time goes (ms from the drop; medians of the timed drops):")
    print(summary("  upload request done", [r["requests"]["upload"]["end"] for r in results]))
    joins = [r["requests"]["join"]["end"] for r in results if r["requests"]["join"]]
    if joins:
        print(summary("  queue join done", joins))
    print(summary("  verdict in the DOM", column("verdictDom")))
    print(summary("  heatmaps in the DOM", column("mapsDom")))
    print(summary("  heatmaps decoded", column("mapsLoaded")))
    if not all(r["inViewport"] for r in results):
        print("note: some heatmaps were outside the viewport (loaded and painted, but a visitor would scroll)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drops", "-n", type=int, default=10, help="timed drops (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="drops before timing, not counted (default 2)")
    parser.add_argument("--image", default=None, help="drop only this photo (default: rotate over examples/*.jpg)")
    parser.add_argument("--url", default=None, help="use an app already running here instead of starting app.py")
    parser.add_argument("--server-env", action="append", metavar="KEY=VALUE",
                        help="extra environment for the started server, e.g. OMP_NUM_THREADS=1 (repeatable)")
    parser.add_argument("--shared-cache", action="store_true",
                        help="let the started server use Gradio's shared /tmp/gradio cache (default: a private one)")
    parser.add_argument("--viewport", type=parse_viewport, default=parse_viewport("1280x1100"),
                        help="browser viewport WIDTHxHEIGHT (default 1280x1100, as tests/test_browser.py)")
    parser.add_argument("--cams", type=int, default=MIN_CAMS,
                        help=f"heatmaps to wait for, at least (default {MIN_CAMS})")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per drop before it fails (default 60)")
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    args = parser.parse_args(argv)
    if args.drops < 1 or args.warmup < 0:
        parser.error("--drops must be at least 1 and --warmup at least 0")
    if args.url and (args.server_env or args.shared_cache):
        parser.error("--server-env and --shared-cache only apply to a server this script starts, not to --url")
    paths = [args.image] if args.image else example_images()
    if not paths or not all(os.path.isfile(p) for p in paths):
        parser.error("no photo: pass --image FILE or add examples/*.jpg")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        parser.error(f"{CHROMIUM} not found (apt-get install -y chromium, or set FLOWERDEMO_CHROMIUM)")
    photos = load_photos(paths)
    timeout_ms = args.timeout * 1e3

    sys.stdout.reconfigure(line_buffering=True)  # each drop's line as it happens, also into a pipe or a file
    exit_on_sigterm()
    server = None if args.url else AppServer(extra_env=parse_env(args.server_env), shared_cache=args.shared_cache)
    try:
        if server:
            print(f"starting {server.app} on {server.url}" + (f" with {server.extra_env}" if server.extra_env else ""))
            print(f"ready (spawn -> GET / 200) in {server.start(args.ready_timeout):.1f} s")
        url = args.url or server.url
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                print(f"Chromium {browser.version} (headless, {CHROMIUM}), viewport "
                      f"{args.viewport['width']}x{args.viewport['height']}, {url}")
                print(f"photos: {', '.join(p['name'] for p in photos)}")
                print(f"{args.warmup} warm-up drop(s), then {args.drops} timed; times are ms from the drop event")
                page = open_page(browser, url, args.viewport)
                results = run_drops(page, photos, args.warmup, args.drops, args.cams, timeout_ms)
            finally:
                browser.close()
        report(results)
        return 0
    except BenchFailed as error:
        print(f"FAILED: {error}")
        return 1
    except KeyboardInterrupt:
        print("interrupted")
        return 130
    finally:
        if server:
            stop_and_report(server)


if __name__ == "__main__":
    raise SystemExit(main())
