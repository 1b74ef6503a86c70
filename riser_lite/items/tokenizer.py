"""A small byte-level BPE tokenizer for the tiny local backbone, trained on the catalogue and prompt text.

It is trained here (no hub download) with the `tokenizers` library and wrapped as a
`transformers.PreTrainedTokenizerFast`, so every stage uses the Hugging Face tokenizer API and a real
model's tokenizer drops in unchanged. Byte-level means any string can be encoded, whatever its script.
"""

from __future__ import annotations

from collections.abc import Iterable

from riser_lite.items.prompts import LINE_PREFIX, format_response, template_corpus

PAD_TOKEN = "<|pad|>"
EOS_TOKEN = "<|endoftext|>"


def train_tokenizer(titles: Iterable[str], vocab_size: int = 1024):
    """A `PreTrainedTokenizerFast` (pad and EOS set) trained on every catalogue title and the prompt
    template. `vocab_size` counts the 256 byte symbols and the special tokens; a merge needs 2 occurrences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2,
                                  special_tokens=[PAD_TOKEN, EOS_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    # Titles appear in prompts as "- <title>\n" and in responses as "<title>\n": train on both forms.
    corpus = list(template_corpus())
    for title in titles:
        corpus.append(f"{LINE_PREFIX}{title}\n")
        corpus.append(format_response(title))
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD_TOKEN, eos_token=EOS_TOKEN,
                                   padding_side="left")
