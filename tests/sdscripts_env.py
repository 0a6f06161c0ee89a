"""A Python environment for kohya sd-scripts, made once and cached (it does not import under the
project's transformers 5: ``CLIPFeatureExtractor`` is gone).

Only sd-scripts' own pins (``requirements.txt``) that differ from the project's environment are
installed, into a venv of their own; a ``.pth`` line puts the project's site-packages after them,
so torch, OpenCV, NumPy and the rest are shared, never downloaded again. The venv lives under
``$LINEPAIRS_CACHE`` (default ``~/.cache/linepairs``), keyed by the pins and the Python version; it
is built under a temporary name and renamed, so a killed or concurrent creation never leaves a
half environment behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import time

# sd-scripts' requirements.txt pins, plus what they need in versions the project's environment does
# not have: tokenizers below 0.22 (transformers 4.54) and a `kernels` built for huggingface-hub < 1
# (transformers imports `kernels` whenever one is installed, and the project's needs hub 1.x). The
# rest of what library/train_util.py imports (torch, OpenCV, NumPy, ...) is the project's.
PINS = (
    "transformers==4.54.1", "tokenizers==0.21.4", "diffusers==0.32.1", "accelerate==1.6.0",
    "huggingface-hub==0.34.3", "toml==0.10.2", "voluptuous==0.15.2", "imagesize==1.4.1", "kernels==0.8.1",
)  # fmt: skip


def cache_root() -> str:
    return os.environ.get("LINEPAIRS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "linepairs")


def env_dir() -> str:
    key = hashlib.sha256("\n".join((*PINS, sys.version)).encode()).hexdigest()[:12]
    return os.path.join(cache_root(), f"sd-scripts-env-{key}")


def _project_site_dirs() -> list[str]:
    """The site-packages folders this interpreter imports from, in order (a worktree's venv and
    the shared one behind it)."""
    stdlib = sysconfig.get_paths()["stdlib"]
    return [
        p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and not p.startswith(stdlib)
    ]


def sd_scripts_python() -> tuple[str, float]:
    """(python of the sd-scripts environment, seconds spent creating it: 0 when cached)."""
    env = env_dir()
    python = os.path.join(env, "bin", "python")
    if os.path.exists(os.path.join(env, "ready")):
        return python, 0.0
    start = time.perf_counter()
    os.makedirs(cache_root(), exist_ok=True)
    tmp = f"{env}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", tmp], check=True)
    site = subprocess.run(
        [os.path.join(tmp, "bin", "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--target", site, *PINS],
        capture_output=True, text=True,
    )  # fmt: skip
    if res.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"could not install sd-scripts' pins: {res.stderr.strip().splitlines()[-1:]}")
    with open(os.path.join(site, "zz_linepairs_project.pth"), "w") as fh:
        fh.write("".join(f"{p}\n" for p in _project_site_dirs()))  # after the pins: shared, not shadowing
    open(os.path.join(tmp, "ready"), "w").close()
    try:
        os.rename(tmp, env)
    except OSError:  # another process finished first: use its environment
        shutil.rmtree(tmp, ignore_errors=True)
    return python, time.perf_counter() - start
