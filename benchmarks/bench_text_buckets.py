"""Text passes of one stage-1 step: one padded pass each (``train.text_buckets=0``) vs length buckets.

BERT-base built from its configuration (random weights, no download), trainable and in train mode as in
stage 1. Captions follow a CC12M-like token-length distribution (log-normal, mean ~20 tokens, tail to
77); the masked caption has the caption's length, the answer is "a photo of e1 and e2 …". The two paths
alternate step by step; each step's process CPU time is taken (forward, and backward with
``--backward``). Tokens processed (padded positions included) are counted for the timed batch and, over
``--count-batches`` further batches of ``--count-size``, without running the encoder: those figures do
not depend on the machine.

    python benchmarks/bench_text_buckets.py --batch 32 --reps 2
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time

import torch

from ovseg.config import load_config
from ovseg.engine.text_buckets import padded_tokens
from ovseg.engine.text_features import TextFeatures
from ovseg.factory import create_model, preset_path
from ovseg.model.text import build_tokenizer

WORDS = ("dog cat man woman car tree house road street city water sky table chair room light white black red blue "
         "green small large old new young two three people child boy girl window door wall floor field grass").split()


def sample_step(rng: random.Random, batch: int) -> dict[str, list[str]]:
    """One step's captions, masked captions and answers; caption length log-normal, clipped to 3..75 words."""
    captions, questions, answers = [], [], []
    for _ in range(batch):
        n = min(75, max(3, round(rng.lognormvariate(math.log(15), 0.55))))
        words = [rng.choice(WORDS) for _ in range(n)]
        masked = rng.sample(range(n), k=min(n, rng.randint(1, 3)))
        captions.append(" ".join(words))
        questions.append(" ".join("[MASK]" if i in masked else w for i, w in enumerate(words)))
        answers.append("a photo of " + " and ".join(words[i] for i in sorted(masked)))
    return {"caption": captions, "question": questions, "answer": answers}


def token_counts(tokenizer, passes: dict[str, list[str]], max_length: int) -> dict[str, list[int]]:
    return {k: [len(ids) for ids in tokenizer(v, truncation=True, max_length=max_length)["input_ids"]]
            for k, v in passes.items()}


def processed(counts: dict[str, list[int]], buckets: int, alone: tuple[str, ...]) -> int:
    """Token positions the encoder runs: each pass padded alone (buckets 0, or the passes in ``alone``),
    the rest in one set of buckets."""
    if buckets == 0:
        return sum(padded_tokens(c, 0) for c in counts.values())
    shared = [n for k, c in counts.items() if k not in alone for n in c]
    return padded_tokens(shared, buckets) + sum(padded_tokens(counts[k], 0) for k in alone if k in counts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--buckets", type=int, default=4)
    p.add_argument("--backward", action="store_true")
    p.add_argument("--mask-padding", action="store_true",
                   help="the entity decoder masks padding, so the masked captions are bucketed too")
    p.add_argument("--count-batches", type=int, default=200)
    p.add_argument("--count-size", type=int, default=128)
    args = p.parse_args()
    cfg = load_config(preset_path("ovsegmentor/vit_b16_bert_8g"), ["model.text_encoder.pretrained=false"])
    te = cfg.model.text_encoder
    tokenizer = build_tokenizer(te.name, te.tokenizer)
    alone = () if args.mask_padding else ("question",)
    rng = random.Random(0)
    totals = {0: 0, args.buckets: 0}
    for _ in range(args.count_batches):
        counts = token_counts(tokenizer, sample_step(rng, args.count_size), te.max_length)
        for b in totals:
            totals[b] += processed(counts, b, alone)
    real = None
    torch.manual_seed(0)
    model = create_model(cfg).train()
    step = sample_step(random.Random(1), args.batch)
    counts = token_counts(tokenizer, step, te.max_length)
    real = sum(map(sum, counts.values()))
    texts = {b: TextFeatures(model, tokenizer, te.max_length, cache=False, buckets=b) for b in totals}
    seconds = {b: [] for b in totals}
    for rep in range(args.reps + 1):  # the first round warms up
        for b, text in texts.items():
            start = time.process_time()
            with torch.set_grad_enabled(args.backward):
                feats = text.encode_many(step, pad_outputs=alone)
                if args.backward:
                    sum(f[0].sum() + f[1].sum() for f in feats.values()).backward()
                    model.zero_grad(set_to_none=True)
            if rep:
                seconds[b].append(time.process_time() - start)
    for b in totals:
        print(json.dumps({"buckets": b, "batch": args.batch, "backward": args.backward,
                          "mask_padding": args.mask_padding, "cpu_s_per_step": min(seconds[b]),
                          "cpu_s_all": seconds[b], "tokens_processed": processed(counts, b, alone),
                          "tokens_real": real, "tokens_per_step_at_count_size": totals[b] / args.count_batches,
                          "count_size": args.count_size, "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
