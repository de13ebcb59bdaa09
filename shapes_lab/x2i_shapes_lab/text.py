"""Offline word-level tokenizers for the shapes world (English for the teacher; English+German for the MLLM)."""
from __future__ import annotations

import random

from .world import scenes, caption

SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]  # ids 0..3; CLIP's pooler reads the first [EOS] (id 3)


def grammar_words(langs=("en",), n: int = 3000, seed: int = 12345, extra=()) -> list[str]:
    """Every word the caption grammar produces in these languages (held-out scenes included: words only)."""
    words = set(extra)
    rng = random.Random(seed)
    for split in ("any", "heldout"):
        for sc in scenes(seed, n, split=split):
            for lang in langs:
                for full in (False, True):
                    words.update(caption(sc, lang, rng, full=full).lower().split())
    return sorted(words)


def word_tokenizer(words: list[str], *, specials=SPECIALS, model_max_length: int = 32, add_eos: bool = True):
    """A lower-casing whitespace WordLevel PreTrainedTokenizerFast that appends [EOS]."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(list(specials) + [w for w in words if w not in specials])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if add_eos:
        tok.post_processor = processors.TemplateProcessing(single="$A [EOS]", special_tokens=[("[EOS]", vocab["[EOS]"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]",
        model_max_length=model_max_length, padding_side="right",
    )
