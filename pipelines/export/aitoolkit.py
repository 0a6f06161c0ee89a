"""``--to ai-toolkit``: folders and the ``datasets:`` YAML fragment for ostris' ai-toolkit.

ai-toolkit walks ``folder_path`` for images (``toolkit/data_loader.py``: every file ending in .jpg,
.jpeg, .png, .webp, in subfolders too), finds a control image in each ``control_path`` by the
image's **stem** with the first of those extensions that exists
(``toolkit/dataloader_mixins.py``), reads ``<stem><caption_ext>`` beside the image (missing: an
empty caption), and repeats a dataset's file list ``num_repeats`` times; ``keep_tokens`` is per
dataset. So: one dataset per (repeat count, keep_tokens), images in ``images/GROUP/``, controls in
``control/GROUP/`` (outside ``folder_path``: the walk would train on them too).

Polarity: ai-toolkit trains edit-style models (Kontext, Qwen-Image-Edit, Flex) whose control image
is the picture to transform; a real sketch is black ink on white paper, so the drawings stay as the
shards hold them (``--invert`` for a ControlNet-style model).
"""

from __future__ import annotations

import json

from .target import Context, Target


def _yaml(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON scalar is a YAML flow scalar


class AiToolkit(Target):
    name = "ai-toolkit"
    invert = False
    polarity_reason = (
        "black ink on white, as stored: ai-toolkit's control image is the picture an edit model "
        "transforms, and the sketches people give it are black on white"
    )
    resolution = 1024  # Flux Kontext / Qwen-Image-Edit train at 512..1024
    keep_groups = True
    config_file = "datasets.yaml"
    control_dir = "control"  # ai-toolkit's control_path

    def finish(self, ctx: Context) -> None:
        lines = [
            f"# linepairs export: {len(ctx.groups)} datasets, one per (num_repeats, keep_tokens).",
            "# Paste under config.process[0] of your ai-toolkit job (see README.md).",
            "datasets:",
        ]
        for g in ctx.groups:
            lines += [
                f"  - folder_path: {_yaml(ctx.dest_path(f'images/{g.name}'))}",
                f"    control_path: {_yaml(ctx.dest_path(f'control/{g.name}'))}",
                '    caption_ext: "txt"',
                f"    num_repeats: {g.repeats}",
                f"    keep_tokens: {g.keep_tokens}",
                f"    resolution: [{ctx.resolution}]",
                "    cache_latents_to_disk: true",
            ]
        ctx.dest.write_bytes(self.config_file, ("\n".join(lines) + "\n").encode("utf-8"))

    def command(self, ctx: Context) -> str:
        return (
            f"# put the `datasets:` list of {ctx.dest_path(self.config_file)} under config.process[0]\n"
            "# of your job file (e.g. config/examples/train_lora_flux_kontext_24gb.yaml), then:\n"
            "python run.py config/my_lineart_job.yaml"
        )


TARGET = AiToolkit()
