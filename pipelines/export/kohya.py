"""``--to kohya``: folders and a ``dataset.toml`` for sd-scripts' ``train_control_net.py`` and
``sdxl_train_control_net_lllite.py`` (read by its own ``library/config_util.py``).

Layout: ``images/GROUP/KEY.jpg`` with ``images/GROUP/KEY.txt`` (the caption; no file for a sample
without tags: sd-scripts stops on an empty caption file and trains a missing one with an empty
caption), ``conditioning/GROUP/KEY.png`` of the same size (sd-scripts pairs by file stem and refuses
missing and extra conditioning files). A GROUP is one subset: one ``num_repeats`` (sd-scripts knows
no per-sample weight) and one ``keep_tokens`` (the identity tags kept in front when
``shuffle_caption`` shuffles the rest). Held-out samples go to ``validation/``, outside every subset.

Buckets: ``bucket_no_upscale`` with the dataset's ``resolution`` set to the build's largest bucket,
so sd-scripts gives every image a bucket of exactly its own size (our sides are multiples of
``buckets.step``; ``bucket_reso_steps`` is that step).
"""

from __future__ import annotations

import shlex

from .target import Context, Target, toml_string


class Kohya(Target):
    name = "kohya"
    invert = True
    polarity_reason = (
        "white lines on black: the convention of ControlNet 1.1's line-art models and of kohya's own "
        "LLLite examples (a Canny map is white lines on black)"
    )
    resolution = 512  # train_control_net.py is SD 1.x; LLLite (SDXL) wants --resolution 1024
    keep_groups = True
    config_file = "dataset.toml"

    def dataset_resolution(self, ctx: Context) -> tuple[int, int]:
        """The largest bucket (by area, then the squarest): every bucket fits in its area, so
        ``bucket_no_upscale`` keeps each image at its own size."""
        return max(ctx.buckets, key=lambda b: (b[0] * b[1], -abs(b[0] - b[1]), b[0]))

    def finish(self, ctx: Context) -> None:
        w, h = self.dataset_resolution(ctx)
        sides = [s for b in ctx.buckets for s in b]
        lines = [
            f"# linepairs export: {len(ctx.groups)} subsets, one per (num_repeats, keep_tokens);",
            f"# {ctx.train} images, {ctx.draws} per epoch. See README.md and export.json.",
            "",
            "[general]",
            "shuffle_caption = true  # keep_tokens (the identity tags) stay in front; the rest are shuffled",
            'caption_extension = ".txt"',
            "",
            "[[datasets]]",
            f"resolution = [{w}, {h}]  # the largest bucket: every image keeps its own size",
            "batch_size = 1",
            "enable_bucket = true",
            "bucket_no_upscale = true",
            f"bucket_reso_steps = {ctx.bucket_step}",
            f"min_bucket_reso = {min(sides)}",
            f"max_bucket_reso = {max(max(sides), w, h)}",
        ]
        for g in ctx.groups:
            lines += [
                "",
                "  [[datasets.subsets]]",
                f"  image_dir = {toml_string(ctx.dest_path(f'images/{g.name}'))}",
                f"  conditioning_data_dir = {toml_string(ctx.dest_path(f'conditioning/{g.name}'))}",
                '  caption_extension = ".txt"',
                f"  num_repeats = {g.repeats}",
                f"  keep_tokens = {g.keep_tokens}",
            ]
        ctx.dest.write_bytes(self.config_file, ("\n".join(lines) + "\n").encode("utf-8"))
        if ctx.bucket_step % 64:
            ctx.notes.append(
                f"the build's buckets are multiples of {ctx.bucket_step}, not 64: train_control_net.py "
                "wants bucket_reso_steps divisible by 64 (the SDXL scripts take 32); build with "
                "`[buckets] step = 64` for it"
            )

    def command(self, ctx: Context) -> str:
        config = shlex.quote(ctx.dest_path(self.config_file))
        if ctx.resolution >= 1024:  # SDXL: LLLite
            return " \\\n  ".join([
                "accelerate launch sdxl_train_control_net_lllite.py",
                "--pretrained_model_name_or_path=stabilityai/stable-diffusion-xl-base-1.0",
                f"--dataset_config={config}",
                "--output_dir=lllite --output_name=lineart-lllite --save_model_as=safetensors",
                "--network_dim=64 --cond_emb_dim=32 --learning_rate=2e-4 --optimizer_type=AdamW8bit",
                "--max_train_epochs=1 --mixed_precision=bf16 --cache_latents --gradient_checkpointing",
            ])  # fmt: skip
        return " \\\n  ".join([
            "accelerate launch train_control_net.py",
            "--pretrained_model_name_or_path=stable-diffusion-v1-5/stable-diffusion-v1-5",
            f"--dataset_config={config}",
            "--output_dir=controlnet --output_name=lineart-controlnet --save_model_as=safetensors",
            "--learning_rate=1e-5 --max_train_epochs=1 --mixed_precision=fp16 --cache_latents",
        ])  # fmt: skip


TARGET = Kohya()
