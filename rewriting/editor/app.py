"""The editor's web page (Gradio): every event calls one `EditorSession` method and shows what it did.

Gradio (a maintained library made for model demos) gives the page, galleries, progress bars and server; the
brush canvas is our own (painter.py). The page is served from this machine only and makes no outbound calls
(analytics off, system fonts).
"""
from __future__ import annotations

import functools
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry calls

import gradio as gr  # noqa: E402

from .handlers import Choices, Handlers  # noqa: E402
from .painter import SCRIPT, TAKE_PAINTED, controls_html  # noqa: E402
from .session import MASK_KINDS, EditorSession  # noqa: E402

LAYER_METHODS = ("rank_one", "rank_n", "closed_form", "rank_one_original", "finetune_layer")


def build_app(session: EditorSession) -> gr.Blocks:
    """The page for one session (one user on this machine)."""
    handlers = Handlers(session)
    size = handlers.display_size
    methods = [m for m in session.method_configs if m in LAYER_METHODS] or list(session.method_configs)
    default_method = session.default_method if session.default_method in methods else methods[0]
    default_rank = int(session.method_configs[default_method].get("rank", 1))

    with gr.Blocks(title="rewriting editor", analytics_enabled=False, fill_width=True) as app:
        gr.Markdown("## Rewriting editor\nPaint the **context** (where the rule applies) on a few images, the "
                    "**copy** region on one image and the **paste** target on another, pressing **Mark region** "
                    "after each; then **Apply**: the generator's weights change so every image follows the rule.")
        status = gr.Markdown("Ready.", elem_id="status")
        image_id = gr.State(0)
        with gr.Row():
            with gr.Column(scale=3):
                gallery = gr.Gallery(handlers.gallery_items(0), label="Generated images (click one to paint on it)",
                                     columns=4, height=400, allow_preview=False, format="png", elem_id="gallery")
                with gr.Row():
                    page = gr.Number(0, label="Page", precision=0, minimum=0, elem_id="page")
                    previous_page = gr.Button("◀ Previous", elem_id="previous-page")
                    next_page = gr.Button("Next ▶", elem_id="next-page")
                with gr.Row():
                    id_box = gr.Number(0, label="Image id", precision=0, minimum=0, elem_id="image-id")
                    open_image = gr.Button("Open image", elem_id="open-image")
            with gr.Column(scale=3):
                kind = gr.Radio(list(MASK_KINDS), value="context", label="Paint the", elem_id="kind")
                gr.Markdown("Paint on the image, then press **Mark region**.")
                painter = gr.HTML(handlers.painter_value(0), elem_id="painter")
                gr.HTML(controls_html(size), elem_id="paint-controls")
                painted = gr.Textbox("", visible="hidden", elem_id="painted")
                with gr.Row():
                    mark = gr.Button("Mark region", variant="primary", elem_id="mark")
                    undo = gr.Button("Undo last context image", elem_id="undo-context")
                    clear = gr.Button("Clear this kind", elem_id="clear-kind")
            with gr.Column(scale=2):
                marked = gr.Gallery([], label="Marked regions", columns=3, height=220, allow_preview=False,
                                    format="png", elem_id="marked")
                marked_summary = gr.Markdown(handlers.marked_text(), elem_id="marked-summary")
                layer = gr.Dropdown(session.layer_numbers, value=session.default_layer, label="Layer", elem_id="layer")
                method = gr.Dropdown(methods, value=default_method, label="Method", elem_id="method")
                rank = gr.Number(default_rank, label="Rank", precision=0, minimum=1, elem_id="rank")
                apply_button = gr.Button("Apply", variant="primary", elem_id="apply")
        picker = None
        if session.segmenter is not None:
            with gr.Accordion("Pick by label: click a part of the open image to mark it", open=False):
                picker = gr.Image(handlers.picker_value(0), label=f"Labels: {', '.join(session.labels)}",
                                  interactive=False, format="png", height=size + 40, elem_id="picker")
        before = gr.Gallery([], label="Before (paste, context, held-out samples)", columns=10, height=170,
                            allow_preview=False, format="png", elem_id="before")
        after = gr.Gallery([], label="After", columns=10, height=170, allow_preview=False, format="png",
                           elem_id="after")
        with gr.Row():
            with gr.Column():
                rules_on = gr.CheckboxGroup([], label="Rule stack (ticked rules are on; they add up in order)",
                                            elem_id="rules")
                with gr.Row():
                    rule_choice = gr.Dropdown([], label="Rule", elem_id="rule-choice")
                    remove_rule = gr.Button("Remove rule", elem_id="remove-rule")
                    revert_all = gr.Button("Revert all (original weights)", elem_id="revert-all")
            with gr.Column():
                with gr.Row():
                    save_folder = gr.Textbox("", label=f"Save to folder (empty: a new one in {session.output_root})",
                                             elem_id="save-folder")
                    save_generator = gr.Checkbox(False, label="also save the edited generator")
                save_button = gr.Button("Save", elem_id="save")
                with gr.Row():
                    load_path = gr.Textbox("", label="Load a delta.safetensors, edit.json or saved folder",
                                           elem_id="load-path")
                    load_file = gr.File(label="…or drop a file", file_types=[".safetensors", ".json"], height=120)
                load_button = gr.Button("Load", elem_id="load")

        components = {"status": status, "image_id": image_id, "gallery": gallery, "page": page, "id_box": id_box,
                      "painter": painter, "marked": marked, "marked_summary": marked_summary, "before": before,
                      "after": after, "rules_on": rules_on, "rule_choice": rule_choice}
        if picker is not None:
            components["picker"] = picker

        def wire(handler, names):
            """A Gradio callback: the handler's named outputs on the named components (others unchanged)."""
            outputs = [components[name] for name in names if name in components]

            @functools.wraps(handler)  # Gradio reads the signature for gr.SelectData and gr.Progress
            def callback(*args, **kwargs):
                result = handler(*args, **kwargs)
                return {components[name]: (gr.update(choices=value.choices, value=value.value)
                                           if isinstance(value, Choices) else value)
                        for name, value in result.items() if name in components}
            return callback, outputs

        def on(event, handler, inputs, names):
            callback, outputs = wire(handler, names)
            event(callback, inputs, outputs)

        page_names = ["gallery", "page", "status"]
        open_names = ["painter", "image_id", "id_box", "status", "picker"]
        mask_names = ["marked", "marked_summary", "status"]
        stack_names = ["rules_on", "rule_choice", "gallery", "page", "status"]
        on(previous_page.click, lambda n: handlers.show_page(int(n or 0) - 1), page, page_names)
        on(next_page.click, lambda n: handlers.show_page(int(n or 0) + 1), page, page_names)
        on(page.submit, handlers.show_page, page, page_names)
        on(open_image.click, handlers.open_image, id_box, open_names)
        on(id_box.submit, handlers.open_image, id_box, open_names)

        def select_image(page_number, event: gr.SelectData):
            return handlers.select_image(page_number, event.index)
        on(gallery.select, select_image, page, open_names)
        callback, outputs = wire(handlers.mark_region, mask_names)
        mark.click(callback, [painted, kind], outputs, js=TAKE_PAINTED)
        if picker is not None:
            def pick(number, mask_kind, event: gr.SelectData):
                return handlers.pick_part(number, mask_kind, *event.index)
            on(picker.select, pick, [image_id, kind], mask_names)
        on(undo.click, handlers.undo_context, None, mask_names)
        on(clear.click, handlers.clear_kind, kind, mask_names)

        def apply(layer_number, method_name, rank_number, number, progress=gr.Progress(track_tqdm=True)):
            return handlers.apply(layer_number, method_name, rank_number, number, progress)
        on(apply_button.click, apply, [layer, method, rank, image_id],
           ["before", "after", "painter"] + stack_names)
        on(rules_on.input, handlers.toggle, rules_on, page_names)
        on(remove_rule.click, handlers.remove, rule_choice, stack_names)
        on(revert_all.click, handlers.revert, None, stack_names)
        on(save_button.click, handlers.save, [save_folder, save_generator], ["status"])
        on(load_button.click, handlers.load, [load_path, load_file], stack_names)
    return app


def theme() -> gr.themes.Base:
    """Gradio's default look with system fonts: the default theme would fetch Google Fonts."""
    system = ["ui-sans-serif", "system-ui", "sans-serif"]
    return gr.themes.Default(font=system, font_mono=["ui-monospace", "monospace"])


def launch(session: EditorSession, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Serve the page; returns (app, local url)."""
    app = build_app(session)
    app.queue(default_concurrency_limit=1)  # one model: edits run one at a time
    _, url, _ = app.launch(server_name=host, server_port=port, prevent_thread_lock=not block, inbrowser=False,
                           share=False, show_error=True, quiet=not block, theme=theme(), footer_links=[],
                           ssr_mode=False, pwa=False, mcp_server=False,
                           head=f"<script>{SCRIPT}</script>")
    return app, url
