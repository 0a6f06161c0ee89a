"""Classical extractors: images/s at 512x768 per operator, OpenCV path and torch path on one CPU
thread (what one build actor gets), and the torch path on the GPU when there is one.

Also reports the share of pixels on which each path agrees with the OpenCV path, so that a speed
figure never stands beside a different output.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any

import cv2
import numpy as np

import lineart

from ..errors import UsageError
from ..paths import corpus_illustrations

SIZE = (512, 768)  # width, height: the default bucket area, portrait
CPU_BATCH = 16
TORCH_CPU_BATCH = 4  # the torch path on a CPU is slow (Canny's hysteresis most of all); keep the bench short
GPU_BATCH = 32


def _batch(folder: str, n: int) -> np.ndarray:
    names = sorted(f for f in os.listdir(folder) if f.lower().endswith((".jpg", ".jpeg", ".png", ".webp")))
    if not names:
        raise UsageError(f"no images in {folder}")
    imgs = []
    for name in (names * n)[:n]:
        bgr = cv2.imread(os.path.join(folder, name))
        if bgr is None:
            continue
        imgs.append(cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), SIZE, interpolation=cv2.INTER_AREA))
    return np.stack(imgs)


def _rate(ext, batch: np.ndarray, repeats: int, sync=None) -> tuple[float, np.ndarray]:
    out = ext(batch)  # warm-up (allocations, kernels, CUDA context)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = ext(batch)
        if sync:
            sync()
        times.append(time.perf_counter() - start)
    return len(batch) / statistics.median(times), out


def _equal(a: np.ndarray, b: np.ndarray) -> float:
    return round(float((a == b).mean()), 5)


def run(args) -> dict[str, Any]:
    import torch

    folder = args.corpus or corpus_illustrations()
    if not folder or not os.path.isdir(folder):
        raise UsageError(
            "no corpus: pass --corpus FOLDER (the default ../shared/corpus/illustrations is absent)"
        )
    repeats = max(1, args.repeats)
    cuda = torch.cuda.is_available()
    batch = _batch(folder, max(CPU_BATCH, GPU_BATCH if cuda else 0))
    cpu_batch, torch_batch = batch[:CPU_BATCH], batch[:TORCH_CPU_BATCH]
    threads = (cv2.getNumThreads(), torch.get_num_threads())
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    report: dict[str, Any] = {
        "size": f"{SIZE[0]}x{SIZE[1]}",
        "threads": 1,
        "repeats": repeats,
        "batch": {
            "opencv": CPU_BATCH,
            "torch_cpu": TORCH_CPU_BATCH,
            "torch_gpu": GPU_BATCH if cuda else None,
        },
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "extractors": {},
    }
    try:
        for name in lineart.available("classical"):
            print(f"bench: lineart_classical {name} ...", flush=True, file=sys.stderr)
            cv_rate, cv_out = _rate(lineart.create(name), cpu_batch, repeats)
            t_rate, t_out = _rate(lineart.create(name, backend="torch"), torch_batch, repeats)
            row = {
                "opencv_images_per_s": round(cv_rate, 2),
                "torch_cpu_images_per_s": round(t_rate, 2),
                "torch_cpu_over_opencv": round(t_rate / cv_rate, 4),
                "torch_cpu_equal_pixels": _equal(cv_out[:TORCH_CPU_BATCH], t_out),
            }
            if cuda:
                g_rate, g_out = _rate(
                    lineart.create(name, device="cuda"), batch[:GPU_BATCH], repeats, torch.cuda.synchronize
                )
                cv_full = lineart.create(name)(batch[:GPU_BATCH]) if len(batch) > CPU_BATCH else cv_out
                row.update(
                    torch_gpu_images_per_s=round(g_rate, 2),
                    torch_gpu_over_opencv=round(g_rate / cv_rate, 3),
                    torch_gpu_equal_pixels=_equal(cv_full, g_out),
                )
            report["extractors"][name] = row
    finally:
        cv2.setNumThreads(threads[0])
        torch.set_num_threads(threads[1])
    return report
