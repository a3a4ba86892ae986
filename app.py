"""Gradio app entry point (also what a Hugging Face Space runs): ``python app.py``.

Importing this module builds the UI but does not load the model; the first request (or the first page load)
does. Set FLOWERDEMO_MODEL to serve another model, GRADIO_SERVER_NAME / GRADIO_SERVER_PORT to change where it
listens, FLOWERDEMO_CONCURRENCY / FLOWERDEMO_QUEUE_SIZE / FLOWERDEMO_MAX_FILE_SIZE to tune the queue and uploads.
"""
from flowerdemo.ui import build_demo, launch_kwargs, preload_in_background

demo = build_demo()

if __name__ == "__main__":
    # Load the model while the server starts, so the first visitor does not wait for it (import stays cheap).
    preload_in_background(demo.flowerdemo_model)
    demo.launch(**launch_kwargs())
