"""Run by the sd-scripts environment (tests/sdscripts_env.py) with sd-scripts as the working
folder: feed a kohya export's dataset.toml through sd-scripts' own ``library/config_util.py`` the
way ``train_control_net.py`` does (ConfigSanitizer, BlueprintGenerator,
generate_dataset_group_by_blueprint, which builds the buckets), count each image's draws in one
epoch and load every pair through the dataset's own ``__getitem__`` (image, conditioning image,
caption). Prints JSON.

    python sdscripts_load.py DATASET_TOML TOKENIZER_CACHE MIN_STEPS
"""

import json
import sys

import train_control_net  # sd-scripts' script: its argument parser
from library import config_util, strategy_base, strategy_sd, train_util
from library.config_util import BlueprintGenerator, ConfigSanitizer


def main(dataset_config: str, tokenizer_cache: str, min_steps: int) -> dict:
    parser = train_control_net.setup_parser()
    args = parser.parse_args(
        ["--dataset_config", dataset_config, "--tokenizer_cache_dir", tokenizer_cache,
         "--pretrained_model_name_or_path", "unused", "--output_dir", "unused", "--max_data_loader_n_workers", "0"]
    )  # fmt: skip
    train_util.prepare_dataset_args(args, True)
    # as train_control_net.train(): strategies first (the tokenizer comes from the cache folder)
    strategy_base.TokenizeStrategy.set_strategy(
        strategy_sd.SdTokenizeStrategy(args.v2, args.max_token_length, args.tokenizer_cache_dir)
    )
    strategy_base.LatentsCachingStrategy.set_strategy(
        strategy_sd.SdSdxlLatentsCachingStrategy(True, False, 1, False)
    )
    user_config = config_util.load_user_config(args.dataset_config)
    blueprint = BlueprintGenerator(ConfigSanitizer(False, False, True, True)).generate(user_config, args)
    group, _ = config_util.generate_dataset_group_by_blueprint(blueprint.dataset_group)
    group.verify_bucket_reso_steps(min_steps)

    images, drawn = {}, {}
    for dataset in group.datasets:
        dataset.set_current_strategies()
        delegate = dataset.dreambooth_dataset_delegate
        for subset in delegate.subsets:
            for key, info in delegate.image_data.items():
                if delegate.image_to_subset[key] is subset:
                    images[info.absolute_path] = {
                        "bucket": list(info.bucket_reso), "size": list(info.image_size),
                        "conditioning": info.cond_img_path, "repeats": info.num_repeats, "caption": info.caption,
                        "keep_tokens": subset.keep_tokens, "image_dir": subset.image_dir,
                    }  # fmt: skip
        # Draws per epoch from the bucket lists (an image is listed num_repeats times); every pair
        # is loaded once, through __getitem__, at the first batch that holds it.
        for index in range(len(dataset)):
            where = delegate.buckets_indices[index]
            bucket = delegate.bucket_manager.buckets[where.bucket_index]
            start = where.batch_index * where.bucket_batch_size
            keys = bucket[start : start + where.bucket_batch_size]
            paths = [delegate.image_data[key].absolute_path for key in keys]
            for path in paths:
                drawn.setdefault(path, {"count": 0})["count"] += 1
            if all("image_chw" in drawn[p] for p in paths):
                continue
            example = dataset[index]  # loads the images and the conditioning images
            for j, path in enumerate(paths):
                drawn[path]["image_chw"] = list(example["images"][j].shape)
                drawn[path]["conditioning_chw"] = list(example["conditioning_images"][j].shape)
                drawn[path]["caption"] = example["captions"][j]
    return {"images": images, "drawn": drawn, "batches": sum(len(d) for d in group.datasets)}


if __name__ == "__main__":
    json.dump(main(sys.argv[1], sys.argv[2], int(sys.argv[3])), sys.stdout)
