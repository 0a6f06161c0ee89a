"""``--to diffusers``: a folder ``load_dataset(DEST)`` reads for ``examples/controlnet/train_controlnet.py``.

Layout: ``train/images/KEY.jpg``, ``train/conditioning/KEY.png`` and ``train/metadata.jsonl`` (HF
imagefolder: ``image_file_name`` -> column ``image``, ``conditioning_image_file_name`` -> column
``conditioning_image``, ``text``), the same under ``validation/`` with ``--val``. The script shuffles
uniformly, so the weights become row multiplicity: a sample drawn k times per epoch has k rows
(a draw list; its files are written once). README.md is the HF dataset card: its YAML names the
splits, the exact features and a fingerprint of the rows, so HF's cache never serves another export.
"""

from __future__ import annotations

import hashlib
import json
import shlex

import pyarrow.compute as pc

from .target import TRAIN, VALIDATION, Context, Placement, Target, readme_text

FEATURES = [
    {"name": "image", "dtype": "image"},
    {"name": "conditioning_image", "dtype": "image"},
    {"name": "text", "dtype": "string"},
    {"name": "key", "dtype": "string"},
    {"name": "source", "dtype": "string"},
    {"name": "extractor", "dtype": "string"},
]


COLUMNS = ["image", "conditioning", "caption", "key", "source", "extractor", "repeats"]


def metadata_line(row: dict) -> bytes:
    """One metadata.jsonl row; file names are relative to the split's folder."""
    entry = {
        # "image_file_name", not "file_name": HF gives a bare file_name to the first image feature
        # it meets, which is not `image` when the card declares conditioning_image first
        "image_file_name": row["image"].split("/", 1)[1],
        "conditioning_image_file_name": row["conditioning"].split("/", 1)[1],
        "text": row["caption"],
        "key": row["key"],
        "source": row["source"],
        "extractor": row["extractor"],
    }
    return json.dumps(entry, ensure_ascii=False, sort_keys=True).encode("utf-8") + b"\n"


class Diffusers(Target):
    name = "diffusers"
    invert = True
    polarity_reason = (
        "white lines on black: the convention of ControlNet 1.1's line-art models (start from them with "
        "--controlnet_model_name_or_path) and of the line-art preprocessors used at inference"
    )
    resolution = 512  # train_controlnet.py trains SD 1.x / 2.x ControlNets (SDXL: train_controlnet_sdxl.py)
    levels_limited = False  # rows: any count
    config_file = "README.md"

    def group(self, repeats: int, keep_tokens: int) -> str:
        return ""  # one folder per split; the repeats are rows of metadata.jsonl

    def place(self, key: str, split: str, group: str, image_ext: str) -> Placement:
        return Placement(f"{split}/images/{key}.{image_ext}", f"{split}/conditioning/{key}.png", None)

    def finish(self, ctx: Context) -> None:
        digest = hashlib.sha256()
        for split in (TRAIN, VALIDATION):
            if (ctx.train if split == TRAIN else ctx.validation) == 0:
                continue
            with ctx.dest.open_output(f"{split}/metadata.jsonl") as fh:
                for table in ctx.iter_parts():
                    rows = table.filter(pc.equal(table["fate"], split))
                    for r in rows.select(COLUMNS).to_pylist():
                        data = metadata_line(r) * (r["repeats"] if split == TRAIN else 1)
                        fh.write(data)
                        digest.update(data)
        ctx.facts["rows_sha256"] = digest.hexdigest()

    def card(self, ctx: Context) -> dict:
        files = [{"split": TRAIN, "path": f"{TRAIN}/**"}]
        if ctx.validation:
            files.append({"split": VALIDATION, "path": f"{VALIDATION}/**"})
        return {
            "configs": [
                {
                    "config_name": "default",
                    "description": f"linepairs export; rows sha256 {ctx.facts['rows_sha256']}",
                    "data_files": files,
                }
            ],
            "dataset_info": {"config_name": "default", "features": FEATURES},
        }

    def command(self, ctx: Context) -> str:
        args = [
            "accelerate launch train_controlnet.py",
            "--pretrained_model_name_or_path=stable-diffusion-v1-5/stable-diffusion-v1-5",
            f"--train_data_dir={shlex.quote(ctx.dest.out)}",
            "--image_column=image --conditioning_image_column=conditioning_image --caption_column=text",
            f"--resolution={ctx.resolution} --train_batch_size=4 --learning_rate=1e-5",
            "--num_train_epochs=1 --checkpointing_steps=5000 --output_dir=controlnet",
        ]
        for image, prompt in ctx.validation_pairs[:2]:
            args.append(f"--validation_image={shlex.quote(image)} --validation_prompt={shlex.quote(prompt)}")
        return " \\\n  ".join(args)

    def readme(self, ctx: Context, command: str) -> str:
        front = "---\n" + json.dumps(self.card(ctx), indent=1) + "\n---\n"
        extra = (
            "`load_dataset(DEST)` gives the `train` split"
            + (" and `validation`" if ctx.validation else "")
            + " with columns `image`, `conditioning_image`, `text` (and `key`, `source`, `extractor`).\n"
            "A sample has as many `train` rows as its weight asks for draws per epoch: one epoch of the\n"
            "script is one weighted pass. The script resizes the short side to `--resolution` and\n"
            "centre-crops a square.\n\n"
        )
        return front + readme_text(self.name, command, ctx, extra)


TARGET = Diffusers()
