"""Learned extractors: the real PiDiNet and MTEED checkpoints against controlnet_aux, weights
resolution and safe loading, the batch contract, and the GPU path (skipped without CUDA).

Random-weight fidelity for the other networks is in test_lineart_nets_fidelity.py.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import zipfile

import numpy as np
import pytest
import torch

import lineart
from groundwork.checkpoints import WeightsError, read_state_dict, resolve
from lineart.nets import pidinet as pidinet_mod

from . import nets_reference as ref
from .helpers import WritesOnUnpickle

LEARNED = ["hed", "lineart", "lineart_anime", "lineart_coarse", "manga_line", "mteed", "pidinet", "teed"]
PIDINET_SHA = "80860ac267258b5f27486e0ef152a211d0b08120f62aeb185a050acc30da486c"
MTEED_SHA = "a3c2d8a8ce9422555c787160bd46362d761325a565333c0e3f6a53e0bae2abdb"
IMAGES = ["style2paints_004.jpg", "anime2sketch_001.jpg"]


@pytest.fixture(scope="module")
def pidinet_file(shared) -> str:
    return os.path.join(shared, "weights", "pidinet", "table5_pidinet.pth")


@pytest.fixture(scope="module")
def mteed_file(shared) -> str:
    return os.path.join(shared, "weights", "mteed", "MTEED.pth")


@pytest.fixture(scope="module")
def batch(corpus) -> np.ndarray:
    """Two real illustrations at 512x768 (short side 512, multiples of 64: the contract's size)."""
    return np.stack([ref.corpus_rgb(corpus, n, 768, 512) for n in IMAGES])


@pytest.fixture(scope="module")
def pidinet_ext(pidinet_file):
    return lineart.create("pidinet", weights=pidinet_file, reference_exact=True)


@pytest.fixture(scope="module")
def mteed_ext(mteed_file):
    return lineart.create("mteed", weights=mteed_file, reference_exact=True)


# --- registry -------------------------------------------------------------------------------


def test_every_network_is_registered_as_learned():
    assert set(LEARNED) <= set(lineart.available())
    for name in LEARNED:
        entry = lineart.info(name)
        assert entry.kind == "learned"
        assert {"detect_resolution", "batch_size", "precision", "channels_last"} <= set(entry.defaults)


def test_unknown_option_is_refused(pidinet_file):
    with pytest.raises(TypeError, match="no option"):
        lineart.create("pidinet", weights=pidinet_file, sharpness=3)


# --- real checkpoints against controlnet_aux ------------------------------------------------


def test_real_pidinet_matches_controlnet_aux(tmp_path, pidinet_file, pidinet_ext, batch):
    ref.controlnet_aux()
    from controlnet_aux.pidi import PidiNetDetector

    shutil.copy(pidinet_file, tmp_path / "table5_pidinet.pth")
    detector = PidiNetDetector.from_pretrained(str(tmp_path))
    square = np.ascontiguousarray(batch[:, :, 128:640])  # 512x512: the reference PiDiNet is slow on CPU
    ours = pidinet_ext(square)
    assert ours.shape == square.shape[:3] and ours.dtype == np.uint8
    for i, img in enumerate(square):
        reference = detector(img, output_type="np")[..., 0]
        ref.assert_matches(ours[i], reference, f"pidinet {IMAGES[i]}")
        ref.assert_not_flat(ours[i], "pidinet", levels=5)
    # line art: mostly paper with some ink
    assert 0.5 < (ours > 200).mean() < 0.99 and (ours < 128).mean() > 0.01


def test_real_mteed_matches_controlnet_aux(mteed_file, mteed_ext, batch):
    ref.controlnet_aux()
    from controlnet_aux.teed import TEEDdetector

    detector = TEEDdetector.from_pretrained(os.path.dirname(mteed_file), filename="MTEED.pth")
    ours = mteed_ext(batch)
    for i, img in enumerate(batch):
        ref.assert_matches(ours[i], detector(img, output_type="np")[..., 0], f"mteed {IMAGES[i]}")
        ref.assert_not_flat(ours[i], "mteed", levels=3)
    assert 0.5 < (ours == 255).mean() < 0.99 and (ours == 0).mean() > 0.01


def test_real_mteed_with_detect_resolution_matches_at_other_sizes(mteed_file, corpus):
    """At any input size, detect_resolution=512 runs where controlnet_aux runs, then resizes back."""
    ref.controlnet_aux()
    from controlnet_aux.teed import TEEDdetector

    img = ref.corpus_rgb(corpus, "paintsundo_003.jpg", 450, 300)
    detector = TEEDdetector.from_pretrained(os.path.dirname(mteed_file), filename="MTEED.pth")
    reference = detector(img, output_type="np")[..., 0]  # TEEDdetector resizes back to the input size
    ours = lineart.create("mteed", weights=mteed_file, detect_resolution=512, reference_exact=True)(
        img[None]
    )[0]
    assert ours.shape == (300, 450)
    ref.assert_matches(ours, reference, "mteed detect_resolution=512")


def test_no_frame_unless_reference_exact(pidinet_file, mteed_file, pidinet_ext, mteed_ext, batch):
    """controlnet_aux's TEED draws a grey (128) frame, 3 px left and 1 px top, even on a blank page, and
    PiDiNet greys its borders; by default ours draws none. reference_exact=True keeps the reference's
    pixels, frame included, and pair quality calls that drawing `framed`."""
    from lineart.quality import PairQuality, frame_sides, judge

    blank = np.full((1, 96, 160, 3), 255, np.uint8)
    exact_mteed = mteed_ext(blank)[0]
    assert (exact_mteed[:, 0] == 128).all() and (exact_mteed[0] == 128).all()
    assert (pidinet_ext(blank)[0] < 250).any()
    q = PairQuality()
    for name, path, exact in (("mteed", mteed_file, mteed_ext), ("pidinet", pidinet_file, pidinet_ext)):
        ext = lineart.create(name, weights=path)
        assert (ext(blank) == 255).all(), name
        real = batch[:, :256, :384]
        drawn, kept = ext(real), exact(real)
        for i in range(len(real)):
            assert frame_sides(drawn[i]) == [], name
            assert judge(drawn[i], q)[0] == "ok", name
            # away from the edges the drawing is the reference's: MTEED exactly, PiDiNet (whose large
            # receptive field sees the border) within a few levels, 99.1-99.2 % same ink/paper measured
            a, b = drawn[i, 24:-24, 24:-24], kept[i, 24:-24, 24:-24]
            assert np.abs(a.astype(int) - b.astype(int)).mean() < (0.01 if name == "mteed" else 5), name
            assert ((a < 128) == (b < 128)).mean() > 0.98, name
    assert judge(mteed_ext(batch[:1, :256, :384])[0], q)[0] == "framed"


def test_pidinet_folding_changes_nothing(pidinet_file, pidinet_ext, batch):
    unfolded = lineart.create("pidinet", weights=pidinet_file, fold=False, reference_exact=True)
    assert any(isinstance(m, pidinet_mod.PixelDifferenceConv) for m in unfolded.model.modules())
    assert not any(isinstance(m, pidinet_mod.PixelDifferenceConv) for m in pidinet_ext.model.modules())
    small = batch[:1, :256, :384]
    diff = np.abs(unfolded(small).astype(int) - pidinet_ext(small).astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01


@pytest.mark.parametrize("op", ["cv", "cd", "ad", "rd"])
def test_pixel_difference_kernel_equals_its_definition(op):
    """Each PDC folded into a plain conv equals its definition as a sum over pixel differences."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 9, 11, generator=g)
    w = torch.randn(3, 2, 3, 3, generator=g).reshape(3, 2, 9)
    kernel, pad = pidinet_mod.pdc_kernel(w.reshape(3, 2, 3, 3), op)
    got = torch.nn.functional.conv2d(x, kernel, padding=pad)
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2))
    h, wd = x.shape[-2:]
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]  # the 3x3 taps, row-major

    def at(k, scale=1):  # x read at tap k's offset (times scale), zero outside the image
        dy, dx = offsets[k]
        return xp[:, :, 2 + scale * dy : 2 + scale * dy + h, 2 + scale * dx : 2 + scale * dx + wd]

    clockwise = {0: 1, 1: 2, 2: 5, 5: 8, 8: 7, 7: 6, 6: 3, 3: 0, 4: 4}
    ring = [0, 1, 2, 3, 5, 6, 7, 8]
    if op == "cv":
        terms = [(w[:, :, k], at(k)) for k in range(9)]
    elif op == "cd":  # central: each tap minus the centre
        terms = [(w[:, :, k], at(k) - x) for k in range(9)]
    elif op == "ad":  # angular: each tap minus its clockwise neighbour
        terms = [(w[:, :, k], at(k) - at(clockwise[k])) for k in range(9)]
    else:  # radial: for the 8 directions (weights 1..8), outer ring minus inner ring
        terms = [(w[:, :, i + 1], at(k, 2) - at(k)) for i, k in enumerate(ring)]
    want = sum(torch.einsum("oc,nchw->nohw", wk, t) for wk, t in terms)
    assert torch.allclose(got, want, atol=1e-5)


def test_tiny_pidinet_loads_by_reading_its_widths(shared, batch):
    path = os.path.join(shared, "weights", "pidinet", "table5_pidinet-tiny.pth")
    ext = lineart.create("pidinet", weights=path)
    assert ext.model.init_block.weight.shape[0] == 20
    out = ext(batch[:1, :256, :256])
    ref.assert_not_flat(out[0], "pidinet-tiny", levels=5)


# --- the batch contract ---------------------------------------------------------------------


def test_batches_equal_single_images_and_micro_batches(mteed_file, batch):
    imgs = np.concatenate([batch[:, :256, :320], batch[:1, 256:512, 320:640]])  # three images
    one_by_one = np.stack([lineart.create("mteed", weights=mteed_file)(im[None])[0] for im in imgs])
    in_twos = lineart.create("mteed", weights=mteed_file, batch_size=2)(imgs)  # 2 + 1
    assert np.array_equal(one_by_one, in_twos)


@pytest.mark.parametrize("h,w", [(301, 419), (64, 72)])
def test_sizes_the_network_cannot_take_are_padded_and_cropped(mteed_ext, pidinet_ext, batch, h, w):
    for ext in (mteed_ext, pidinet_ext):
        out = ext(batch[:1, :h, :w])
        assert out.shape == (1, h, w) and out.dtype == np.uint8


def test_mixed_sizes_are_refused_with_advice(mteed_ext, batch):
    with pytest.raises(ValueError, match="different sizes.*group images by size"):
        mteed_ext([batch[0], batch[1][:256]])
    with pytest.raises(ValueError, match="uint8"):
        mteed_ext(batch.astype(np.float32))


def test_extractor_records_name_version_and_checkpoint_hash(pidinet_ext, mteed_ext):
    assert (pidinet_ext.name, pidinet_ext.weights_sha256) == ("pidinet", PIDINET_SHA)
    assert (mteed_ext.name, mteed_ext.weights_sha256) == ("mteed", MTEED_SHA)
    assert pidinet_ext.version and pidinet_ext.version == mteed_ext.version


# --- weights: resolution, wrappers, bad files -----------------------------------------------


def test_weights_resolve_from_a_folder_and_from_the_cache(tmp_path, monkeypatch, mteed_file):
    shutil.copy(mteed_file, tmp_path / "MTEED.pth")
    assert lineart.create("mteed", weights=str(tmp_path)).weights_sha256 == MTEED_SHA  # a folder
    monkeypatch.setenv("LINEPAIRS_WEIGHTS", str(tmp_path))
    assert lineart.create("mteed").weights_path == str(tmp_path / "MTEED.pth")  # the cache


def test_missing_weights_offline_name_the_file_and_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LINEPAIRS_WEIGHTS", str(tmp_path / "empty"))
    monkeypatch.setenv("LINEPAIRS_OFFLINE", "1")
    with pytest.raises(WeightsError, match=r"MTEED\.pth.*OFFLINE.*huggingface.*empty"):
        lineart.create("mteed")
    with pytest.raises(WeightsError, match=r"5_model\.pth has no pinned sha256.*fal-ai/teed"):
        lineart.create("teed")
    with pytest.raises(WeightsError, match="not found"):
        lineart.create("hed", weights=str(tmp_path / "nope.pth"))


def test_a_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    from groundwork.checkpoints import WeightsSpec

    monkeypatch.setenv("LINEPAIRS_WEIGHTS", str(tmp_path))
    monkeypatch.delenv("LINEPAIRS_OFFLINE", raising=False)
    spec = WeightsSpec("x.pth", "http://127.0.0.1:9/x.pth", "0" * 64)  # port 9: nothing listens
    with pytest.raises(WeightsError, match=r"could not download x\.pth .* put x\.pth in"):
        resolve(spec)
    assert os.listdir(tmp_path) == []  # no partial file left behind


def test_wrappers_are_unwrapped_and_safetensors_load(tmp_path, mteed_file, mteed_ext, batch):
    state = torch.load(mteed_file, map_location="cpu", weights_only=True)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"epoch": 9, "state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    from safetensors.torch import save_file

    st = tmp_path / "mteed.safetensors"
    save_file(dict(state), str(st))
    small = batch[:1, :128, :192]
    want = mteed_ext(small)
    for path in (wrapped, st):
        assert np.array_equal(lineart.create("mteed", weights=str(path), reference_exact=True)(small), want)


def test_wrong_architecture_names_missing_and_unexpected_keys(mteed_file, pidinet_file):
    with pytest.raises(
        WeightsError, match=r"missing keys: attentions.*\(83 in all\); unexpected keys: block_1"
    ):
        lineart.create("pidinet", weights=mteed_file)
    with pytest.raises(WeightsError, match=r"missing keys: .*model0\.1\.weight"):
        lineart.create("lineart", weights=pidinet_file)


def test_shape_mismatch_is_named(tmp_path, mteed_file):
    state = torch.load(mteed_file, map_location="cpu", weights_only=True)
    state["block_1.conv1.weight"] = torch.zeros(8, 3, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match=r"shape mismatch: block_1\.conv1\.weight \(8, 3, 3, 3\)"):
        lineart.create("mteed", weights=str(tmp_path / "bad.pth"))


def test_truncated_and_garbage_files_are_clear_errors(tmp_path, mteed_file):
    data = open(mteed_file, "rb").read()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.pth").write_bytes(os.urandom(4096))
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    for name, pattern in [("cut.pth", "truncated"), ("junk.pth", "not a loadable"), ("empty.pth", "empty"),
                          ("junk.safetensors", "not a readable safetensors")]:  # fmt: skip
        with pytest.raises(WeightsError, match=pattern):
            read_state_dict(str(tmp_path / name))


def test_a_checkpoint_carrying_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save(
        {"state_dict": {"w": torch.zeros(1)}, "payload": WritesOnUnpickle(str(marker))},
        evil,
        pickle_module=pickle,
    )
    assert zipfile.is_zipfile(evil)
    with pytest.raises(WeightsError, match="not a loadable torch checkpoint"):
        read_state_dict(str(evil))
    assert not marker.exists()


def test_sha256_is_of_the_file_bytes(mteed_ext, mteed_file):
    assert mteed_ext.weights_sha256 == hashlib.sha256(open(mteed_file, "rb").read()).hexdigest()


# --- GPU ------------------------------------------------------------------------------------


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="CUDA not available: the GPU path of the learned extractors is not exercised here",
)
def test_gpu_matches_cpu_in_fp32_and_amp(pidinet_file, mteed_file, pidinet_ext, mteed_ext, batch):
    for name, path, cpu in (("pidinet", pidinet_file, pidinet_ext), ("mteed", mteed_file, mteed_ext)):
        want = cpu(batch)
        for precision in ("fp32", "auto"):  # auto on CUDA is fp16 autocast
            ext = lineart.create(name, weights=path, device="cuda", precision=precision, reference_exact=True)
            assert ext.precision == ("fp32" if precision == "fp32" else "fp16")
            ref.assert_matches(ext(batch), 255 - want, f"{name} cuda {precision}")
