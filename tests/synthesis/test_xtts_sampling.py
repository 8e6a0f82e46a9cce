"""The batched XTTS sampler against Hugging Face's own logits processors, row by row."""

import pytest

torch = pytest.importorskip("torch")
logits_process = pytest.importorskip("transformers.generation.logits_process")

from synthesis.engines.xtts_sampling import process_logits, sample  # noqa: E402

PLACEHOLDER = 1  # XTTS's prompt is fed to generate() as input_ids full of 1


def make_batch(seed, batch, vocab, dtype=torch.float32):
    """Random logits, histories and per-row settings, plus each row's HF-style input_ids."""
    g = torch.Generator().manual_seed(seed)

    def pick(options):
        return [options[i] for i in torch.randint(len(options), (batch,), generator=g).tolist()]

    start, stop = vocab - 2, vocab - 1
    logits = (torch.randn(batch, vocab, generator=g) * 4).to(dtype)
    input_ids, generated = [], []
    seen = torch.zeros(batch, vocab, dtype=torch.bool)
    for row in range(batch):
        n = int(torch.randint(0, 30, (1,), generator=g))
        history = torch.randint(0, min(vocab, 12), (n,), generator=g).tolist()  # small range: repeats
        ids = [PLACEHOLDER] * int(torch.randint(1, 6, (1,), generator=g)) + [start] + history
        input_ids.append(torch.tensor([ids]))
        generated.append(n)
        seen[row, ids] = True
    settings = dict(
        temperature=pick([0.75, 1.0, 0.3, 1.7]),
        top_k=pick([50, 0, 1, 5, vocab, vocab + 100]),
        top_p=pick([0.85, 1.0, 0.5, 0.99, 0.1, 0.0]),
        repetition_penalty=pick([10.0, 1.0, 1.3, 0.8]),
        ban_stop=pick([True, False]),
    )
    return logits, seen, input_ids, generated, settings, as_tensors(settings), stop


def as_tensors(settings):
    return dict(
        temperature=torch.tensor(settings["temperature"]),
        top_k=torch.tensor(settings["top_k"], dtype=torch.int64),
        top_p=torch.tensor(settings["top_p"], dtype=torch.float64),
        repetition_penalty=torch.tensor(settings["repetition_penalty"]),
        ban_stop=torch.tensor(settings["ban_stop"]),
    )


def hf_row(logits_row, ids, generated, s, row, stop):
    """What transformers' generate() would do for one row (same processors, same order, same skips)."""
    lp = logits_process
    processors = []
    if s["repetition_penalty"][row] != 1.0:
        processors.append(lp.RepetitionPenaltyLogitsProcessor(s["repetition_penalty"][row]))
    if s["ban_stop"][row]:  # min_new_tokens not reached yet
        processors.append(lp.MinNewTokensLengthLogitsProcessor(ids.shape[1] - generated, generated + 1, stop))
    if s["temperature"][row] != 1.0:
        processors.append(lp.TemperatureLogitsWarper(s["temperature"][row]))
    if s["top_k"][row] != 0:
        processors.append(lp.TopKLogitsWarper(top_k=s["top_k"][row], min_tokens_to_keep=1))
    if s["top_p"][row] < 1.0:
        processors.append(lp.TopPLogitsWarper(top_p=s["top_p"][row], min_tokens_to_keep=1))
    return lp.LogitsProcessorList(processors)(ids, logits_row[None].float())[0]


@pytest.mark.parametrize("vocab", [40, 8194])
@pytest.mark.parametrize("seed", range(6))
def test_process_logits_matches_hugging_face_row_by_row(seed, vocab):
    # Half-precision logits (upcast, as HF does) have many ties, which top-k and top-p must break as HF does.
    dtype = {4: torch.float16, 5: torch.bfloat16}.get(seed, torch.float32)
    logits, seen, input_ids, generated, settings, tensors, stop = make_batch(seed, 16, vocab, dtype)
    ours = process_logits(logits, seen, stop_token=stop, **tensors)
    assert ours.dtype == torch.float32 and ours.shape == (16, vocab)
    for row in range(16):
        ref = hf_row(logits[row], input_ids[row], generated[row], settings, row, stop)
        assert torch.equal(torch.isinf(ours[row]), torch.isinf(ref)), f"row {row}: -inf in different places"
        assert torch.equal(ours[row], ref), f"row {row}: finite scores differ"
        if settings["ban_stop"][row]:
            assert ours[row, stop] == float("-inf")
        assert torch.isfinite(ours[row]).any()


def test_top_p_edge_cases_match_hugging_face():
    # Row 0: the first ascending cumulative probability is exactly float32(0.15) = 1 - 0.85 (XTTS's
    # default top_p), so HF removes that token (<=, with the cut-off rounded from Python floats).
    # Row 1: top_p = 0 still keeps the single most likely token.
    logits = torch.tensor([[-0.42133936285972595, 0.0, 1.0], [0.0, 1.0, 2.0]])
    assert logits[:1].softmax(-1)[0, 0] == torch.tensor(1 - 0.85, dtype=torch.float32)
    settings = dict(temperature=[1.0, 1.0], top_k=[0, 0], top_p=[0.85, 0.0], repetition_penalty=[1.0, 1.0],
                    ban_stop=[False, False])
    seen = torch.zeros(2, 3, dtype=torch.bool)
    ours = process_logits(logits, seen, stop_token=2, **as_tensors(settings))
    for row in range(2):
        assert torch.equal(ours[row], hf_row(logits[row], torch.tensor([[0]]), 0, settings, row, 2))
    assert ours.isinf().tolist() == [[True, False, False], [True, True, False]]


def test_rows_without_top_k_or_top_p_keep_every_token():
    logits, seen, _, _, _, tensors, stop = make_batch(7, 8, 40)
    tensors.update(
        top_k=torch.tensor([0, 40, 1000, 0, 0, 40, 1000, 0]),
        top_p=torch.ones(8, dtype=torch.float64),
        ban_stop=torch.zeros(8, dtype=torch.bool),
    )
    assert torch.isfinite(process_logits(logits, seen, stop_token=stop, **tensors)).all()


def test_sample_greedy_rows_take_argmax():
    scores = torch.randn(16, 8194, generator=torch.Generator().manual_seed(0))
    greedy = torch.arange(16) % 2 == 0
    tokens = sample(scores, greedy=greedy, generator=torch.Generator().manual_seed(1))
    assert tokens.dtype == torch.int64 and tokens.shape == (16,)
    assert torch.equal(tokens[greedy], scores.argmax(dim=-1)[greedy])


def test_sample_never_draws_a_filtered_token():
    logits, seen, _, _, _, tensors, stop = make_batch(3, 16, 8194)
    scores = process_logits(logits, seen, stop_token=stop, **tensors)
    repeats = 256
    tokens = sample(
        scores.repeat(repeats, 1), greedy=torch.zeros(16 * repeats, dtype=torch.bool),
        generator=torch.Generator().manual_seed(2),
    )
    picked = scores.repeat(repeats, 1).gather(1, tokens[:, None])
    assert torch.isfinite(picked).all()


def test_sample_follows_softmax():
    scores = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, float("-inf"), 1.5, float("-inf")]])
    draws = 40_000
    tokens = sample(
        scores.expand(draws, -1), greedy=torch.zeros(draws, dtype=torch.bool),
        generator=torch.Generator().manual_seed(3),
    )
    observed = torch.bincount(tokens, minlength=8).double() / draws
    expected = scores[0].double().softmax(dim=-1)
    assert observed[5] == 0 and observed[7] == 0
    assert (observed - expected).abs().max() < 0.01


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_captures_in_a_cuda_graph():
    logits, seen, _, _, _, tensors, stop = make_batch(4, 16, 8194)
    cpu = process_logits(logits, seen, stop_token=stop, **tensors)
    cuda_inputs = {name: t.cuda() for name, t in tensors.items()}
    logits, seen = logits.cuda(), seen.cuda()
    gpu = process_logits(logits, seen, stop_token=stop, **cuda_inputs)
    assert torch.equal(torch.isinf(gpu).cpu(), torch.isinf(cpu))
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)

    greedy = (torch.arange(16) % 3 == 0).cuda()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up off the default stream before capture
        sample(process_logits(logits, seen, stop_token=stop, **cuda_inputs), greedy=greedy)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        scores = process_logits(logits, seen, stop_token=stop, **cuda_inputs)
        tokens = sample(scores, greedy=greedy)
    for _ in range(5):
        graph.replay()
        torch.cuda.synchronize()
        assert torch.isfinite(scores.gather(1, tokens[:, None])).all()
        assert torch.equal(tokens[greedy], scores.argmax(dim=-1)[greedy])
