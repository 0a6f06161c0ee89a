"""Learned scorers (curation/scorers): strict loading of the published layouts, and fidelity of our
preprocessing + model against the reference pipelines (timm's own model and transform, the published
preprocessing re-implemented from its description) with seeded random weights."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from curation import scorers
from curation.decode import decode_image
from groundwork.checkpoints import WeightsError

from .conftest import gradient_image
from .scorer_checkpoints import CLIP_MEAN, CLIP_STD, WD_VARIANTS, write_aesthetic, write_wd_tagger


@pytest.fixture(scope="module")
def images(corpus) -> list[np.ndarray]:
    """Real corpus art (portrait, landscape, alpha) and two odd-sized generated images."""
    out = []
    for name in ("anime2sketch_001.jpg", "style2paints_021.png", "danbooregion_007.png"):
        with open(os.path.join(corpus, name), "rb") as fh:
            out.append(decode_image(fh.read()).rgb)
    return out + [gradient_image(301, 200, seed=3), gradient_image(199, 333, seed=4)]


def test_registry_lists_both_and_checks_options():
    assert {"aesthetic", "wd_tagger"} <= set(scorers.available()) and scorers.available() == sorted(
        scorers.available()
    )
    assert scorers.info("wd_tagger").columns == ("pred_tags", "pred_tag_probs", "pred_rating")
    with pytest.raises(TypeError, match="no option"):
        scorers.check_options("wd_tagger", {"treshold": 0.3})
    with pytest.raises(ValueError, match="variant must be one of"):
        scorers.check_options("wd_tagger", {"variant": "resnet"})
    with pytest.raises(ValueError, match="threshold"):
        scorers.check_options("wd_tagger", {"threshold": 1.5})
    with pytest.raises(
        scorers.UnknownScorerError, match="available: aesthetic, anime_classify, anime_real, dbaesthetic"
    ):
        scorers.create("clip_score")


# ----------------------------------------------------------------------------------- wd_tagger


def _wd_reference(folder: str, cfg: dict, images: list[np.ndarray]) -> np.ndarray:
    """The model card's timm pipeline: timm's model + resolve_data_config/create_transform on the
    white-padded square, channels flipped to BGR, sigmoid."""
    import timm
    from safetensors.torch import load_file
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model(cfg["architecture"], pretrained=False, num_classes=cfg["num_classes"],
                              **cfg["model_args"])  # fmt: skip
    model.load_state_dict(load_file(os.path.join(folder, "model.safetensors")), strict=True)
    model.eval()
    transform = create_transform(**resolve_data_config(pretrained_cfg=cfg["pretrained_cfg"]))
    out = []
    for rgb in images:
        img = Image.fromarray(rgb)
        side = max(img.size)
        canvas = Image.new("RGB", (side, side), (255, 255, 255))
        canvas.paste(img, ((side - img.size[0]) // 2, (side - img.size[1]) // 2))
        x = transform(canvas).unsqueeze(0)[:, [2, 1, 0]]
        with torch.no_grad():
            out.append(torch.sigmoid(model(x)).numpy()[0])
    return np.stack(out)


@pytest.mark.parametrize("variant", sorted(WD_VARIANTS))
def test_wd_tagger_matches_the_timm_reference(variant, images, tmp_path, one_torch_thread):
    folder = str(tmp_path / variant)
    cfg = write_wd_tagger(folder, variant, seed=7)
    tagger = scorers.create("wd_tagger", weights=folder, threshold=0.5, batch_size=2)
    ours = tagger.probabilities(images)
    ref = _wd_reference(folder, cfg, images)
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    assert ref.std() > 0.05, "random weights this flat would not test the preprocessing"

    # Columns from those probabilities: general tags over the threshold, most probable first; the rating row argmax.
    names = [n for n in tagger.names]
    cols = tagger(images)
    for i, p in enumerate(ref):
        want = [(names[j], p[j]) for j in tagger.general if p[j] >= 0.5]
        want.sort(key=lambda t: -t[1])
        assert cols["pred_tags"][i] == [n for n, _ in want]
        np.testing.assert_allclose(cols["pred_tag_probs"][i], [q for _, q in want], atol=2e-5)
        assert not any(
            t.startswith("character_") or t in ("general", "explicit") for t in cols["pred_tags"][i]
        )
        assert cols["pred_rating"][i] == "gsqe"[int(np.argmax(p[:4]))]
    assert tagger.files["model.safetensors"] and tagger.details["architecture"] == WD_VARIANTS[variant][0]


def test_wd_preprocessing_is_exact_pixels(images, tmp_path):
    """Padding and resizing alone match PIL's to the byte (odd sizes included)."""
    folder = str(tmp_path / "vit")
    write_wd_tagger(folder, "vit")
    tagger = scorers.create("wd_tagger", weights=folder)
    for rgb in images:
        img = Image.fromarray(rgb)
        side = max(img.size)
        canvas = Image.new("RGB", (side, side), (255, 255, 255))
        canvas.paste(img, ((side - img.size[0]) // 2, (side - img.size[1]) // 2))
        want = np.asarray(canvas.resize((448, 448), Image.BICUBIC))
        np.testing.assert_array_equal(tagger.prepare(rgb), want)


def test_wd_tagger_loads_strictly(tmp_path):
    folder = str(tmp_path / "vit")
    write_wd_tagger(folder, "vit")
    from safetensors.torch import load_file, save_file

    path = os.path.join(folder, "model.safetensors")
    state = load_file(path)
    state["extra.weight"] = torch.zeros(2)
    del state["norm.weight"]
    save_file(state, path)
    with pytest.raises(WeightsError, match=r"missing keys: norm.weight.*unexpected keys: extra.weight"):
        scorers.create("wd_tagger", weights=folder)


def test_wd_tagger_refuses_a_tag_list_of_another_size(tmp_path):
    folder = str(tmp_path / "vit")
    write_wd_tagger(folder, "vit")
    csv_path = os.path.join(folder, "selected_tags.csv")
    with open(csv_path) as fh:
        lines = fh.readlines()
    with open(csv_path, "w") as fh:
        fh.writelines(lines[:-1])
    with pytest.raises(WeightsError, match="classes but selected_tags.csv"):
        scorers.create("wd_tagger", weights=folder)


def test_missing_weights_name_the_file(tmp_path, monkeypatch):
    with pytest.raises(WeightsError, match="weights file not found: .*config.json"):
        scorers.create("wd_tagger", weights=str(tmp_path))
    monkeypatch.setenv("LINEPAIRS_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsError, match="wd-swinv2-tagger-v3/config.json.*huggingface.co/SmilingWolf"):
        scorers.create("wd_tagger", variant="swinv2")
    with pytest.raises(WeightsError, match="aesthetic/model.safetensors"):
        scorers.create("aesthetic")


# ----------------------------------------------------------------------------------- aesthetic


def _aesthetic_reference(folder: str, images: list[np.ndarray]) -> np.ndarray:
    """improved-aesthetic-predictor's simple_inference: CLIP's transform (Resize(224, bicubic), CenterCrop,
    ToTensor, Normalize), the image tower (timm's QuickGELU CLIP ViT-L/14 variant, the same key
    layout), numpy L2 normalisation, the published MLP."""
    import timm
    from safetensors.torch import load_file
    from torch import nn
    from torchvision import transforms

    from .scorer_checkpoints import AESTHETIC_TOWER_ARGS

    tower = timm.create_model("vit_large_patch14_clip_quickgelu_224", pretrained=False, num_classes=768,
                              **AESTHETIC_TOWER_ARGS)  # fmt: skip
    tower.load_state_dict(load_file(os.path.join(folder, "model.safetensors")), strict=True)
    tower.eval()

    class MLP(nn.Module):  # the published module: its Sequential is named `layers`
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(
                nn.Linear(768, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
            )  # fmt: skip

        def forward(self, x):
            return self.layers(x)

    head = MLP()
    head.load_state_dict(
        torch.load(os.path.join(folder, "sac+logos+ava1-l14-linearMSE.pth"), weights_only=True)
    )
    head.eval()
    preprocess = transforms.Compose([
        transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(224), transforms.ToTensor(), transforms.Normalize(CLIP_MEAN, CLIP_STD),
    ])  # fmt: skip
    out = []
    for rgb in images:
        with torch.no_grad():
            emb = tower(preprocess(Image.fromarray(rgb)).unsqueeze(0)).numpy()
        l2 = np.atleast_1d(np.linalg.norm(emb, 2, -1))
        l2[l2 == 0] = 1
        with torch.no_grad():
            out.append(float(head(torch.from_numpy(emb / l2[:, None]).float())[0, 0]))
    return np.array(out)


def test_aesthetic_matches_the_laion_reference(images, tmp_path, one_torch_thread):
    folder = str(tmp_path / "aesthetic")
    write_aesthetic(folder, seed=3)
    scorer = scorers.create("aesthetic", weights=folder, batch_size=2)
    ours = np.array(scorer(images)["aesthetic"])
    ref = _aesthetic_reference(folder, images)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    assert np.ptp(ref) > 1e-3, "the images must score differently for the comparison to mean anything"
    assert set(scorer.files) == {"model.safetensors", "sac+logos+ava1-l14-linearMSE.pth", "config.json"}


def test_aesthetic_refuses_a_head_of_another_width(tmp_path):
    folder = str(tmp_path / "aesthetic")
    write_aesthetic(folder)
    from curation.scorers.aesthetic import MLP_FILE, mlp

    torch.save(mlp(512).state_dict(), os.path.join(folder, MLP_FILE))
    with pytest.raises(WeightsError, match="takes 512-d embeddings but the tower gives 768"):
        scorers.create("aesthetic", weights=folder)


# ----------------------------------------------------------------------------------- predictions in the scan


def _row(**kw):
    from curation.records import TAG_CATEGORIES

    row = {f"tags_{c}": [] for c in TAG_CATEGORIES}
    row.update(status="kept", stage=None, reason=None, detail=None, rating=None)
    row.update(kw)
    return row


def test_predictions_judge_only_records_without_tags_of_their_own():
    from curation.filters import FilterConfig
    from curation.scorers.apply import apply_predictions

    filters = FilterConfig(banned_tags=("monochrome", "comic"), ratings=("general", "sensitive", "unrated"))
    pred = {"pred_tags": ["1girl", "monochrome"], "pred_tag_probs": [0.9, 0.6], "pred_rating": "g"}

    bare = _row(**pred)
    apply_predictions(bare, filters, fill_tags=True)
    assert (bare["status"], bare["stage"], bare["reason"]) == ("rejected", "scorer", "predicted_banned_tag")
    assert "monochrome (0.60)" in bare["detail"]

    tagged = _row(tags_general=["1girl", "solo"], **pred)  # site tags / a caption decide, not predictions
    apply_predictions(tagged, filters, fill_tags=True)
    assert tagged["status"] == "kept" and tagged["tags_general"] == ["1girl", "solo"]

    clean = _row(pred_tags=["1girl", "smile"], pred_tag_probs=[0.9, 0.5], pred_rating="s")
    apply_predictions(clean, filters, fill_tags=True)
    assert clean["status"] == "kept" and clean["tags_general"] == ["1girl", "smile"]
    kept_bare = _row(pred_tags=["1girl"], pred_tag_probs=[0.9], pred_rating="g")
    apply_predictions(kept_bare, filters, fill_tags=False)
    assert kept_bare["tags_general"] == []

    explicit = _row(pred_tags=["1girl"], pred_tag_probs=[0.9], pred_rating="e")
    apply_predictions(explicit, filters, fill_tags=True)
    assert explicit["reason"] == "predicted_rating" and "'e' = explicit" in explicit["detail"]
    rated = _row(rating="g", pred_tags=["1girl"], pred_tag_probs=[0.9], pred_rating="e")
    apply_predictions(rated, filters, fill_tags=True)  # the site's rating wins
    assert rated["status"] == "kept"

    already = _row(status="rejected", reason="blurry", **pred)
    apply_predictions(already, filters, fill_tags=True)
    assert already["reason"] == "blurry"
