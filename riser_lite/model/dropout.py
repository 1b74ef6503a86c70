"""Dropout for training a model whose architecture has none (Qwen2 and Llama have no hidden dropout).

A model trained from scratch on a few thousand sequences can overfit. SASRec's answer is dropout on the
embeddings and on each block's output before it joins the residual stream; `add_residual_dropout` adds
exactly that to any Qwen2/Llama-style causal LM with removable forward hooks, without changing the saved
model. The hooks act only in training mode; they draw from torch's global RNG, which resume checkpoints
save, so an interrupted run still resumes bit-identical.
"""

from __future__ import annotations

import torch.nn.functional as F

# Module names (last component) whose outputs are added to the residual stream in Qwen2/Llama blocks.
BLOCK_OUTPUTS = ("self_attn", "mlp")


def _drop(p: float):
    def hook(module, args, output):
        if not module.training:
            return output
        if isinstance(output, tuple):  # attention returns (hidden, attention weights)
            return (F.dropout(output[0], p, training=True), *output[1:])
        return F.dropout(output, p, training=True)

    return hook


def add_residual_dropout(model, p: float) -> list:
    """Hook dropout of share `p` onto the embeddings and each attention / MLP output of `model`.

    Returns the hook handles (`handle.remove()` undoes each; none when p == 0). Raises ValueError if p is
    outside [0, 1) or, for p > 0, if the model has no attention or MLP modules by those names.
    """
    if not 0 <= p < 1:
        raise ValueError(f"dropout must be in [0, 1), got {p}")
    if p == 0:
        return []
    modules = [model.get_input_embeddings()]
    modules += [m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in BLOCK_OUTPUTS]
    if len(modules) == 1:
        raise ValueError(f"dropout needs a model with {' / '.join(BLOCK_OUTPUTS)} modules "
                         f"(Qwen2/Llama-style); {type(model).__name__} has none")
    return [m.register_forward_hook(_drop(p)) for m in modules]
