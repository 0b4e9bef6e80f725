"""The loaded text encoder as its own prompt rewriter: no second model in memory.

Z-Image-Turbo's text encoder is Qwen3-4B.  Its published `text_encoder/config.json` names the
architecture `Qwen3ForCausalLM` with `tie_word_embeddings: true` (vocabulary 151936, hidden 2560,
36 layers, 4.02B parameters with the final norm), and diffusers loads it as the bare `Qwen3Model`.
With tied embeddings a causal LM head is the embedding matrix itself, so wrapping the loaded
encoder in `Qwen3ForCausalLM` with `lm_head.weight = embed_tokens.weight` gives back the chat model
without a single new weight (only the KV cache of the generated tokens).  A model whose config does
not tie them would need its own LM head (~0.8 GB in bf16 for Qwen3-4B's shape): refused here.

Mechanics only are tested (tests/test_engine_rewriter.py, tiny random weights write noise); the
bot uses an OpenAI-compatible endpoint (bot/core/enhancer.py), not this.  Run it on the GPU thread:
it occupies the text encoder (and the GPU) for the tokens it writes.
"""

from __future__ import annotations

import torch


def can_write(text_encoder: torch.nn.Module) -> bool:
    """Whether a causal LM head can share this encoder's embeddings: a Qwen3 decoder with its final
    norm whose configuration ties the word embeddings."""
    config = getattr(text_encoder, "config", None)
    return (
        config is not None
        and getattr(config, "model_type", None) == "qwen3"
        and bool(getattr(config, "tie_word_embeddings", False))
        and hasattr(text_encoder, "embed_tokens")
        and hasattr(text_encoder, "norm")
    )


def causal_lm(text_encoder: torch.nn.Module):
    """A `Qwen3ForCausalLM` over the loaded encoder: its decoder, and its embeddings as the LM head."""
    from transformers import Qwen3ForCausalLM

    if not can_write(text_encoder):
        raise ValueError("the text encoder's configuration does not tie its word embeddings: no free LM head")
    with torch.device("meta"):  # nothing allocated: both parts are replaced by the encoder's own
        model = Qwen3ForCausalLM(text_encoder.config)
    model.model = text_encoder
    model.lm_head.weight = text_encoder.embed_tokens.weight
    return model.eval()


def rewrite(pipe, prompt: str, instructions: str, max_new_tokens: int = 160) -> str:
    """The pipeline's own text encoder expanding `prompt` as `instructions` ask (greedy, so the same
    words give the same expansion; thinking off)."""
    model = causal_lm(pipe.text_encoder)
    tokenizer = pipe.tokenizer
    messages = [{"role": "system", "content": instructions}, {"role": "user", "content": prompt}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    inputs = tokenizer(text, return_tensors="pt").to(pipe.text_encoder.device)
    with torch.no_grad():
        output = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            repetition_penalty=1.05,
            pad_token_id=tokenizer.pad_token_id,
        )
    written = output[0, inputs["input_ids"].shape[1] :]
    return " ".join(tokenizer.decode(written, skip_special_tokens=True).split())
