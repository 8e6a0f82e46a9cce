"""Batched next-token sampling for XTTS v2's GPT, replacing Hugging Face ``generate()``.

Our continuously batched decode loop holds many streams in one batch, each with its own
sampling settings and token history, so HF's per-call logits processors (one setting for the
whole batch) no longer fit. This module reproduces what XTTS asked of ``generate()`` -
repetition penalty, min_new_tokens, temperature, top-k, top-p, then multinomial sampling -
with per-row parameters, in the order transformers 5.23 applies them
(``GenerationMixin._get_logits_processor``). Everything is shape-static tensor code with no
host synchronisation (no ``.item()``, no boolean indexing), so it can be captured in CUDA graphs.

A row's history is a ``seen`` [B, V] bool mask: XTTS feeds HF ``input_ids`` made of the prompt
placeholder id 1 and the start audio token before the generated tokens, and HF's repetition
penalty covers all of them, so ``seen`` starts with those two ids and gains every sampled token.
"""

import torch

NEG_INF = float("-inf")


def process_logits(
    logits: torch.Tensor,
    seen: torch.Tensor,
    *,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    repetition_penalty: torch.Tensor,
    ban_stop: torch.Tensor,
    stop_token: int,
) -> torch.Tensor:
    """Scores [B, V] float32 to sample from, as HF's processors would produce them row by row.

    ``temperature``, ``top_p`` and ``repetition_penalty`` are [B] float tensors, ``top_k`` [B]
    int64 (<= 0: no top-k, as HF skips ``top_k == 0``), ``ban_stop`` [B] bool (the row is still
    short of min_new_tokens, so the stop token is banned). A ``top_p`` >= 1 leaves a row alone,
    as HF skips ``top_p == 1.0``. Hold ``top_p`` as float64 for bit-exact cut-offs: HF computes
    ``1 - top_p`` in Python floats before comparing in float32.
    """
    scores = logits.float()
    vocab = scores.shape[-1]

    # RepetitionPenaltyLogitsProcessor: every token seen so far, once.
    penalty = repetition_penalty.to(scores.dtype)[:, None]
    scores = torch.where(seen, torch.where(scores < 0, scores * penalty, scores / penalty), scores)

    # MinNewTokensLengthLogitsProcessor: no stop token before min_new_tokens.
    is_stop = torch.arange(vocab, device=scores.device) == stop_token
    scores = scores.masked_fill(ban_stop[:, None] & is_stop, NEG_INF)

    # TemperatureLogitsWarper.
    scores = scores / temperature.to(scores.dtype)[:, None]

    # TopKLogitsWarper: keep scores >= the k-th largest, k clamped to [1, V].
    descending = torch.sort(scores, dim=-1, descending=True).values
    kth_largest = descending.gather(1, (top_k.clamp(1, vocab) - 1)[:, None])
    kth_largest = kth_largest.masked_fill(top_k[:, None] <= 0, NEG_INF)
    scores = scores.masked_fill(scores < kth_largest, NEG_INF)

    # TopPLogitsWarper. It sorts the top-k output again rather than reusing the sort above:
    # that is what HF does, and it decides which of two tied scores straddling the cut-off goes.
    ascending, order = torch.sort(scores, dim=-1)
    cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
    cutoff = (1 - top_p.double()).to(scores.dtype)[:, None]
    remove = (cumulative <= cutoff) & (top_p[:, None] < 1)
    remove[:, -1] = False  # keep at least min_tokens_to_keep=1 token
    return scores.masked_fill(remove.scatter(1, order, remove), NEG_INF)


def sample(scores: torch.Tensor, *, greedy: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Next tokens [B] int64: argmax where ``greedy`` [B] is True, else one draw from softmax(scores)."""
    probs = scores.softmax(dim=-1)
    drawn = torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
    return torch.where(greedy, scores.argmax(dim=-1), drawn)
