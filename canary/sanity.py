"""Output sanity checks: does an output look like a real answer, before comparing it with stable's?"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import thresholds as T

UNDECODABLE = "does not decode as an image"


def image_problems(data: bytes, *, expected_size: tuple[int, int] | None = None,
                   expected_format: str | None = None) -> list[str]:
    """Reasons the bytes are not a usable image (empty list when fine)."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        return [f"{UNDECODABLE} ({e.__class__.__name__})"]
    problems = []
    if expected_format and img.format != expected_format:
        problems.append(f"format {img.format}, expected {expected_format}")
    if expected_size and img.size != tuple(expected_size):
        problems.append(f"size {img.size[0]}x{img.size[1]}, expected {expected_size[0]}x{expected_size[1]}")
    pixels = np.asarray(img.convert("RGB"), dtype=np.float32)
    if (pixels.max(axis=2) < 8).mean() > T.MAX_BLACK_FRACTION:
        problems.append("black")
    elif pixels.std() < T.MIN_IMAGE_STDDEV:
        problems.append(f"uniform (pixel std-dev {pixels.std():.2f} < {T.MIN_IMAGE_STDDEV})")
    return problems


def text_problems(text, *, max_chars: int | None = None) -> list[str]:
    """Reasons the text is not a usable answer: empty, too long, not UTF-8, degenerate repetition."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            return ["not valid UTF-8"]
    if len(text.strip()) < T.MIN_TEXT_CHARS:
        return ["empty"]
    problems = []
    if max_chars is not None and len(text) > max_chars:
        problems.append(f"{len(text)} characters, more than {max_chars}")
    share = max(repeated_ngram_share(text.split(), T.NGRAM), repeated_ngram_share(text, T.CHAR_NGRAM))
    if share > T.MAX_REPEATED_NGRAM_SHARE:
        problems.append(f"degenerate: {share:.0%} of its word {T.NGRAM}-grams or character {T.CHAR_NGRAM}-grams "
                        "repeat earlier ones")
    return problems


def repeated_ngram_share(items, n: int) -> float:
    """Share of the n-grams of `items` (words, or the characters of a string) that repeat an earlier one.

    Once a text loops (with period k), every n-gram after the first k items repeats an earlier one;
    ordinary prose repeats few. Characters catch loops without spaces (glued tokens, scripts written
    without spaces). 0 for texts too short to judge.
    """
    grams = [tuple(items[i:i + n]) for i in range(len(items) - n + 1)]
    if len(grams) < 4:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)
