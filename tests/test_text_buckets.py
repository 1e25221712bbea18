"""Length-bucketed text passes give today's features and losses, in the caller's order."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from ovseg.config import load_config
from ovseg.engine.objective import compute_losses
from ovseg.engine.text_buckets import padded_tokens, plan_buckets
from ovseg.engine.text_features import TextFeatures
from ovseg.errors import ConfigError
from ovseg.factory import create_model, preset_path
from ovseg.model.text import build_tokenizer

TINY = [
    "model.img_encoder.img_size=32",
    "model.img_encoder.embed_dim=32",
    "model.img_encoder.num_heads=[2,2]",
    "model.img_encoder.depths=[1,0]",
    "model.img_encoder.num_group_tokens=[8,0]",
    "model.img_encoder.num_output_groups=[4]",
    "model.proj_inner_dim=64",
    "model.output_dim=32",
    "model.use_entityloss=true",
    "model.multi_label_weight=1.0",
    *(
        f"model.text_encoder.hf_overrides.{k}={v}"
        for k, v in {
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 128,
        }.items()
    ),
]
NO_DROPOUT = [
    "model.text_encoder.hf_overrides.hidden_dropout_prob=0.0",
    "model.text_encoder.hf_overrides.attention_probs_dropout_prob=0.0",
]
CAPTIONS = [
    "a dog",
    "a small brown dog runs after a red ball across the wet grass of the park near the river",
    "two cats",
    "a car parked in front of a house with a blue door",
    "a dog",
    "people",
]
QUESTIONS = [
    "a [MASK]",
    "a small brown [MASK] runs after a red [MASK] across the wet grass of the [MASK] near the river",
    "two [MASK]",
    "a [MASK] parked in front of a [MASK] with a blue door",
    "a [MASK]",
    "[MASK]",
]
ANSWERS = [
    "a photo of dog",
    "a photo of dog and ball and park",
    "a photo of cats",
    "a photo of car and house",
    "a photo of dog",
    "a photo of people",
]
ENTITIES = [["dog"], ["dog", "ball", "park"], ["cat"], ["car", "house"], ["dog"], ["person"]]


def tiny_model(extra: list[str] = ()):
    cfg = load_config(preset_path("ovsegmentor/vit_b16_bert_8g"), TINY + list(extra))
    torch.manual_seed(0)
    return cfg, create_model(cfg)


def features(model, cfg, buckets: int) -> TextFeatures:
    te = cfg.model.text_encoder
    return TextFeatures(model, build_tokenizer(te.name, te.tokenizer), te.max_length, cache=False, buckets=buckets)


def batch() -> dict:
    torch.manual_seed(1)
    return {
        "image": torch.randn(len(CAPTIONS), 3, 32, 32),
        "caption": CAPTIONS,
        "question": QUESTIONS,
        "answer": ANSWERS,
        "entities": ENTITIES,
    }


def test_the_plan_pads_least_of_all_cuts_of_the_sorted_lengths():
    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.randint(1, 12) for _ in range(rng.randint(1, 8))]
        buckets = rng.randint(1, 4)
        ends = plan_buckets(lengths, buckets)
        assert ends == sorted(set(ends)) and ends[-1] == len(lengths) and len(ends) <= buckets
        ordered = sorted(lengths)
        best = min(
            sum((e - s) * ordered[e - 1] for s, e in itertools.pairwise((0, *cuts, len(ordered))))
            for r in range(buckets)
            for cuts in itertools.combinations(range(1, len(ordered)), r)
        )
        assert padded_tokens(lengths, buckets) == best
    assert plan_buckets([5, 77, 5, 20, 20], 3) == [2, 4, 5]
    assert padded_tokens([5, 77, 5, 20, 20], 0) == 5 * 77
    assert padded_tokens([5, 77, 5, 20, 20], 3) == 2 * 5 + 2 * 20 + 77


def test_bucketed_features_equal_one_padded_pass_per_text_in_order():
    cfg, model = tiny_model()
    model.eval()
    texts = CAPTIONS + ANSWERS
    with torch.no_grad():
        p0, t0, m0 = features(model, cfg, 0).encode(texts)
        p3, t3, m3 = features(model, cfg, 3).encode(texts)
        alone = torch.cat([features(model, cfg, 0).encode([t])[0] for t in texts])
    assert torch.equal(m0, m3)
    torch.testing.assert_close(p3, p0, rtol=0, atol=1e-5)
    torch.testing.assert_close(p3, alone, rtol=0, atol=1e-5)  # order kept: row i is text i
    real = m0.bool()
    torch.testing.assert_close(t3[real], t0[real], rtol=0, atol=1e-5)  # padding changes no real token


def flat_grads(model, part: str = "") -> torch.Tensor:
    return torch.cat([p.grad.flatten() for n, p in model.named_parameters() if p.grad is not None and part in n])


@pytest.mark.parametrize("mask_padding", [False, True])
def test_a_training_step_has_the_same_losses_and_gradients_with_buckets(mask_padding):
    cfg, model = tiny_model([*NO_DROPOUT, f"model.entity_decoder.mask_padding={str(mask_padding).lower()}"])
    model.train()
    results = []
    for buckets in (0, 4):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(2)  # the same Gumbel noise in both steps
        losses = compute_losses(model, batch(), features(model, cfg, buckets), cfg.model)
        losses["total"].backward()
        results.append(({k: v.detach() for k, v in losses.items()}, flat_grads(model)))
    (l0, g0), (l4, g4) = results
    assert set(l0) == set(l4) == {"contrast", "entity", "multi_label", "total"}
    for name in l0:
        torch.testing.assert_close(l4[name], l0[name], rtol=0, atol=1e-5)
    # the projectors' BatchNorm over 6 samples amplifies rounding: a 1e-7 relative change of the text
    # features alone moves the whole gradient by ~2e-4 (relative norm); buckets move it by ~1e-4
    assert (g4 - g0).norm() / g0.norm() < 1e-3


def test_text_encoder_gradients_through_buckets_and_shared_duplicates_equal_one_padded_pass():
    cfg, model = tiny_model(NO_DROPOUT)
    model.train()
    texts = CAPTIONS + ANSWERS + QUESTIONS  # duplicates within and across the passes
    weights = torch.randn(len(texts), 64, generator=torch.Generator().manual_seed(3))
    grads = []
    for buckets in (0, 4):
        model.zero_grad(set_to_none=True)
        pooled, tokens, mask = features(model, cfg, buckets).encode(texts)
        ((pooled * weights).sum() + (tokens * mask[..., None]).square().sum()).backward()
        grads.append(flat_grads(model, "text_encoder"))
    assert (grads[1] - grads[0]).norm() / grads[0].norm() < 1e-5  # measured 4e-7


def test_duplicates_share_features_only_without_dropout():
    cfg, model = tiny_model()  # BERT's default dropout 0.1, active in train mode
    model.train()
    text = features(model, cfg, 4)
    assert not text.deterministic()
    torch.manual_seed(0)
    pooled = text.encode(["a dog", "a dog"])[0]
    assert not torch.equal(pooled[0], pooled[1])  # each copy its own dropout draw, as in one padded pass
    model.eval()
    assert text.deterministic()
    with torch.no_grad():
        pooled, tokens, mask = text.encode(["a dog", "two cats", "a dog"])
    assert torch.equal(pooled[0], pooled[2]) and tokens.shape[:2] == mask.shape == (3, 4)


def test_passes_encoded_together_keep_each_pass_its_own_padding():
    cfg, model = tiny_model()
    model.eval()
    text = features(model, cfg, 2)
    with torch.no_grad():
        together = text.encode_many({"caption": CAPTIONS, "answer": ANSWERS})
        alone = {
            name: features(model, cfg, 0).encode(texts)
            for name, texts in {"caption": CAPTIONS, "answer": ANSWERS}.items()
        }
    for name in alone:
        assert torch.equal(together[name][2], alone[name][2])  # the same mask, the same width
        torch.testing.assert_close(together[name][0], alone[name][0], rtol=0, atol=1e-5)


def test_a_negative_bucket_count_is_refused():
    cfg, model = tiny_model()
    with pytest.raises(ConfigError, match=r"train.text_buckets: expected an integer >= 0"):
        features(model, cfg, -1)
