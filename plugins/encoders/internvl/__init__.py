"""Built-in encoder plugin: InternVL (text, images, video) on transformers' native InternVL classes.

Registers specs and the `x2i convert-encoder internvl` command only; no torch here.
"""
from x2i_core import EncoderSpec, hookimpl

FACTORY = "x2i_plugins.encoders.internvl.encoder:InternVLEncoder"
MODALITIES = ("text", "image", "video")
MODEL_TYPES = ("internvl", "internvl_chat")


@hookimpl
def register_encoders(register):
    """InternVL3 1B/2B/8B (native -hf releases) and the paper's InternVL2.5-1B/4B (converted on first load)."""
    for name, checkpoint, summary in (
        ("internvl3-1b", "OpenGVLab/InternVL3-1B-hf", "InternVL3 1B (25 layers x 896): text, images, video"),
        ("internvl3-2b", "OpenGVLab/InternVL3-2B-hf", "InternVL3 2B (29 layers x 1536): text, images, video"),
        ("internvl3-8b", "OpenGVLab/InternVL3-8B-hf", "InternVL3 8B (29 layers x 3584): text, images, video"),
        ("internvl-1b", "OpenGVLab/InternVL2_5-1B",
         "InternVL2.5 1B (25 layers x 896; the paper's; converted to the native layout on first load)"),
        ("internvl-4b", "OpenGVLab/InternVL2_5-4B",
         "InternVL2.5 4B (37 layers x 2048; the paper's; converted to the native layout on first load)"),
        ("internvl", "OpenGVLab/InternVL3-1B-hf", "InternVL, 3-1B by default; pass any InternVL hub id or folder"),
    ):
        register(EncoderSpec(
            name, FACTORY, summary=summary, pretrained=checkpoint, modalities=MODALITIES, model_types=MODEL_TYPES,
        ))


@hookimpl
def register_commands(cli):
    """`x2i convert-encoder internvl SRC -o DIR`: an original InternVL checkpoint -> the native layout."""
    import click

    group = cli.commands.get("convert-encoder")
    if group is None:
        @click.group("convert-encoder")
        def group():
            """Convert an encoder checkpoint into the layout x2i loads."""
        cli.add_command(group)
    if not isinstance(group, click.Group):
        raise RuntimeError("another plugin registered `convert-encoder` as a command, not a group")

    @group.command("internvl")
    @click.argument("source")
    @click.option("-o", "--output", required=True, help="Folder to write the native (-hf layout) checkpoint to.")
    @click.option("--revision", default=None, help="Hub revision when SOURCE is a hub id.")
    def convert_internvl(source, output, revision):
        """Convert an original InternVL2.5 checkpoint (folder or hub id, model_type internvl_chat) into the
        native layout transformers' InternVL classes load (the -hf shape). Remote code is never run."""
        from .convert import convert_original, local_source

        written = convert_original(local_source(source, revision), output)
        click.echo(f"wrote {written}")
