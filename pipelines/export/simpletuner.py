"""``--to simpletuner``: folders and a ``multidatabackend.json`` for SimpleTuner's ControlNet training.

SimpleTuner finds a conditioning image by the training image's path inside the conditioning
dataset's folder: the **same file name, extension included** (``helpers/multiaspect/sampler.py``
``get_conditioning_sample``; ``metadata/utils/duplicator.py``), so the illustration is written as a
PNG too (decoded from the shard's JPEG: lossless, no second JPEG generation) beside its drawing's
PNG of the same name. Captions: ``caption_strategy: textfile``, ``KEY.txt`` next to ``KEY.png``,
always present (a missing one is an error there; an empty one is an empty caption).

Weights: one image dataset (+ its conditioning dataset) per repeat count. ``repeats`` counts the
extra passes (SimpleTuner's 0 is kohya's 1: DATALOADER.md, ``repeats``), and ``probability`` is
proportional to the dataset's draws per epoch (samples x passes), so with the default uniform
``data_backend_sampling`` every dataset runs out at the same time and each sample is drawn in
proportion to its repeats.
"""

from __future__ import annotations

import json

from .target import Context, Target


class SimpleTuner(Target):
    name = "simpletuner"
    invert = True
    polarity_reason = (
        "white lines on black: the ControlNet convention (SimpleTuner's own canny conditioning "
        "generator writes white edges on black)"
    )
    resolution = 1024  # SimpleTuner is used mostly for SDXL, SD3 and Flux ControlNets
    empty_caption_file = True  # textfile: a missing .txt is an error, an empty one an empty caption
    config_file = "multidatabackend.json"

    def image_ext(self, build_ext: str) -> str:
        return "png"  # the conditioning's name, extension included

    def backends(self, ctx: Context) -> list[dict]:
        most = max((g.samples * g.repeats for g in ctx.groups), default=1)
        out = []
        for g in ctx.groups:
            image_id, cond_id = f"linepairs-{g.name}", f"linepairs-{g.name}-conditioning"
            out.append({
                "id": image_id,
                "type": "local",
                "dataset_type": "image",
                "instance_data_dir": ctx.dest_path(f"images/{g.name}"),
                "conditioning_data": cond_id,
                "caption_strategy": "textfile",
                "metadata_backend": "discovery",
                "repeats": g.repeats - 1,  # SimpleTuner: 0 = seen once per epoch
                "probability": round(g.samples * g.repeats / most, 9),
                "resolution": ctx.resolution,
                "resolution_type": "pixel_area",
                "minimum_image_size": 0,
                "crop": False,
                "cache_dir_vae": f"cache/vae/{image_id}",
            })  # fmt: skip
            out.append({
                "id": cond_id,
                "type": "local",
                "dataset_type": "conditioning",
                "instance_data_dir": ctx.dest_path(f"conditioning/{g.name}"),
                "metadata_backend": "discovery",
                "resolution": ctx.resolution,
                "resolution_type": "pixel_area",
                "minimum_image_size": 0,
                "crop": False,
            })  # fmt: skip
        out.append({"id": "linepairs-text-embeds", "type": "local", "dataset_type": "text_embeds",
                    "default": True, "cache_dir": "cache/text/linepairs"})  # fmt: skip
        return out

    def finish(self, ctx: Context) -> None:
        data = json.dumps(self.backends(ctx), indent=2, ensure_ascii=False) + "\n"
        ctx.dest.write_bytes(self.config_file, data.encode("utf-8"))

    def command(self, ctx: Context) -> str:
        return (
            "# config/config.json (SimpleTuner): set\n"
            f'#   "data_backend_config": {json.dumps(ctx.dest_path(self.config_file))},\n'
            '#   "controlnet": true, "model_family": "sdxl", "resolution": '
            f'{ctx.resolution}, "resolution_type": "pixel_area"\n'
            "simpletuner train"
        )


TARGET = SimpleTuner()
