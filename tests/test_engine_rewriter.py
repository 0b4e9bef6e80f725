"""The loaded text encoder as a prompt rewriter (engine/rewriter.py): mechanics only, since the tiny
model's random weights write noise, and the full-size configuration on the meta device (free)."""

from __future__ import annotations

import copy

import pytest
import torch

from engine.full_size import full_size_modules
from engine.rewriter import can_write, causal_lm, rewrite
from engine.tiny import build_pipeline


@pytest.fixture(scope="module")
def tied():
    """The tiny pipeline with its encoder's configuration tying the embeddings, as Z-Image-Turbo's does."""
    pipe = build_pipeline()
    pipe.text_encoder.config = copy.deepcopy(pipe.text_encoder.config)
    pipe.text_encoder.config.tie_word_embeddings = True
    return pipe


def test_z_image_turbos_text_encoder_can_write_with_no_new_weight():
    encoder = full_size_modules("meta")["text_encoder"]
    assert can_write(encoder)
    model = causal_lm(encoder)
    assert model.lm_head.weight is encoder.embed_tokens.weight
    assert model.model is encoder
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in encoder.parameters())
    assert abs(sum(p.numel() for p in encoder.parameters()) - 4_022_468_096) < 1_000_000  # the published count


def test_an_untied_encoder_is_refused():
    untied = build_pipeline().text_encoder
    assert not untied.config.tie_word_embeddings and not can_write(untied)
    with pytest.raises(ValueError, match="tie"):
        causal_lm(untied)


def test_the_rewriter_writes_text_deterministically_and_leaves_the_encoder_as_it_was(tied):
    before = tied.encode_prompt("a fox", do_classifier_free_guidance=False)[0][0].clone()
    first = rewrite(tied, "a fox", "Expand the prompt.", max_new_tokens=12)
    second = rewrite(tied, "a fox", "Expand the prompt.", max_new_tokens=12)
    assert isinstance(first, str) and first == second
    ids = tied.tokenizer("a fox", return_tensors="pt").input_ids
    logits = causal_lm(tied.text_encoder)(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tied.tokenizer)) and torch.isfinite(logits).all()
    after = tied.encode_prompt("a fox", do_classifier_free_guidance=False)[0][0]
    assert torch.equal(before, after) and type(tied.text_encoder).__name__ == "Qwen3Model"
