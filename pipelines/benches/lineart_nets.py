"""Learned extractors: images/s at 512x768 next to controlnet_aux's detector on the same images.

Both run in this process, interleaved repeat by repeat, on the same corpus images resized to
768x512 (W x H: the size at which controlnet_aux's defaults change nothing). Ours takes the whole
batch (batched, channels_last, folded PiDiNet); the reference takes one image at a time, as its
API does. PiDiNet and MTEED use the real checkpoints in ../shared/weights; the others use seeded
random weights in the public format (speed does not depend on the values). The outputs are
compared too (mean / p99 of |ours - (255 - reference)|), so each ratio is at equal output.

``$LINEPAIRS_BENCH_NETS`` (comma-separated) limits the networks; ``--limit`` the images (4 by
default); on a CUDA machine the GPU rows are added.
"""

from __future__ import annotations

import functools
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import torch

import lineart

from ..errors import UsageError
from ..paths import corpus_illustrations, shared_dir

NETS = ["pidinet", "mteed", "teed", "lineart", "lineart_coarse", "lineart_anime", "hed", "manga_line"]
W, H = 768, 512


def _images(folder: str, limit: int) -> np.ndarray:
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith((".jpg", ".jpeg", ".png", ".webp")))
    out = []
    for name in names[: limit or 4]:
        bgr = cv2.imread(os.path.join(folder, name), cv2.IMREAD_COLOR)
        if bgr is not None:
            out.append(cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (W, H), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def _save(state: dict, path: str, prefix: str = "", wrap: bool = False, half: bool = False) -> str:
    state = {prefix + k: (v.half() if half else v) for k, v in state.items()}
    torch.save({"epoch": 0, "state_dict": state} if wrap else state, path)
    return path


def _reference(name: str, folder: str) -> tuple[str, Callable[[np.ndarray], np.ndarray] | None]:
    """(weights path, controlnet_aux detector or None) for ``name``; writes random weights where needed."""
    torch.manual_seed(0)
    real = {"pidinet": ("pidinet", "table5_pidinet.pth"), "mteed": ("mteed", "MTEED.pth")}
    shared = shared_dir()
    if name in real and shared and os.path.isfile(os.path.join(shared, "weights", *real[name])):
        path = os.path.join(shared, "weights", *real[name])
    else:
        path = None
    if name == "manga_line":
        from lineart.nets.manga_line import ResSkip

        return _save(ResSkip().state_dict(), os.path.join(folder, "erika.pth")), None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import controlnet_aux  # noqa: F401
    except ImportError:
        raise UsageError("the lineart_nets bench needs controlnet_aux (pip install -e '.[dev]')") from None
    if name == "pidinet":
        from controlnet_aux.pidi import PidiNetDetector
        from controlnet_aux.pidi.model import pidinet

        path = path or _save(
            pidinet().state_dict(), os.path.join(folder, "table5_pidinet.pth"), "module.", True
        )
        det = PidiNetDetector.from_pretrained(os.path.dirname(path))
    elif name in ("teed", "mteed"):
        from controlnet_aux.teed import TEEDdetector
        from controlnet_aux.teed.ted import TED

        path = path or _save(TED().state_dict(), os.path.join(folder, "5_model.pth"))
        det = TEEDdetector.from_pretrained(os.path.dirname(path), filename=os.path.basename(path))
    elif name in ("lineart", "lineart_coarse"):
        from controlnet_aux.lineart import Generator, LineartDetector

        for f in ("sk_model.pth", "sk_model2.pth"):
            _save(Generator(3, 1, 3).state_dict(), os.path.join(folder, f))
        path = os.path.join(folder, "sk_model2.pth" if name == "lineart_coarse" else "sk_model.pth")
        det = functools.partial(LineartDetector.from_pretrained(folder), coarse=name == "lineart_coarse")
    elif name == "lineart_anime":
        from controlnet_aux.lineart_anime import LineartAnimeDetector, UnetGenerator

        norm = functools.partial(torch.nn.InstanceNorm2d, affine=False, track_running_stats=False)
        _save(
            UnetGenerator(3, 1, 8, 64, norm_layer=norm).state_dict(),
            os.path.join(folder, "netG.pth"),
            "module.",
        )
        path, det = os.path.join(folder, "netG.pth"), LineartAnimeDetector.from_pretrained(folder)
    elif name == "hed":
        from controlnet_aux.hed import ControlNetHED_Apache2, HEDdetector

        path = _save(
            ControlNetHED_Apache2().state_dict(), os.path.join(folder, "ControlNetHED.pth"), half=True
        )
        det = HEDdetector.from_pretrained(folder)
    else:
        raise UsageError(f"no reference for {name!r}")
    return path, det


def _reference_fn(det: Callable, device: str) -> Callable[[np.ndarray], np.ndarray]:
    (det.func if isinstance(det, functools.partial) else det).to(device)

    def run(rgb: np.ndarray) -> np.ndarray:
        out = det(rgb, output_type="np")
        return out[..., 0] if out.ndim == 3 else out

    return run


def _time(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _bench_one(name: str, imgs: np.ndarray, repeats: int, device: str, folder: str) -> dict[str, Any]:
    path, det = _reference(name, folder)
    ours = lineart.create(name, weights=path, device=device, reference_exact=True)  # equal output: no margin
    ref_fn = _reference_fn(det, device) if det is not None else None
    n = len(imgs)
    ours(imgs[:1])  # warm-up (allocator, oneDNN primitives, cuDNN autotune)
    if ref_fn is not None:
        ref_fn(imgs[0])
    t_ours, t_ref = [], []
    for _ in range(repeats):
        t_ours.append(_time(lambda: ours(imgs)))
        if ref_fn is not None:
            t_ref.append(_time(lambda: [ref_fn(img) for img in imgs]))
    row: dict[str, Any] = {
        "weights": "real" if "shared" in path else "random",
        "ours_images_per_s": round(n / statistics.median(t_ours), 3),
        "precision": ours.precision,
    }
    if ref_fn is not None:
        got = ours(imgs)
        diff = np.abs(got.astype(np.int16) - (255 - np.stack([ref_fn(img) for img in imgs]).astype(np.int16)))
        row.update(
            reference_images_per_s=round(n / statistics.median(t_ref), 3),
            speedup=round(statistics.median(t_ref) / statistics.median(t_ours), 2),
            diff_mean=round(float(diff.mean()), 4),
            diff_p99=float(np.percentile(diff, 99)),
        )
    else:
        row["reference"] = "none installable (comfyui_controlnet_aux only)"
    return row


def run(args) -> dict[str, Any]:
    folder = args.corpus or corpus_illustrations()
    if not folder or not os.path.isdir(folder):
        raise UsageError(
            "no corpus: pass --corpus FOLDER (the default ../shared/corpus/illustrations is absent)"
        )
    wanted = [n for n in os.environ.get("LINEPAIRS_BENCH_NETS", ",".join(NETS)).split(",") if n]
    unknown = sorted(set(wanted) - set(NETS))
    if unknown:
        raise UsageError(
            f"LINEPAIRS_BENCH_NETS: unknown network(s) {', '.join(unknown)}; known: {', '.join(NETS)}"
        )
    imgs = _images(folder, args.limit)
    repeats = max(1, args.repeats)
    report: dict[str, Any] = {
        "size": f"{W}x{H}",
        "images": len(imgs),
        "repeats": repeats,
        "torch_threads": torch.get_num_threads(),
        "cpu": {},
    }
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    with tempfile.TemporaryDirectory(prefix="lp-bench-nets-") as tmp:
        for device in devices:
            rows = report.setdefault(device, {})
            for name in wanted:
                rows[name] = _bench_one(name, imgs, repeats, device, tmp)
    return report
