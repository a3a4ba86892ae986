"""End-to-end: the real app in headless Chromium (Playwright, sync API).

Needs ``pip install playwright`` and Debian's ``/usr/bin/chromium`` (Playwright's own browser download is not
used). Serves the bundled ``weights/`` in-process on a free port (the "one of" step needs the real model).
``FLOWERDEMO_UPDATE_SCREENSHOT=1`` writes the desktop screenshot to ``docs/screenshot.png``. The phone (390 x 844)
and desktop (1280 x 900) layout tests save their screenshots under pytest's ``tmp_path``.
"""
from __future__ import annotations

import re
import os
import shutil
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("FLOWERDEMO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
EXAMPLES = ROOT / "examples"
TIMEOUT_MS = 45_000

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = [
    pytest.mark.slow,  # a real server and a browser
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install playwright)"),
    pytest.mark.skipif(not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)),
                       reason=f"{CHROMIUM} not found (apt-get install -y chromium)"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CountingClassifier:
    """The real classifier, counting explain() calls: one photo must run the model once, not once per event."""

    def __init__(self, classifier):
        self._classifier = classifier
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._classifier, name)

    def explain(self, *args, **kwargs):
        self.calls += 1
        return self._classifier.explain(*args, **kwargs)

    def explain_plant(self, *args, **kwargs):
        self.plant_calls = getattr(self, "plant_calls", 0) + 1
        return self._classifier.explain_plant(*args, **kwargs)


@pytest.fixture(scope="module")
def feedback_store(tmp_path_factory):
    """Where the page's "Is this right?" saves go during these tests (never the repository's feedback/)."""
    from flowerdemo.core.artifact import load_artifact
    from flowerdemo.feedback import FeedbackStore

    _, metadata = load_artifact(ROOT / "weights" / "model.pt")
    return FeedbackStore(tmp_path_factory.mktemp("feedback"), class_names=metadata.class_names)


@pytest.fixture(scope="module")
def served(feedback_store):
    from flowerdemo.serve.predict import FlowerClassifier
    from flowerdemo.ui import build_demo, launch_kwargs

    classifier = CountingClassifier(FlowerClassifier.load(str(ROOT / "weights")))
    demo = build_demo(classifier, feedback_store=feedback_store)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **launch_kwargs())
    try:
        yield f"http://127.0.0.1:{port}/", classifier
    finally:
        demo.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _wait_for_result(page, cams: int | None = None) -> None:
    """The answer is on the page: ``cams`` Grad-CAM pictures, or (None) three or four, whichever the model's
    answer asks for (a fourth, "why A, not B", comes with a set of several or a close call)."""
    expect(page.locator("#fd-verdict h3")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator("#fd-label .confidence-set").first).to_be_visible(timeout=TIMEOUT_MS)
    if cams is not None:
        expect(page.locator("#fd-cams img")).to_have_count(cams, timeout=TIMEOUT_MS)
        return
    expect(page.locator("#fd-cams img").nth(2)).to_be_attached(timeout=TIMEOUT_MS)
    assert page.locator("#fd-cams img").count() in (3, 4)


def _wait_for_images(page) -> None:
    """Gradio keeps a connection open, so "networkidle" never comes: wait for the pictures themselves."""
    page.locator("#fd-references").scroll_into_view_if_needed()
    page.wait_for_function("""() => Array.from(document.querySelectorAll('#fd-cams img, #fd-references img'))
        .every(img => img.complete && img.naturalWidth > 0)""", timeout=TIMEOUT_MS)
    page.evaluate("window.scrollTo(0, 0)")


def _maps_for(classifier, photo) -> int:
    """How many Grad-CAM pictures the page shows for ``photo``: one per top class (3), and a "why A, not B" map
    when the answer is "one of" several or a close call (the bundled model decides which; predict counts no call)."""
    from flowerdemo.serve.predict import wants_contrast

    return 3 + wants_contrast(classifier.predict(str(photo)))


def _ran_once(page, classifier, before: int) -> None:
    page.wait_for_timeout(800)  # a duplicate event would be sent right after the first one finishes
    assert classifier.calls == before + 1, f"the model ran {classifier.calls - before} times for one photo"


def test_upload_shows_label_gradcam_and_references(browser, served, tmp_path):
    app_url, classifier = served
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    first_cam = page.locator("#fd-cams img").first
    for name in ("rose.jpg", "sunflower.jpg"):  # the second upload replaces a photo
        before = classifier.calls
        previous = first_cam.get_attribute("src") if first_cam.count() else None
        page.locator("#fd-image input[type=file]").set_input_files(str(EXAMPLES / name))
        if previous:
            expect(first_cam).not_to_have_attribute("src", previous, timeout=TIMEOUT_MS)
        maps = _maps_for(classifier, EXAMPLES / name)
        _wait_for_result(page, maps)
        _ran_once(page, classifier, before)

    assert 1 <= page.locator("#fd-label .confidence-set").count() <= 5
    captions = page.locator("#fd-cams figcaption").all_inner_texts()
    assert len(captions) == maps and all(" — " in c and c.endswith("%") for c in captions[:3])
    expect(page.locator("#fd-references img").first).to_be_visible()

    # The opacity slider re-renders the overlays without re-running the model.
    calls = classifier.calls
    before = first_cam.get_attribute("src")
    number = page.locator("#fd-opacity input[type=number]")
    number.fill("1")
    number.press("Enter")
    expect(first_cam).not_to_have_attribute("src", before, timeout=TIMEOUT_MS)
    assert classifier.calls == calls

    # The model panel is filled by the page-load event.
    page.get_by_text("About the model").click()
    expect(page.locator("#fd-model-info")).to_contain_text("classes", timeout=TIMEOUT_MS)
    expect(page.locator("#fd-model-info")).to_contain_text("temperature")

    # Back to the default opacity for the picture, then let the overlay images finish loading.
    strong = first_cam.get_attribute("src")
    number.fill("0.5")
    number.press("Enter")
    expect(first_cam).not_to_have_attribute("src", strong or "", timeout=TIMEOUT_MS)
    number.blur()

    # A photo whose answer comes with candidates (a set of several, or the likeliest species under "not sure"): a
    # fourth map, "why A, not B". The bundled model decides which example that is. (It is also the screenshot:
    # the answer with scientific names, the candidates, the four maps and the references at once.)
    photo = next(p for p in sorted(EXAMPLES.glob("*.jpg")) if _maps_for(classifier, p) == 4)
    before = classifier.calls
    page.locator("#fd-image input[type=file]").set_input_files(str(photo))
    expect(page.locator("#fd-verdict")).to_contain_text(re.compile("Candidates|Likeliest"), timeout=TIMEOUT_MS)
    _wait_for_result(page, cams=4)
    _ran_once(page, classifier, before)
    expect(page.locator("#fd-cams figcaption").last).to_contain_text("Why ")
    expect(page.locator("#fd-cams figcaption").last).to_contain_text(", not ")
    _wait_for_images(page)
    update = os.environ.get("FLOWERDEMO_UPDATE_SCREENSHOT") == "1"
    target = ROOT / "docs" / "screenshot.png" if update else tmp_path / "screenshot.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000
    page.close()


def test_phone_width_has_no_horizontal_overflow(browser, served, tmp_path):
    app_url, classifier = served
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                  has_touch=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    # Clicking an example is how most phone visitors start; it must run the model too.
    before = classifier.calls
    page.get_by_role("button", name="Rose", exact=True).click()
    _wait_for_result(page)
    _ran_once(page, classifier, before)
    _wait_for_images(page)

    overflow = page.evaluate("""() => {
        const width = document.documentElement.clientWidth;
        const offenders = [];
        for (const el of document.querySelectorAll('body *')) {
            const box = el.getBoundingClientRect();
            const style = getComputedStyle(el);
            if (box.width === 0 || style.visibility === 'hidden' || style.display === 'none') continue;
            if (box.right > width + 1 || box.left < -1) {
                offenders.push(`${el.tagName.toLowerCase()}#${el.id}.${String(el.className).slice(0, 40)} ` +
                               `[${Math.round(box.left)}, ${Math.round(box.right)}]`);
            }
        }
        return {scrollWidth: document.documentElement.scrollWidth, width, offenders: offenders.slice(0, 10)};
    }""")
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    assert overflow["scrollWidth"] <= overflow["width"], overflow
    assert not overflow["offenders"], overflow
    context.close()


def test_a_failed_or_cleared_photo_leaves_no_stale_answer(browser, served, tmp_path):
    """Good photo, unreadable file, good photo, clear: each state shows only its own answer."""
    app_url, _ = served
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    verdict, upload = page.locator("#fd-verdict"), page.locator("#fd-image input[type=file]")

    upload.set_input_files(str(EXAMPLES / "rose.jpg"))
    _wait_for_result(page)
    first_answer = verdict.inner_text()

    bad = tmp_path / "holiday.jpg"
    bad.write_bytes(b"this is not a photo at all")
    upload.set_input_files(str(bad))
    expect(verdict).to_contain_text("Cannot read this image", timeout=TIMEOUT_MS)
    expect(verdict).to_contain_text("Try another photo")
    expect(page.locator("#fd-cams img")).to_have_count(0)
    expect(page.locator("#fd-label .confidence-set")).to_have_count(0)
    expect(page.locator("#fd-references img")).to_have_count(0)
    assert first_answer.splitlines()[0] not in verdict.inner_text()
    expect(page.locator(".toast-body")).to_have_count(0)  # the message is in the page, not in a toast over it

    upload.set_input_files(str(EXAMPLES / "sunflower.jpg"))
    _wait_for_result(page)
    expect(verdict).not_to_contain_text("Cannot read this image")

    page.locator("#fd-image").get_by_label("Remove Image").click()
    expect(verdict).to_contain_text("Add a photo", timeout=TIMEOUT_MS)
    expect(page.locator("#fd-cams img")).to_have_count(0)
    expect(page.locator("#fd-label .confidence-set")).to_have_count(0)
    page.close()


def test_not_right_it_is_rose_is_saved_then_undone_and_a_bad_upload_shows_no_buttons(browser, served,
                                                                                     feedback_store, tmp_path):
    from flowerdemo.feedback import read_records

    app_url, _ = served
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    row, status = page.locator("#fd-feedback"), page.locator("#fd-fb-status")
    expect(row).to_have_count(0)  # no answer yet: no buttons
    upload = page.locator("#fd-image input[type=file]")
    upload.set_input_files(str(EXAMPLES / "sunflower.jpg"))
    _wait_for_result(page)
    expect(row).to_be_visible()
    expect(row).to_contain_text("Nothing is kept unless you click")
    assert read_records(feedback_store.root) == []  # an answer alone keeps nothing

    page.locator("#fd-fb-choice input").fill("rose")
    page.get_by_role("option", name="rose — roses (Rosa)", exact=True).click()  # with other names, scientific name
    page.get_by_role("button", name="Not right: it is rose").click()
    expect(status).to_contain_text("Thank you!")
    expect(status).to_contain_text("rose")
    [record] = read_records(feedback_store.root)
    assert record["label"] == "rose" and record["label_kind"] == "known" and record["model_top1"] == "sunflower"

    page.locator("#fd-fb-undo").click()
    expect(status).to_contain_text("Undone")
    expect(page.locator("#fd-fb-undo")).to_be_hidden()
    assert read_records(feedback_store.root) == []

    bad = tmp_path / "holiday.jpg"
    bad.write_bytes(b"this is not a photo at all")
    upload.set_input_files(str(bad))
    expect(page.locator("#fd-verdict")).to_contain_text("Cannot read this image", timeout=TIMEOUT_MS)
    expect(row).to_be_hidden()  # no answer: no buttons, and no stale "Undone" either
    page.close()


# ---------------------------------------------------------------------------------------------- phone and desktop

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
MIN_TOUCH = 40  # px: the least height of a button a thumb has to hit


def _phone(browser):
    return browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)


def _button_heights(page) -> list:
    return page.evaluate("""() => Array.from(document.querySelectorAll('#fd-feedback button'))
        .filter(b => b.offsetParent !== null).map(b => b.getBoundingClientRect().height)""")


def _reference_sharpness(page) -> list:
    """(natural width, shown width in device pixels) of each reference photo, once loaded."""
    _wait_for_images(page)
    return page.evaluate("""() => Array.from(document.querySelectorAll('#fd-references img'))
        .map(img => [img.naturalWidth, img.getBoundingClientRect().width * window.devicePixelRatio])""")


def test_phone_shows_the_answer_in_the_first_screen_after_an_upload(browser, served, tmp_path):
    app_url, _ = served
    context = _phone(browser)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    page.locator("#fd-image input[type=file]").set_input_files(str(EXAMPLES / "sunflower.jpg"))
    _wait_for_result(page)
    expect(page.locator("#fd-feedback")).to_be_visible(timeout=TIMEOUT_MS)
    page.wait_for_timeout(500)  # let the layout settle (fonts, the label's bars)
    page.screenshot(path=str(tmp_path / "phone-first-screen.png"))  # what the person sees, unscrolled

    assert page.evaluate("window.scrollY") == 0
    height = page.evaluate("window.innerHeight")
    photo, verdict = page.locator("#fd-image").bounding_box(), page.locator("#fd-verdict").bounding_box()
    assert photo["y"] >= 0 and photo["y"] + photo["height"] <= verdict["y"]  # the photo, then the answer below it
    assert 0 <= verdict["y"] and verdict["y"] + verdict["height"] <= height, (verdict, height)
    candidates = [page.locator("#fd-label .confidence-set").nth(i).bounding_box() for i in range(3)]
    assert all(box["y"] + box["height"] <= height for box in candidates), (candidates, height)  # the top three

    heights = _button_heights(page)
    assert heights and min(heights) >= MIN_TOUCH, heights
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    sharpness = _reference_sharpness(page)
    assert sharpness and all(natural >= shown - 1 for natural, shown in sharpness), sharpness  # sharp at 2x
    page.screenshot(path=str(tmp_path / "phone-full.png"), full_page=True)
    context.close()


def test_desktop_keeps_the_side_by_side_layout(browser, served, tmp_path):
    app_url, _ = served
    page = browser.new_page(viewport=DESKTOP)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    page.locator("#fd-image input[type=file]").set_input_files(str(EXAMPLES / "rose.jpg"))
    _wait_for_result(page)
    expect(page.locator("#fd-feedback")).to_be_visible(timeout=TIMEOUT_MS)
    photo, verdict = page.locator("#fd-image").bounding_box(), page.locator("#fd-verdict").bounding_box()
    assert photo["x"] + photo["width"] <= verdict["x"]  # the answer beside the photo, not under it
    assert verdict["y"] < photo["y"] + photo["height"]
    examples = page.locator("#fd-examples").bounding_box()
    assert examples["x"] < verdict["x"] and examples["y"] > photo["y"]  # the examples stay under the photo
    heights = _button_heights(page)
    assert heights and min(heights) >= MIN_TOUCH, heights
    sharpness = _reference_sharpness(page)
    assert sharpness and all(natural >= 2 * shown - 1 for natural, shown in sharpness), sharpness
    page.screenshot(path=str(tmp_path / "desktop.png"), full_page=True)
    page.close()


def test_three_photos_with_a_non_flower_answer_for_the_plant_and_name_the_one_left_out(browser, served, tmp_path):
    from PIL import Image, ImageOps

    app_url, classifier = served
    second = tmp_path / "rose_from_the_left.jpg"  # another photo of the same rose: mirrored and cropped
    with Image.open(EXAMPLES / "rose.jpg") as rose:
        width, height = rose.size
        ImageOps.mirror(rose.convert("RGB")).crop((width // 10, 0, width, height)).save(second, quality=90)
    context = _phone(browser)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    page.locator("#fd-plant").get_by_text("Several photos of one plant").click()
    before = getattr(classifier, "plant_calls", 0)
    page.locator("#fd-plant-files input[type=file]").set_input_files(
        [str(EXAMPLES / "rose.jpg"), str(second), str(EXAMPLES / "not_a_flower_dog.jpg")])
    verdict = page.locator("#fd-verdict")
    expect(verdict).to_contain_text("For the plant, from 2 photos together", timeout=TIMEOUT_MS)
    expect(verdict).to_contain_text("Left out: not_a_flower_dog.jpg (not a flower)")
    expect(page.locator("#fd-verdict h3")).to_contain_text("Rose")
    # the photos were added below the answer: the page scrolls back up to it
    expect(page.locator("#fd-verdict h3")).to_be_in_viewport(timeout=TIMEOUT_MS)
    _wait_for_result(page, cams=2)  # a heatmap per photo combined, none for the dog
    captions = page.locator("#fd-cams figcaption").all_inner_texts()
    assert sum("carried the answer" in c for c in captions) == 1, captions
    assert {c.split(":")[0] for c in captions} == {"rose.jpg", second.name}
    expect(page.locator("#fd-feedback")).to_be_visible()  # a plant's answer can be judged too
    page.wait_for_timeout(800)
    assert classifier.plant_calls == before + 1  # one upload of three files: the model ran once
    page.screenshot(path=str(tmp_path / "phone-plant.png"), full_page=True)
    context.close()


FAKE_CAMERA = """
window.__cameraAsked = [];
Object.defineProperty(navigator, 'mediaDevices', {configurable: true, value: {
  getUserMedia: async (constraints) => {
    window.__cameraAsked.push(JSON.parse(JSON.stringify(constraints)));
    const canvas = document.createElement('canvas');
    canvas.width = 64; canvas.height = 48; canvas.getContext('2d').fillRect(0, 0, 64, 48);
    return canvas.captureStream();
  },
  enumerateDevices: async () => [{kind: 'videoinput', deviceId: 'camera', label: 'camera'}],
  addEventListener: () => {}, removeEventListener: () => {}}});
"""


def test_the_webcam_asks_for_the_back_camera(browser, served):
    app_url, _ = served
    context = _phone(browser)
    context.add_init_script(FAKE_CAMERA)  # records what the page asks the browser for
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    page.locator("#fd-image").get_by_role("button", name="Capture from camera").click()
    page.locator("#fd-image").get_by_text("Click to Access Webcam").first.click()
    page.wait_for_function("window.__cameraAsked.length > 0", timeout=TIMEOUT_MS)
    asked = page.evaluate("window.__cameraAsked")[0]
    assert asked["video"]["facingMode"] == {"ideal": "environment"}, asked
    context.close()
