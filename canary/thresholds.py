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

# latency: interleaved (stable, candidate) pairs of the server's predict_time. A regression is a candidate
# that is slower (one-sided Wilcoxon signed-rank test on log(candidate / stable), so an identical candidate
# is flagged with probability below LATENCY_ALPHA however noisy the machine) AND slower by more than
# MAX_LATENCY_RATIO (the median of the pairs' ratios): both a real and a large slowdown
MAX_LATENCY_RATIO = 1.5        # candidate / stable above this matters
LATENCY_ALPHA = 0.01           # false-alarm rate, split over the looks below (Bonferroni)
LATENCY_LOOKS = (3, 6, 10, 16)  # pairs after which the test is run ...
LATENCY_LOOK_AGAIN_RATIO = 1.2  # ... more only while the median ratio is above this and nothing is proven
LATENCY_NOISE_FLOOR_S = 0.05   # medians closer than this never fail (timer and scheduling noise)
DEFAULT_SAMPLES = 3            # predictions per case per side for the other checks
