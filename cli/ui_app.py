"""The page of `x2i ui` (Gradio): a Generate tab and a Chat tab over one UIRunner (x2i_cli.ui_runner).

Errors a user can cause (X2IError: a corrupt upload, a bad size, a wrong AlignNet) show on the page as one line;
anything else shows its type and first line, with the traceback on the server's console.
"""
from __future__ import annotations

import functools
import logging
import os
import re

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # never phone home: the UI runs on loopback, offline
import gradio as gr  # noqa: E402

from x2i_cli.ui_runner import Adapters, Models, Options, UIRunner  # noqa: E402
from x2i_core import InputError, MultimodalPrompt, PromptPart, X2IError, first_line  # noqa: E402

log = logging.getLogger("x2i.ui")
GALLERY_HELP = "Each PNG carries its prompt, seed, steps and model names in its metadata (download to keep them)."


def _readable(message: str) -> str:
    """The line without Gradio's upload folders: an upload is named by its own file name."""
    from gradio.utils import get_upload_folder

    return re.sub(re.escape(str(get_upload_folder())) + r"/[0-9a-f]+/", "", message)


def page_errors(fn):
    """Show X2IError (and anything unexpected) as an error on the page, in one line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except X2IError as exc:
            raise gr.Error(_readable(first_line(str(exc))), duration=None, print_exception=False) from exc
        except Exception as exc:  # a bug, not the user's input: keep the traceback for the console
            log.exception("x2i ui: unexpected error")
            message = _readable(f"{type(exc).__name__}: {first_line(str(exc))}")
            raise gr.Error(message, duration=None, print_exception=False) from exc

    return wrapper


def build_prompt(text: str, images, video, audio) -> MultimodalPrompt:
    """Uploads first (images, the video, the audio clip), then the text: the order `x2i generate` uses."""
    parts = [PromptPart("image", str(p)) for p in (images or [])]
    parts += [PromptPart("video", str(video))] if video else []
    parts += [PromptPart("audio", str(audio))] if audio else []
    if text and text.strip():
        parts.append(PromptPart("text", text))
    return MultimodalPrompt(tuple(parts))


def _number(value, cast=float, what: str = "a number"):
    """None for an empty field, else the value as a number (one clear line when it is not one)."""
    if value is None or str(value).strip() == "":
        return None
    try:
        return cast(float(str(value).strip()))
    except ValueError:
        raise InputError(f"{what} must be a number, got {value!r}") from None


def _options(seed, steps, width, height, num_images, guidance, true_cfg, negative) -> Options:
    return Options(seed=int(seed or 0), steps=_number(steps, int) or None, width=_number(width, int) or None,
                   height=_number(height, int) or None, num_images=int(num_images or 1),
                   guidance=_number(guidance, what="guidance"), true_cfg=_number(true_cfg, what="true CFG"),
                   negative_prompt=negative or "")


def _progress_callbacks(progress):
    """on_load / on_phase / on_step for X2IPipeline that drive the page's progress bar."""
    def on_load(what):
        progress(0.0, desc=f"loading {what}")

    def on_phase(name):
        progress(0.0 if name == "encode" else 1.0 if name == "decode" else 0.05, desc=name)

    def on_step(i, total):
        progress((i, total), desc="denoise", unit="steps")

    return on_load, on_phase, on_step


def _caption(path) -> str:
    from x2i_core.generate import read_metadata

    meta = read_metadata(path)
    return f"seed {meta.get('seed', '?')} - {meta.get('width', '?')}x{meta.get('height', '?')}"


def build_app(runner: UIRunner, *, steps: int | None = None) -> gr.Blocks:
    """The Blocks app; `steps` pre-fills the steps field (0 = the backbone's default)."""
    models = runner.default_models()
    encoders, backbones, aligners = (runner.registered(k) for k in ("encoder", "backbone", "aligner"))

    with gr.Blocks(title="x2i", analytics_enabled=False) as app:
        gr.Markdown("## x2i: any prompt to image\nText in any language, images, a video, audio - or a mix. "
                    "Uploads come first, then the text.")
        with gr.Row():
            encoder = gr.Dropdown(encoders, value=models.encoder or None, label="Encoder (name or folder)",
                                  allow_custom_value=True, elem_id="x2i-encoder")
            backbone = gr.Dropdown(backbones, value=models.backbone or None, label="Backbone (name or folder)",
                                   allow_custom_value=True, elem_id="x2i-backbone")
            aligner = gr.Dropdown(aligners, value=models.aligner or None, label="AlignNet (name, folder or hub id)",
                                  allow_custom_value=True, elem_id="x2i-aligner")
        with gr.Accordion("Checkpoints (optional: a folder or hub id overriding the name's default)", open=False):
            with gr.Row():
                encoder_path = gr.Textbox(label="Encoder checkpoint", value=models.encoder_path)
                backbone_path = gr.Textbox(label="Backbone checkpoint", value=models.backbone_path)
        model_inputs = [encoder, backbone, aligner, encoder_path, backbone_path]

        with gr.Accordion("Sampling", open=True):
            with gr.Row():
                seed = gr.Number(0, label="Seed", precision=0, elem_id="x2i-seed")
                step_box = gr.Number(steps or 0, label="Steps (0 = default)", precision=0, minimum=0,
                                     elem_id="x2i-steps")
                width = gr.Number(0, label="Width (0 = default)", precision=0, minimum=0)
                height = gr.Number(0, label="Height (0 = default)", precision=0, minimum=0)
                num_images = gr.Slider(1, 8, value=1, step=1, label="Images")
            with gr.Row():
                guidance = gr.Textbox(label="Guidance (empty = the backbone's)", elem_id="x2i-guidance")
                true_cfg = gr.Textbox(label="True CFG (empty = the backbone's, 1 = off)", elem_id="x2i-true-cfg")
                negative = gr.Textbox(label="Negative prompt (with true CFG)")
        option_inputs = [seed, step_box, width, height, num_images, guidance, true_cfg, negative]

        with gr.Tab("Generate"):
            _generate_tab(runner, model_inputs, option_inputs)
        with gr.Tab("Chat"):
            _chat_tab(runner, model_inputs, option_inputs)
    return app


def _generate_tab(runner: UIRunner, model_inputs, option_inputs) -> None:
    with gr.Row():
        with gr.Column(scale=3):
            text = gr.Textbox(label="Prompt", lines=3, placeholder="a red fox in the snow", elem_id="x2i-prompt")
            with gr.Row():
                images = gr.File(label="Images (the MLLM reads them)", file_count="multiple", file_types=["image"],
                                 elem_id="x2i-images")
                video = gr.File(label="Video", file_types=["video"], elem_id="x2i-video")
                audio = gr.Audio(label="Audio (upload or microphone)", sources=["upload", "microphone"],
                                 type="filepath", elem_id="x2i-audio")
            with gr.Row():
                reason = gr.Checkbox(label="Reason first: the encoder answers, and the image is drawn from its answer")
                video_sound = gr.Checkbox(label="Hear the video's sound track too (encoders that hear)")
            with gr.Accordion("Adapters: LoRA, ControlNet, img2img / inpaint / outpaint, IP-Adapter", open=False):
                with gr.Row():
                    lora = gr.File(label="LoRA (.safetensors)", file_types=[".safetensors"])
                    lora_scale = gr.Slider(0, 2, value=1.0, step=0.05, label="LoRA scale")
                with gr.Row():
                    controlnet = gr.Textbox(label="ControlNet (folder or hub id)")
                    control_image = gr.File(label="Control image", file_types=["image"])
                    control_mode = gr.Textbox(label="Union mode (index, empty = none)")
                    control_scale = gr.Slider(0, 2, value=1.0, step=0.05, label="Control scale")
                with gr.Row():
                    init_image = gr.File(label="Init image (img2img)", file_types=["image"])
                    strength = gr.Slider(0.01, 1.0, value=0.8, step=0.01, label="Strength")
                    mask = gr.File(label="Mask (white = repaint)", file_types=["image"])
                    outpaint = gr.Textbox(label="Outpaint margins L,T,R,B (px)")
                with gr.Row():
                    ip_adapter = gr.Textbox(label="IP-Adapter (folder or hub id)")
                    ip_image = gr.File(label="IP-Adapter reference image", file_types=["image"])
                    ip_scale = gr.Slider(0, 2, value=1.0, step=0.05, label="IP-Adapter scale")
            button = gr.Button("Generate", variant="primary", elem_id="x2i-generate")
        with gr.Column(scale=2):
            gallery = gr.Gallery(label="Images", type="filepath", columns=2, elem_id="x2i-gallery")
            info = gr.Textbox(label="Details", interactive=False, lines=3, elem_id="x2i-info")
            gr.Markdown(GALLERY_HELP)
    adapter_inputs = [lora, lora_scale, controlnet, control_image, control_mode, control_scale, init_image,
                      strength, mask, outpaint, ip_adapter, ip_image, ip_scale]

    @page_errors
    def run(text, images, video, audio, reason, video_sound, *rest, progress=gr.Progress()):
        models = Models(*(str(v or "").strip() for v in rest[:5]))
        options = _options(*rest[5:13])
        (lora, lora_scale, controlnet, control_image, control_mode, control_scale, init_image, strength, mask,
         outpaint, ip_adapter, ip_image, ip_scale) = rest[13:]
        adapters = Adapters(lora=lora, lora_scale=lora_scale, controlnet=controlnet or "", control_image=control_image,
                            control_mode=control_mode or "", control_scale=control_scale, init_image=init_image,
                            strength=strength if init_image else None, mask=mask, outpaint=outpaint or "",
                            ip_adapter=ip_adapter or "", ip_image=ip_image, ip_scale=ip_scale)
        on_load, on_phase, on_step = _progress_callbacks(progress)
        paths, answer = runner.generate(build_prompt(text, images, video, audio), models, adapters, options,
                                        reason=bool(reason), video_sound=bool(video_sound), on_load=on_load,
                                        on_phase=on_phase, on_step=on_step)
        lines = [f"saved {p}" for p in paths] + ([f"answer: {answer}"] if answer else [])
        return [(str(p), _caption(p)) for p in paths], "\n".join(lines)

    button.click(run, [text, images, video, audio, reason, video_sound, *model_inputs, *option_inputs,
                       *adapter_inputs],
                 [gallery, info], concurrency_limit=1)


def _chat_tab(runner: UIRunner, model_inputs, option_inputs) -> None:
    gr.Markdown("Each message gets an answer, and an image drawn from the whole dialogue so far "
                "(the encoder must be able to answer).")
    session = gr.State(None)
    with gr.Row():
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(label="Dialogue", elem_id="x2i-chat", height=380)
            text = gr.Textbox(label="Message", elem_id="x2i-chat-text")
            with gr.Row():
                media = gr.File(label="Attach images, videos or audio", file_count="multiple")
                mic = gr.Audio(label="Or speak", sources=["microphone", "upload"], type="filepath")
            with gr.Row():
                send = gr.Button("Send", variant="primary", elem_id="x2i-chat-send")
                again = gr.Button("Draw again")
                reset = gr.Button("New dialogue")
        with gr.Column(scale=2):
            gallery = gr.Gallery(label="Images of the dialogue", type="filepath", columns=2, elem_id="x2i-chat-gallery")

    @page_errors
    def on_send(state, history, shown, text, media, mic, *rest, progress=gr.Progress()):
        if state is None:
            on_load, _, _ = _progress_callbacks(progress)
            models = Models(*(str(v or "").strip() for v in rest[:5]))
            state = runner.new_chat(models, _options(*rest[5:13]), on_load=on_load)
        progress(0.1, desc="answering and drawing")
        files = [str(p) for p in (media or [])] + ([str(mic)] if mic else [])
        answer, paths = runner.chat_send(state, text or "", files)
        history = [*(history or []), {"role": "user", "content": text or "(attachments)"},
                   {"role": "assistant", "content": answer}]
        shown = [*(shown or []), *((str(p), f"turn {len(state.turns)}") for p in paths)]
        return state, history, shown, shown, "", None, None

    @page_errors
    def on_again(state, history, shown, progress=gr.Progress()):
        if state is None:
            raise gr.Error("nothing to draw again yet: send a message first", print_exception=False)
        progress(0.1, desc="drawing again")
        paths = runner.chat_again(state)
        shown = [*(shown or []), *((str(p), f"turn {len(state.turns)}, again") for p in paths)]
        return shown, shown

    shown_state = gr.State([])
    send.click(on_send, [session, chatbot, shown_state, text, media, mic, *model_inputs, *option_inputs],
               [session, chatbot, shown_state, gallery, text, media, mic], concurrency_limit=1)
    again.click(on_again, [session, chatbot, shown_state], [shown_state, gallery], concurrency_limit=1)
    reset.click(lambda: (None, [], [], []), None, [session, chatbot, shown_state, gallery])
