"""Gradio app entry point (also what a Hugging Face Space runs): ``python app.py``.

Importing this module builds the UI but does not load the model; the first request (or the first page load)
does. Every FLOWERDEMO_* variable is read once, here, into one Settings (flowerdemo/serve/settings.py lists them):
FLOWERDEMO_MODEL to serve another model, FLOWERDEMO_CONCURRENCY / FLOWERDEMO_QUEUE_SIZE / FLOWERDEMO_MAX_FILE_SIZE
to tune the queue and uploads, FLOWERDEMO_FEEDBACK* for the "Is this right?" row (off, where answers go, saves a
minute); a bad value stops the app here, naming the variable. GRADIO_SERVER_NAME / GRADIO_SERVER_PORT change
where it listens.
"""
from flowerdemo.serve.settings import Settings
from flowerdemo.ui import build_demo, launch_kwargs, preload_in_background

settings = Settings.from_env()
demo = build_demo(settings=settings)

if __name__ == "__main__":
    # Serve the page first, then load the model in the background: loading it while the server started (same
    # 2 cores, same interpreter lock) delayed the first page by seconds. A request that comes before the model
    # is ready waits for it; the page's own model panel says "Loading the model…" meanwhile.
    demo.launch(prevent_thread_lock=True, **launch_kwargs(settings))
    preload_in_background(demo.flowerdemo_model, demo.flowerdemo_feedback)
    demo.block_thread()
