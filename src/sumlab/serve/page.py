"""The web page (Gradio, mounted at / in the API's FastAPI app): Summarize with the served model; Explore runs.

The Summarize tab goes through the same endpoint as `POST /v1/summarize` (serve.api.SummarizeEndpoint: the same
checks, limits and dynamic batching), called in process. Everything the page needs is in the Gradio wheel: no CDN,
no fonts from the web, analytics off.
"""

from __future__ import annotations

import os
import secrets
from typing import Any, Callable, Optional

from sumlab.analysis.roots import Roots
from sumlab.config.serve import CLIENT_SETTINGS
from sumlab.serve import explore_tab

# Slider steps of the settings a client may change (the integers step by 1).
FLOAT_STEPS = {"length_penalty": 0.1, "repetition_penalty": 0.05}
# The summary is an output box, not greyed out as a disabled input; the Explore tab's marks.
CSS = "#summary textarea { color: var(--body-text-color); }" + explore_tab.CSS


def mount_page(app: Any, endpoint: Optional[Any], roots: list[str], api_key: Optional[str]) -> None:
    """The page at / of `app` (LitServe's plain-text index route gives way); with an API key the page asks for it."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # no telemetry from any of Gradio's parts (it reads it per call)
    import gradio as gr

    blocks = build_page(endpoint, Roots(roots))
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) != "/"]
    auth: Optional[Callable[[str, str], bool]] = None
    if api_key:
        auth = lambda _user, password: secrets.compare_digest(password.encode(), api_key.encode())  # noqa: E731
    gr.mount_gradio_app(app, blocks, path="/", auth=auth, auth_message="The server's API key (any user name)",
                        footer_links=[], run_history=False, ssr_mode=False, css=CSS)  # fmt: skip


def build_page(endpoint: Optional[Any], roots: Roots) -> Any:
    """The Blocks: a Summarize tab when a model is served (`endpoint`), and the Explore tab over `roots`."""
    import gradio as gr

    with gr.Blocks(title="sumlab", analytics_enabled=False) as page:
        gr.Markdown("# sumlab")
        with gr.Tabs():
            if endpoint is not None:
                with gr.Tab("Summarize", id="summarize"):
                    summarize_tab(endpoint)
            with gr.Tab("Explore", id="explore"):
                explore_tab.explore_tab(roots, page)
    return page


def summarize_tab(endpoint: Any) -> None:
    import gradio as gr

    defaults, limits = endpoint.engine.defaults, endpoint.limits
    text = gr.Textbox(label="Dialogue", lines=10, max_length=limits["max_chars"],
                      placeholder="#Person1#: Hello, how are you?\n#Person2#: Fine, thanks. ...")  # fmt: skip
    with gr.Accordion("Generation settings", open=False):
        with gr.Row():
            sliders = [
                gr.Slider(
                    *limits[k],
                    value=min(max(defaults[k], limits[k][0]), limits[k][1]),
                    step=FLOAT_STEPS.get(k, 1),
                    label=k,
                )  # fmt: skip
                for k in CLIENT_SETTINGS
            ]
    button = gr.Button("Summarize", variant="primary")
    summary = gr.Textbox(label="Summary", lines=4, interactive=False, elem_id="summary", buttons=["copy"])
    timing = gr.Markdown()

    async def summarize(dialogue: str, *values: float) -> tuple[str, str]:
        from fastapi import HTTPException

        from sumlab.serve.api import SummarizeRequest

        settings = {k: (float(v) if k in FLOAT_STEPS else int(v)) for k, v in zip(CLIENT_SETTINGS, values, strict=True)}
        try:
            answer = await endpoint.summarize(SummarizeRequest(text=dialogue, **settings))
        except HTTPException as ex:
            raise gr.Error(str(ex.detail)) from None
        t = answer.timing
        return answer.summary, (f"{t.total_seconds * 1000:.0f} ms ({t.generate_seconds * 1000:.0f} ms generating, "
                                f"in a batch of {t.batch_texts} text(s))")  # fmt: skip

    # No concurrency limit (Gradio's default is one at a time): concurrent visitors then share dynamic batches.
    button.click(summarize, [text, *sliders], [summary, timing], api_name=False, concurrency_limit=None)
