"""The Blocks: layout, then wiring, then the queue. ``build_demo()`` builds without loading the model."""
from __future__ import annotations

import gradio as gr

from .assets import EXAMPLES_DIR, REFERENCES_DIR, example_files
from .events import make_auto_classify, make_classify, make_intro, make_model_info, rerender
from .presenters import (CAM_CLASSES, DEFAULT_OPACITY, DISCLAIMER, READY_MESSAGE, TOP_K, example_label,
                         intro_markdown)
from .runtime import (DEFAULT_QUEUE_SIZE, ENV_QUEUE_SIZE, as_lazy, concurrency_limit, env_int, max_file_size)

CACHE_LIFETIME = (1800, 3600)  # Gradio's delete_cache: (sweep every N s, delete files older than M s)


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
"""


def theme():
    # Soft ships its font locally (no Google Fonts request), and has light and dark palettes.
    return gr.themes.Soft(primary_hue="emerald", secondary_hue="pink", neutral_hue="slate")


def launch_kwargs(**overrides) -> dict:
    """Keyword arguments for ``demo.launch()`` (Gradio 6 takes theme and css here, not in ``gr.Blocks``).

    Server name and port are left to Gradio, which reads ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``.
    """
    kwargs = {"theme": theme(), "css": CSS, "max_file_size": max_file_size(), "show_error": False}
    kwargs.update(overrides)
    return kwargs


def build_demo(classifier_loader=None, top_k: int = TOP_K, cam_classes: int = CAM_CLASSES) -> gr.Blocks:
    """Build the app. ``classifier_loader``: a callable returning a ``FlowerClassifier`` (called lazily, once),
    a loaded classifier, or None for ``FlowerClassifier.load()`` (bundled weights or ``FLOWERDEMO_MODEL``)."""
    model = as_lazy(classifier_loader)
    classify = make_classify(model, top_k, cam_classes)

    # The reference thumbnails and examples never change: served from where they are, instead of Gradio hashing
    # and copying five thumbnails into its cache on every answer.
    gr.set_static_paths([str(REFERENCES_DIR), str(EXAMPLES_DIR)])
    # delete_cache: every 30 min, delete uploads and outputs older than 1 h from Gradio's cache (examples are kept).
    with gr.Blocks(title="Flower species recogniser", analytics_enabled=False, delete_cache=CACHE_LIFETIME) as demo:
        intro = gr.Markdown(intro_markdown(None), elem_id="fd-intro")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                image = gr.Image(label="Flower photo", type="filepath", image_mode=None,
                                 sources=["upload", "clipboard", "webcam"], height=300, elem_id="fd-image")
                identify = gr.Button("Identify", variant="primary", elem_id="fd-identify")
                files = example_files()
                examples = gr.Examples(examples=[[str(p)] for p in files], inputs=[image],
                                       example_labels=[example_label(p) for p in files], label="Examples",
                                       examples_per_page=12, cache_examples=False,
                                       api_visibility="private") if files else None
            with gr.Column(scale=1, min_width=300):
                verdict = gr.Markdown(READY_MESSAGE, label="Verdict", elem_id="fd-verdict", elem_classes=["fd-verdict"])
                # No big heading: the verdict above already names the top class (or says it is not a flower).
                label = gr.Label(num_top_classes=top_k, label="Top classes", show_heading=False, elem_id="fd-label")
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
        # A new photo runs the model by itself. Not image.change: Gradio 6.31 fires that twice when an upload
        # replaces a photo. image.input fires once per upload, paste, webcam capture or clear; an example click
        # only sets the value, so it gets its own follow-up event.
        auto = dict(fn=make_auto_classify(classify), inputs=[image, opacity], outputs=outputs, preprocess=False,
                    api_visibility="private", concurrency_id="model")
        identify.click(**auto)
        image.input(**auto)
        if examples is not None:
            examples.load_input_event.then(**auto)
        opacity.change(rerender, inputs=[state, opacity], outputs=[cams], api_visibility="private",
                       show_progress="hidden", concurrency_id="overlay")
        demo.load(make_model_info(model, top_k, cam_classes), outputs=[info], api_visibility="private",
                  show_progress="hidden")
        demo.load(make_intro(model), outputs=[intro], api_visibility="private", show_progress="hidden")

    demo.queue(default_concurrency_limit=concurrency_limit(), max_size=env_int(ENV_QUEUE_SIZE, DEFAULT_QUEUE_SIZE))
    demo.flowerdemo_model = model  # for tests and callers: demo.flowerdemo_model.loaded
    return demo
