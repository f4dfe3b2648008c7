"""Every canary threshold, in one place (docs/canary.md explains each)."""

# output sanity: images
MIN_IMAGE_STDDEV = 2.0        # pixel std-dev (0-255) under which an image counts as blank / uniform
MAX_BLACK_FRACTION = 0.98     # share of near-black pixels (< 8) over which an image counts as black
# output sanity: text
MIN_TEXT_CHARS = 1
MAX_REPEATED_NGRAM_SHARE = 0.5  # share of word 4-grams (or character 16-grams) repeating an earlier one
NGRAM = 4
CHAR_NGRAM = 16

# semantic equivalence with stable (same input, same seed)
MIN_IMAGE_SSIM = 0.75          # structural similarity of the two images, grayscale, 1.0 = identical
MIN_TEXT_SIMILARITY = 0.80     # cosine similarity of all-MiniLM-L6-v2 sentence embeddings
TEXT_LENGTH_RATIO = (0.5, 2.0)  # candidate characters / stable characters must fall inside

# latency: median over the samples of each side (the server's predict_time where it reports one)
MAX_LATENCY_RATIO = 1.5        # candidate median / stable median above this is a regression
LATENCY_NOISE_FLOOR_S = 0.05   # ... unless the medians differ by less than this (timer and scheduling noise)
DEFAULT_SAMPLES = 3            # predictions per case per side
