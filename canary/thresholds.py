"""Every canary threshold, in one place (docs/canary.md explains each)."""

# output sanity: images
MIN_IMAGE_STDDEV = 2.0        # pixel std-dev (0-255) under which an image counts as blank / uniform
MAX_BLACK_FRACTION = 0.98     # share of near-black pixels (< 8) over which an image counts as black
# output sanity: text
MIN_TEXT_CHARS = 1
MAX_REPEATED_NGRAM_SHARE = 0.5  # share of word 4-grams that repeat an earlier one: degenerate above
NGRAM = 4
