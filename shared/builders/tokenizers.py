"""Small real tokenizers built offline (no Hub), for the tiny and synthetic weight profiles.

Each mirrors the kind of tokenizer its checkpoint ships (CLIP BPE, T5 unigram, a byte-level BPE for the
chat models) and carries the special tokens the model's chat template and generation config use.
"""

from __future__ import annotations

import string
from functools import lru_cache

# A few sentences of ordinary text so the trained BPE has real merges for common words.
_CORPUS = [
    "a photo of a cat sitting on a wooden table in the morning light",
    "the quick brown fox jumps over the lazy dog near the river bank",
    "explain why the sky is blue in one short paragraph for a child",
    "write a haiku about autumn leaves falling in a quiet mountain village",
    "what is the capital of france and why is it famous for its art",
    "describe this image in detail including colors shapes and objects",
    "solve two plus two and show your reasoning step by step carefully",
    "cinematic photographic anime manga digital art pixel art fantasy neonpunk painting illustration",
    "once upon a time there was a small robot who loved to paint the sunset",
    "the model answers questions, writes stories and describes pictures",
] * 4


def _byte_level_bpe(special_tokens: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    return tok


@lru_cache(maxsize=None)
def _trained(special_tokens: tuple[str, ...], vocab_size: int) -> str:
    # Serialized, so every caller gets its own tokenizer object.
    return _byte_level_bpe(list(special_tokens), vocab_size).to_str()


def chat_tokenizer(
    special_tokens: list[str],
    *,
    bos: str | None,
    eos: str,
    pad: str,
    chat_template: str,
    plain_tokens: tuple[str, ...] = (),
    adds_bos: bool = False,
    extra: dict | None = None,
    vocab_size: int = 600,
):
    """A fast byte-level BPE tokenizer with the given special tokens and chat template.

    `plain_tokens` are single tokens that are not special (decoding with skip_special_tokens keeps them, as
    SmolLM3's real tokenizer keeps <think>); `adds_bos` puts `bos` in front of every encoding, as Gemma's does.
    """
    from tokenizers import AddedToken, Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_trained(tuple(special_tokens), vocab_size))
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in plain_tokens])
    if adds_bos:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, backend.token_to_id(bos))])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        **(extra or {}),
    )
    tok.chat_template = chat_template
    return tok


def clip_tokenizer():
    """CLIP's byte-level BPE with `</w>` word ends; an empty merge list tokenizes per character."""
    from transformers import CLIPTokenizer
    from tokenizers.pre_tokenizers import ByteLevel

    chars = sorted(ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for c in chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]:
        vocab.setdefault(c, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def t5_tokenizer():
    """A T5-style unigram tokenizer over characters and a few whole words."""
    from transformers import T5Tokenizer

    pieces = ["<pad>", "</s>", "<unk>", "\u2581"]
    pieces += [c for c in string.ascii_letters + string.digits + string.punctuation]
    pieces += ["\u2581" + c for c in string.ascii_letters + string.digits]
    words = sorted({w for line in _CORPUS for w in line.replace(",", " ").split()})
    pieces += ["\u2581" + w for w in words]
    vocab = [(p, 0.0 if i < 3 else -float(len(p) == 1) - 1.0 / (1 + len(p))) for i, p in enumerate(pieces)]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)
