"""The Blocks: layout, then wiring, then the queue. ``build_demo()`` builds without loading the model.

Both entry points take a :class:`~flowerdemo.serve.settings.Settings` (None: ``Settings.from_env()``, read once,
so a bad ``FLOWERDEMO_*`` value stops the app at start); nothing below them reads the environment."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ..core.combine import MAX_PHOTOS
from ..serve.settings import Settings
from .assets import EXAMPLES_DIR, REFERENCES_DIR, example_files
from .events import make_auto_classify, make_classify, make_intro, make_model_info, rerender
from .gradio_compat import PHONE_CSS, PHONE_HEAD, back_camera, tag_examples
from .plant import make_classify_plant
from .feedback import (NAME_MAX_LENGTH, FeedbackEvents, FeedbackSession, LazyStore, consent_markdown, destination,
                       not_right_button_text)
from .presenters import (CAM_CLASSES, DEFAULT_OPACITY, DISCLAIMER, READY_MESSAGE, TOP_K, example_label,
                         intro_markdown)
from .runtime import as_lazy

CACHE_LIFETIME = (1800, 3600)  # Gradio's delete_cache: (sweep every N s, delete files older than M s)
FEEDBACK_CONCURRENCY = 4  # saves at once: each is a JPEG encode and a short locked commit, not inference


CSS = """
.fd-unlikely { opacity: 0.65; }
.fd-note { color: var(--body-text-color-subdued); font-size: var(--text-sm); }
.fd-verdict h3 { margin-top: 0; }
/* Picture grids (Grad-CAM maps, reference photos): as many columns as fit, never wider than the screen. */
.fd-figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(96px, 1fr)); gap: var(--size-2);
              padding: var(--size-2); }
.fd-figure { margin: 0; min-width: 0; }
.fd-figure img { width: 100%; aspect-ratio: 1; object-fit: cover; border-radius: var(--radius-md); display: block; }
.fd-figure figcaption { font-size: var(--text-xs); color: var(--body-text-color); margin-top: var(--size-1);
                        overflow-wrap: anywhere; }
#fd-cams .fd-figures { grid-template-columns: repeat(auto-fill, minmax(140px, 1fr)); }
#fd-feedback { padding: var(--size-2); }
/* Touch targets: the "Is this right?" buttons at least 44 px high (40 px is the floor we test for). */
#fd-feedback button { min-height: 44px; }
.fd-feedback-failed { color: var(--error-text-color); }
""" + PHONE_CSS


def theme():
    # Soft ships its font locally (no Google Fonts request), and has light and dark palettes.
    return gr.themes.Soft(primary_hue="emerald", secondary_hue="pink", neutral_hue="slate")


def launch_kwargs(settings: Settings | None = None, **overrides) -> dict:
    """Keyword arguments for ``demo.launch()`` (Gradio 6 takes theme and css here, not in ``gr.Blocks``), with the
    upload limit of ``settings`` (None: ``Settings.from_env()``).

    Server name and port are left to Gradio, which reads ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``.
    """
    settings = settings if settings is not None else Settings.from_env()
    kwargs = {"theme": theme(), "css": CSS, "head": PHONE_HEAD, "max_file_size": settings.max_file_size,
              "show_error": False}
    kwargs.update(overrides)
    return kwargs


def build_demo(classifier_loader=None, top_k: int = TOP_K, cam_classes: int = CAM_CLASSES,
               feedback_store=None, *, settings: Settings | None = None) -> gr.Blocks:
    """Build the app. ``classifier_loader``: a callable returning a ``FlowerClassifier`` (called lazily, once),
    a loaded classifier, or None for the model ``settings`` name (``FLOWERDEMO_MODEL``, else the bundled weights).

    ``feedback_store``: where "Is this right?" answers go: None for the store ``settings`` ask for (opened after
    the model; ``FLOWERDEMO_FEEDBACK=off`` leaves the row out), a ``FeedbackStore``, an opener
    ``classifier -> store``, or False for no row.

    ``settings``: queue, model, feedback folder and limits; None: ``Settings.from_env()``."""
    settings = settings if settings is not None else Settings.from_env()
    model = as_lazy(classifier_loader, settings)
    classify = make_classify(model, top_k, cam_classes)
    classify_plant = make_classify_plant(model, top_k)
    with_feedback = feedback_store is not False and not (feedback_store is None and not settings.feedback)
    feedback = (FeedbackEvents(model, LazyStore.of(model, feedback_store, settings),
                               per_minute=settings.feedback_per_minute) if with_feedback else None)

    # The reference thumbnails and examples never change: served from where they are, instead of Gradio hashing
    # and copying five thumbnails into its cache on every answer.
    gr.set_static_paths([str(REFERENCES_DIR), str(EXAMPLES_DIR)])
    # delete_cache: every 30 min, delete uploads and outputs older than 1 h from Gradio's cache (examples are kept).
    with gr.Blocks(title="Flower species recogniser", analytics_enabled=False, delete_cache=CACHE_LIFETIME) as demo:
        intro = gr.Markdown(intro_markdown(None), elem_id="fd-intro")
        # elem_ids on the row and its columns: the phone layout (PHONE_CSS) reorders their parts.
        with gr.Row(equal_height=False, elem_id="fd-main"):
            with gr.Column(scale=1, min_width=300, elem_id="fd-photo-column"):
                image = gr.Image(label="Flower photo", type="filepath", image_mode=None,
                                 sources=["upload", "clipboard", "webcam"], height=300, elem_id="fd-image",
                                 webcam_options=back_camera())
                identify = gr.Button("Identify", variant="primary", elem_id="fd-identify")
                # Several photos of one plant: beside the single photo, which stays the one-click default.
                with gr.Accordion(f"Several photos of one plant? Add up to {MAX_PHOTOS}: blooms, leaves, the "
                                  "whole plant", open=False, elem_id="fd-plant"):
                    plant_files = gr.File(file_count="multiple", file_types=["image"], type="filepath",
                                          label=f"Photos of one plant (1 to {MAX_PHOTOS})",
                                          elem_id="fd-plant-files", height=140)
                    identify_plant = gr.Button("Identify the plant", variant="primary",
                                               elem_id="fd-plant-identify")
                files = example_files()
                examples = gr.Examples(examples=[[str(p)] for p in files], inputs=[image],
                                       example_labels=[example_label(p) for p in files], label="Examples",
                                       examples_per_page=12, cache_examples=False,
                                       api_visibility="private") if files else None
                tag_examples(examples, "fd-examples")
            with gr.Column(scale=1, min_width=300, elem_id="fd-answer-column"):
                verdict = gr.Markdown(READY_MESSAGE, label="Verdict", elem_id="fd-verdict", elem_classes=["fd-verdict"])
                # No big heading: the verdict above already names the top class (or says it is not a flower).
                label = gr.Label(num_top_classes=top_k, label="Top classes", show_heading=False, elem_id="fd-label")
                if feedback is not None:
                    row = feedback_row(destination(settings,
                                                   feedback_store if hasattr(feedback_store, "save") else None))
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                # HTML, not galleries: the pictures travel inside the answer (heatmaps) or come from a static path
                # (references), so an answer has no result files to write, hash, copy or download.
                cams = gr.HTML(label="Grad-CAM: where the model looked", show_label=True, container=True,
                               elem_id="fd-cams")
                opacity = gr.Slider(0.0, 1.0, value=DEFAULT_OPACITY, step=0.05, label="Heatmap opacity",
                                    elem_id="fd-opacity")
            with gr.Column(scale=1, min_width=300):
                references = gr.HTML(label="Reference photos (training set)", show_label=True, container=True,
                                     elem_id="fd-references")
        with gr.Accordion("About the model", open=False):
            info = gr.Markdown("Loading the model…", elem_id="fd-model-info")
        gr.Markdown(f"<span class='fd-note'>{DISCLAIMER} Uploaded photos are deleted from the server's "
                    "temporary cache within about 90 minutes.</span>")
        state = gr.State(None)

        # The public API's own trigger, never shown: /classify raises gr.Error for bad input (what an API client
        # wants), while the page's events below turn errors into a message in the verdict area instead.
        api_trigger = gr.Button(visible=False, elem_id="fd-api")

        outputs = [label, verdict, cams, references, state]
        # preprocess=False: the callback gets Gradio's file payload and opens it itself, so an unreadable upload
        # gets flowerdemo's message (Gradio's own preprocessing would fail first with a generic error).
        api_trigger.click(classify, inputs=[image, opacity], outputs=outputs, api_name="classify", preprocess=False,
                          concurrency_id="model")
        plant_api_trigger = gr.Button(visible=False, elem_id="fd-plant-api")
        plant_api_trigger.click(classify_plant, inputs=[plant_files, opacity], outputs=outputs,
                                api_name="classify_plant", preprocess=False, concurrency_id="model")
        # A new photo runs the model by itself. Not image.change: Gradio 6.31 fires that twice when an upload
        # replaces a photo. image.input fires once per upload, paste, webcam capture or clear; an example click
        # only sets the value, so it gets its own follow-up event.
        auto = dict(fn=make_auto_classify(classify), inputs=[image, opacity], outputs=outputs, preprocess=False,
                    api_visibility="private", concurrency_id="model")
        answered = [identify.click(**auto), image.input(**auto)]
        # scroll_to_output: on a phone the plant's photos are added below the answer, which would appear
        # off screen; the page scrolls up to it (Gradio scrolls to the topmost output, the verdict).
        plant = dict(auto, fn=make_auto_classify(classify_plant), inputs=[plant_files, opacity],
                     scroll_to_output=True)
        # upload: the files chosen at once; clear (the x): back to "add a photo", no stale answer
        answered += [identify_plant.click(**plant), plant_files.upload(**plant), plant_files.clear(**plant)]
        if examples is not None:
            answered.append(examples.load_input_event.then(**auto))
        if feedback is not None:
            wire_feedback(feedback, row, state, answered)
        opacity.change(rerender, inputs=[state, opacity], outputs=[cams], api_visibility="private",
                       show_progress="hidden", concurrency_id="overlay")
        demo.load(make_model_info(model, top_k, cam_classes), outputs=[info], api_visibility="private",
                  show_progress="hidden")
        demo.load(make_intro(model), outputs=[intro], api_visibility="private", show_progress="hidden")
        if feedback is not None:
            demo.load(feedback.choices, outputs=[row.choice], api_visibility="private", show_progress="hidden")

    demo.queue(default_concurrency_limit=settings.concurrency, max_size=settings.queue_size)
    demo.flowerdemo_model = model  # for tests and callers: demo.flowerdemo_model.loaded
    demo.flowerdemo_feedback = feedback.store if feedback is not None else None
    return demo


def feedback_row(where: str) -> SimpleNamespace:
    """The row under the label, hidden until there is an answer; nothing in it saves anything until clicked.
    Returns its components by name (``row.right``, ``row.status``...)."""
    parts = {}
    with gr.Column(visible=False, variant="panel", elem_id="fd-feedback") as parts["group"]:
        gr.Markdown("**Is this right?**")
        with gr.Row(equal_height=True):
            parts["right"] = gr.Button("Right", size="sm", elem_id="fd-fb-right", min_width=120)
            parts["choice"] = gr.Dropdown(choices=[], value=None, label="Not right: it is …", filterable=True,
                                          elem_id="fd-fb-choice", min_width=200)
        parts["other"] = gr.Textbox(label="The species' name", visible=False, max_length=NAME_MAX_LENGTH,
                                    max_lines=1, placeholder="e.g. garden tulip", elem_id="fd-fb-other")
        parts["not_right"] = gr.Button(not_right_button_text(None), size="sm", interactive=False,
                                       elem_id="fd-fb-not-right")
        gr.Markdown(consent_markdown(where), elem_id="fd-fb-consent")
        parts["status"] = gr.HTML("", elem_id="fd-fb-status")
        parts["undo"] = gr.Button("Undo", size="sm", visible=False, variant="secondary", elem_id="fd-fb-undo")
    # The /feedback endpoint's own inputs and output, never shown (as /classify has its own trigger).
    parts["api_label"] = gr.Textbox(label="label", visible=False)
    parts["api_kind"] = gr.Textbox(label="label_kind", visible=False)
    parts["api_saved"] = gr.JSON(label="saved", visible=False)
    parts["api_trigger"] = gr.Button(visible=False, elem_id="fd-fb-api")
    parts["session"] = gr.State(FeedbackSession())
    return SimpleNamespace(**parts)


def wire_feedback(feedback: FeedbackEvents, row: SimpleNamespace, state, answered) -> None:
    """Each answer shows the row afresh; the buttons save or undo, each its own event (never on /classify's
    path), in their own concurrency group so saves never wait behind inference."""
    ui_only = dict(api_visibility="private", show_progress="hidden", concurrency_id="feedback-row",
                   concurrency_limit=None)
    reset = dict(fn=feedback.for_answer, inputs=[state, row.session],
                 outputs=[row.group, row.right, row.choice, row.other, row.not_right, row.status, row.undo,
                          row.session], **ui_only)
    for event in answered:
        event.then(**reset)
    row.choice.change(feedback.choice_changed, inputs=[row.choice], outputs=[row.other, row.not_right], **ui_only)
    saving = dict(outputs=[row.status, row.undo, row.session], api_visibility="private",
                  concurrency_id="feedback", concurrency_limit=FEEDBACK_CONCURRENCY)
    row.right.click(feedback.right, inputs=[state, row.session], **saving)
    row.not_right.click(feedback.not_right, inputs=[state, row.session, row.choice, row.other], **saving)
    row.undo.click(feedback.undo, inputs=[row.session], **saving)
    row.api_trigger.click(feedback.api_save, inputs=[state, row.session, row.api_label, row.api_kind],
                          outputs=[row.api_saved, row.session], api_name="feedback", concurrency_id="feedback",
                          concurrency_limit=FEEDBACK_CONCURRENCY)
