"""Mining counts equal a brute-force count of the bottleneck's choices."""

from __future__ import annotations

import torch

from codeunlearn.core.config import BottleneckConfig
from codeunlearn.data.batching import encode_texts, make_batches
from codeunlearn.model.bottleneck import NO_CODE
from codeunlearn.model.surgery import insert_bottleneck, recording, remove_bottleneck
from codeunlearn.unlearning.mining import count_codes


def test_counts_equal_brute_force(tiny_llama, tokenizer, texts):
    codebook_model = insert_bottleneck(
        tiny_llama, tokenizer, BottleneckConfig(layer=0, n_codes=16, top_k=3), "t"
    )
    batches = make_batches(encode_texts(tokenizer, texts, 32), 3, tokenizer.pad_token_id)
    counts = count_codes(codebook_model, batches)

    token_counts = torch.zeros(16, dtype=torch.long)
    example_counts = torch.zeros(16, dtype=torch.long)
    n_tokens = 0
    for text in texts:  # one example at a time: no padding, nothing shared
        ids = torch.tensor([encode_texts(tokenizer, [text], 32)[0]])
        with torch.no_grad(), recording(codebook_model) as outputs:
            codebook_model.model(input_ids=ids)
        codes = outputs[0].codes[0, 1:]  # position 0 is BOS
        assert (codes != NO_CODE).all()
        for code in codes.flatten().tolist():
            token_counts[code] += 1
        for code in set(codes.flatten().tolist()):
            example_counts[code] += 1
        n_tokens += codes.shape[0]
    assert counts.token_counts.tolist() == token_counts.tolist()
    assert counts.example_counts.tolist() == example_counts.tolist()
    assert counts.n_tokens == n_tokens and counts.n_examples == len(texts)
    assert counts.token_counts.sum() == 3 * n_tokens


def test_counts_of_a_masked_model_match_its_full_forward(tiny_llama, tokenizer, texts):
    for policy in ("next_best", "zero"):
        codebook_model = insert_bottleneck(
            tiny_llama, tokenizer, BottleneckConfig(layer=0, n_codes=16, top_k=3, mask_policy=policy), "t"
        )
        batches = make_batches(encode_texts(tokenizer, texts, 32), 3, tokenizer.pad_token_id)
        popular = torch.tensor(count_codes(codebook_model, batches).token_counts).topk(4).indices
        codebook_model.bottleneck.set_masked(popular)
        counts = count_codes(codebook_model, batches)
        expected = torch.zeros(16, dtype=torch.long)
        for batch in batches:
            with torch.no_grad(), recording(codebook_model) as outputs:
                codebook_model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            valid = batch.attention_mask.bool()
            valid[:, 0] = False
            fired = outputs[0].codes[valid]
            expected += torch.bincount(fired[fired != NO_CODE], minlength=16)
        assert counts.token_counts.tolist() == expected.tolist()
        assert counts.token_counts[popular.numpy()].sum() == 0
        remove_bottleneck(codebook_model)  # the next policy gets a fresh bottleneck on the same model
