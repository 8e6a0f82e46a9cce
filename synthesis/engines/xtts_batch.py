"""Many XTTS streams on one model at once: continuous batching of the GPT and batched HiFi-GAN windows.

One loop thread per engine owns the model. Job threads submit sentences (`BatchLoop.submit`) and read their
audio from a queue per sentence; nothing serializes whole streams. Each loop iteration:
  1. admits waiting sentences into free slots: their prefixes (conditioning latents, text, start token) are
     prefilled together, right-padded to the longest;
  2. runs one decode step for every slot in use at once, over a KV cache with a position per row (each
     stream is at its own length), then samples each row with its own parameters and history;
  3. decodes the HiFi-GAN windows of the rows that have a chunk ready, windows of equal length together,
     first chunks first (a new caller's first audio does not wait behind the others' later chunks);
  4. lets finished, cancelled and failed rows leave, freeing their slots at once.

GPT-2 here has no rotary embedding and XTTS replaces its position table by zeros, so a row's position only
decides where its K/V go in the cache and which cache entries it attends to; the audio position embedding
is added to the input. Slots are handed out lowest first and the decode step runs over slots [0, n) for the
smallest bucket n covering the highest slot in use, so the batch is a contiguous view of the cache (on CUDA
each bucket's step is one CUDA graph; free and paused slots in it compute into places that nobody reads).
"""
import collections
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from synthesis.engines.xtts_sampling import process_logits, sample

logger = logging.getLogger(__name__)

PLACEHOLDER_TOKEN = 1  # the prompt's input ids in Hugging Face generate(): penalized by its repetition penalty
END = object()  # a sentence's queue: no more audio


def _bucket(n: int) -> int:
    """Batch sizes a decode step runs at: powers of two up to 32, then multiples of 32."""
    return 1 << max(0, (n - 1).bit_length()) if n <= 32 else 32 * math.ceil(n / 32)


@dataclass
class SamplingOptions:
    temperature: float = 0.75
    top_k: int = 50
    top_p: float = 0.85
    repetition_penalty: float = 10.0
    greedy: bool = False
    min_new_tokens: int = 0
    max_new_tokens: int = 0  # 0: the model's own limit


class BatchedGpt:
    """XTTS's GPT-2 over a preallocated KV cache with a position per slot."""

    def __init__(self, gpt, *, slots: int, dtype: torch.dtype, device: torch.device):
        self.gpt = gpt
        self.blocks = list(gpt.gpt.h)
        self.dtype = dtype
        self.device = device
        self.heads = gpt.heads
        self.dim = gpt.model_dim
        self.head_dim = self.dim // self.heads
        self.stop_token = gpt.stop_audio_token
        self.start_token = gpt.start_audio_token
        self.vocab = gpt.mel_head.out_features
        self.max_new_tokens = gpt.max_gen_mel_tokens
        self.max_len = self.cache_length(gpt)
        self.slots = slots
        shape = (len(self.blocks), slots, self.heads, self.max_len, self.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.scales = []
        for index, block in enumerate(self.blocks):
            scale = self.head_dim ** -0.5 if block.attn.scale_attn_weights else 1.0
            if block.attn.scale_attn_by_inverse_layer_idx:
                scale /= index + 1
            self.scales.append(scale)

    @staticmethod
    def cache_length(gpt) -> int:
        """Positions per slot: conditioning latents (32 with the perceiver resampler), text with its start and
        stop tokens, the start audio token, then the generated tokens."""
        return 32 + gpt.max_text_tokens + 1 + gpt.max_gen_mel_tokens + 1

    @classmethod
    def bytes_per_slot(cls, gpt, dtype: torch.dtype) -> int:
        return 2 * len(gpt.gpt.h) * gpt.model_dim * cls.cache_length(gpt) * torch.finfo(dtype).bits // 8

    # --- the pieces of one layer --------------------------------------------------------------------------
    def _norm(self, module, x):
        """LayerNorm in float32 whatever the model's dtype."""
        return F.layer_norm(x.float(), module.normalized_shape, module.weight.float(), module.bias.float(),
                            module.eps).to(self.dtype)

    def _mlp_and_residual(self, block, x):
        return x + block.mlp(self._norm(block.ln_2, x))

    def _qkv(self, block, x):
        n, t, _ = x.shape
        q, k, v = block.attn.c_attn(self._norm(block.ln_1, x)).split(self.dim, dim=2)
        return (t_.view(n, t, self.heads, self.head_dim).transpose(1, 2) for t_ in (q, k, v))

    def _out(self, block, attended, x):
        n, _, t, _ = attended.shape
        return x + block.attn.c_proj(attended.transpose(1, 2).reshape(n, t, self.dim))

    def _head(self, x):
        """Latents (after GPT-2's ln_f and XTTS's final_norm, as Hugging Face's path yields them) and logits,
        both in float32."""
        h = F.layer_norm(x.float(), self.gpt.gpt.ln_f.normalized_shape, self.gpt.gpt.ln_f.weight.float(),
                         self.gpt.gpt.ln_f.bias.float(), self.gpt.gpt.ln_f.eps)
        latents = self.gpt.final_norm(h)
        return latents, self.gpt.mel_head(latents)

    # --- embeddings ---------------------------------------------------------------------------------------
    def audio_embedding(self, tokens, positions):
        """Input of a decode step: the token's embedding plus its audio position's ([n] each)."""
        return (self.gpt.mel_embedding(tokens) + self.gpt.mel_pos_embedding.emb(positions)).to(self.dtype)

    def prefix(self, cond_latents, text_tokens):
        """[1, T, C]: conditioning latents, text (with its start and stop tokens), and the start audio token at
        audio position 0, exactly as Hugging Face's first forward pass builds it."""
        gpt = self.gpt
        text = F.pad(F.pad(text_tokens, (0, 1), value=gpt.stop_text_token), (1, 0), value=gpt.start_text_token)
        emb = gpt.text_embedding(text) + gpt.text_pos_embedding(text)
        start = torch.tensor([self.start_token], device=text.device)
        audio = gpt.mel_embedding(start) + gpt.mel_pos_embedding.emb(torch.zeros_like(start))
        return torch.cat([cond_latents.to(emb.dtype), emb, audio[None]], dim=1)

    # --- prefill and decode -------------------------------------------------------------------------------
    def prefill(self, prefixes: list, slots: list[int]):
        """Run new rows' prefixes, write their K/V into their slots; latents and logits at each one's last
        position ([n, C], [n, V])."""
        lengths = torch.tensor([p.shape[1] for p in prefixes], device=self.device)
        longest = int(max(p.shape[1] for p in prefixes))
        x = torch.cat([F.pad(p, (0, 0, 0, longest - p.shape[1])) for p in prefixes]).to(self.dtype)
        rows = torch.tensor(slots, device=self.device)
        causal = torch.ones(longest, longest, dtype=torch.bool, device=self.device).tril()
        for index, block in enumerate(self.blocks):
            q, k, v = self._qkv(block, x)
            self.k[index, rows, :, :longest] = k
            self.v[index, rows, :, :longest] = v
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=causal, scale=self.scales[index])
            x = self._mlp_and_residual(block, self._out(block, attended, x))
        last = x[torch.arange(len(prefixes), device=self.device), lengths - 1]
        return self._head(last)

    def decode(self, x, positions, length: int):
        """One step for slots [0, n): x [n, 1, C] written at `positions` [n]; attends to cache entries
        [0, length) up to each row's own position. Returns latents and logits ([n, C], [n, V])."""
        n = x.shape[0]
        rows = torch.arange(n, device=self.device)
        visible = (torch.arange(length, device=self.device)[None, :] <= positions[:, None])[:, None, None, :]
        for index, block in enumerate(self.blocks):
            q, k, v = self._qkv(block, x)
            self.k[index, rows, :, positions] = k[:, :, 0]
            self.v[index, rows, :, positions] = v[:, :, 0]
            attended = F.scaled_dot_product_attention(
                q, self.k[index, :n, :, :length], self.v[index, :n, :, :length], attn_mask=visible,
                scale=self.scales[index],
            )
            x = self._mlp_and_residual(block, self._out(block, attended, x))
        return self._head(x[:, 0])


class _DecodeGraphs:
    """CUDA graphs of the decode step, one per batch bucket, over the whole cache length (static shapes)."""

    def __init__(self, gpt: BatchedGpt):
        self.gpt = gpt
        self.graphs: dict[int, tuple] = {}
        self.pool = None

    def capture(self, n: int) -> None:
        gpt = self.gpt
        x = torch.zeros(n, 1, gpt.dim, dtype=gpt.dtype, device=gpt.device)
        positions = torch.zeros(n, dtype=torch.long, device=gpt.device)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm up (cuBLAS handles, allocator) outside the graph
                gpt.decode(x, positions, gpt.max_len)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            latents, logits = gpt.decode(x, positions, gpt.max_len)
        self.pool = graph.pool()
        self.graphs[n] = (graph, x, positions, latents, logits)

    def run(self, x, positions):
        graph, static_x, static_positions, latents, logits = self.graphs[x.shape[0]]
        static_x.copy_(x)
        static_positions.copy_(positions)
        graph.replay()
        return latents, logits


@dataclass
class Sentence:
    """One sentence of one stream, as a job thread submits it; its audio comes out of `audio`."""

    prefix: torch.Tensor  # [1, T, C]
    speaker_embedding: torch.Tensor  # [1, C_g, 1]
    speed: float
    options: SamplingOptions
    audio: queue.Queue = field(default_factory=queue.Queue)  # float tensors, then END (or an exception)
    cancelled: threading.Event = field(default_factory=threading.Event)
    tokens: list = field(default_factory=list)  # sampled so far (the loop appends; for tests and stats)
    latents: list = field(default_factory=list)  # [C] GPT latents so far, the same way

    def cancel(self) -> None:
        self.cancelled.set()


class _Row:
    """A sentence in a slot."""

    def __init__(self, sentence: Sentence, slot: int, decoder, first_chunk_tokens: int):
        self.sentence = sentence
        self.slot = slot
        self.decoder = decoder  # its HiFi-GAN windows (xtts._LatentWindowDecoder)
        self.latents: list[torch.Tensor] = sentence.latents  # [C] each
        self.token = 0  # the last sampled token, the next step's input
        self.finished = False
        self.next_decode: int | None = first_chunk_tokens  # tokens before the next window; None: all decoded


class BatchLoop:
    """The loop thread that owns the model; see the module docstring."""

    def __init__(self, model, *, slots: int, dtype: torch.dtype, make_decoder, first_chunk_tokens: int,
                 chunk_tokens: int, cuda_graphs: bool, max_unread_chunks: int = 8):
        self.device = next(model.parameters()).device
        self.gpt = BatchedGpt(model.gpt, slots=slots, dtype=dtype, device=self.device)
        self.make_decoder = make_decoder
        self.first_chunk_tokens = first_chunk_tokens
        self.chunk_tokens = chunk_tokens
        self.max_unread_chunks = max_unread_chunks
        self.slots = slots
        self._free = list(range(slots))  # a heap would do; slots are few and lowest-first keeps batches small
        self._rows: dict[int, _Row] = {}
        self._waiting: collections.deque[Sentence] = collections.deque()
        self._wake = threading.Condition()
        self._seen = torch.zeros(slots, self.gpt.vocab, dtype=torch.bool, device=self.device)
        self._params = {
            "temperature": torch.ones(slots, device=self.device),
            "top_k": torch.zeros(slots, dtype=torch.long, device=self.device),
            "top_p": torch.ones(slots, dtype=torch.float64, device=self.device),  # HF compares 1 - top_p in doubles
            "repetition_penalty": torch.ones(slots, device=self.device),
        }
        self._greedy = torch.zeros(slots, dtype=torch.bool, device=self.device)
        self.step_seconds = 0.0  # moving average of one iteration with rows in it
        self.steps = 0
        self.graphs = _DecodeGraphs(self.gpt) if cuda_graphs and self.device.type == "cuda" else None
        if self.graphs is not None:
            self._capture_graphs()
        self._thread = threading.Thread(target=self._run, name="xtts-batch-loop", daemon=True)
        self._thread.start()

    # --- job threads --------------------------------------------------------------------------------------
    def submit(self, sentence: Sentence) -> None:
        with self._wake:
            self._waiting.append(sentence)
            self._wake.notify()

    def stats(self) -> dict:
        return {
            "slots": self.slots,
            "slots_in_use": len(self._rows),
            "rows_paused": sum(not row.finished and row.sentence.audio.qsize() >= self.max_unread_chunks
                               for row in list(self._rows.values())),
            "sentences_waiting": len(self._waiting),
            "step_ms": round(self.step_seconds * 1000, 2),
            "cuda_graphs": self.graphs is not None,
        }

    # --- the loop -----------------------------------------------------------------------------------------
    def _capture_graphs(self) -> None:
        """One graph per bucket, checked against the eager step once; any doubt and the loop stays eager."""
        try:
            buckets = sorted({self._bucket(n) for n in range(1, self.slots + 1)})
            with torch.inference_mode():
                for n in buckets:
                    self.graphs.capture(n)
                x = torch.randn(buckets[0], 1, self.gpt.dim, device=self.device).to(self.gpt.dtype)
                positions = torch.zeros(buckets[0], dtype=torch.long, device=self.device)
                eager = self.gpt.decode(x, positions, self.gpt.max_len)[1].clone()
                replayed = self.graphs.run(x, positions)[1]
                if not torch.allclose(eager, replayed, atol=1e-2, rtol=1e-2):
                    raise RuntimeError("graph replay differs from the eager step")
        except Exception:
            logger.warning("XTTS decode runs eagerly: capturing CUDA graphs failed", exc_info=True)
            self.graphs = None

    def _run(self) -> None:
        while True:
            with self._wake:
                if not self._waiting and not self._rows:
                    self.steps, self.step_seconds = 0, 0.0  # idle: the next busy spell is measured afresh
                while not self._waiting and not self._rows:
                    self._wake.wait()
            started = time.perf_counter()
            try:
                with torch.inference_mode():
                    busy = self._iterate()
            except Exception as exc:  # fail the rows in flight cleanly; the loop itself goes on
                logger.exception("XTTS batch loop failed")
                for row in list(self._rows.values()):
                    row.sentence.audio.put(exc)
                    self._leave(row, end=False)
                busy = False
            if busy:
                elapsed = time.perf_counter() - started
                self.step_seconds = 0.9 * self.step_seconds + 0.1 * elapsed if self.steps else elapsed
                self.steps += 1
            else:  # every row is paused for its reader: look again shortly
                with self._wake:
                    self._wake.wait(0.005)

    def _iterate(self) -> bool:
        for row in [r for r in self._rows.values() if r.sentence.cancelled.is_set()]:
            self._leave(row)
        admitted = self._admit()
        stepped = self._step()
        vocoded = self._vocode()
        for row in [r for r in self._rows.values() if r.finished and r.next_decode is None]:
            self._leave(row)
        return admitted or stepped or vocoded

    def _admit(self) -> bool:
        admitted = []
        with self._wake:
            while self._waiting and self._free:
                sentence = self._waiting.popleft()
                if sentence.cancelled.is_set():
                    sentence.audio.put(END)
                    continue
                self._free.sort()
                decoder = self.make_decoder(sentence.speaker_embedding, sentence.speed)
                admitted.append(_Row(sentence, self._free.pop(0), decoder, self.first_chunk_tokens))
        if not admitted:
            return False
        for row in admitted:
            options, slot = row.sentence.options, row.slot
            self._seen[slot] = False
            self._seen[slot, [PLACEHOLDER_TOKEN, self.gpt.start_token]] = True
            self._params["temperature"][slot] = options.temperature
            self._params["top_k"][slot] = options.top_k
            self._params["top_p"][slot] = options.top_p
            self._params["repetition_penalty"][slot] = options.repetition_penalty
            self._greedy[slot] = options.greedy
            self._rows[slot] = row
        prefixes = [row.sentence.prefix.to(self.device) for row in admitted]
        latents, logits = self.gpt.prefill(prefixes, [row.slot for row in admitted])
        self._take(admitted, latents, logits)
        return True

    def _active(self) -> list[_Row]:
        """Rows that decode this step: not finished, and not paused for a reader that fell behind."""
        return [row for row in self._rows.values()
                if not row.finished and row.sentence.audio.qsize() < self.max_unread_chunks]

    def _step(self) -> bool:
        """One decode step for the active rows; False when there were none."""
        rows = self._active()
        if not rows:
            return False
        n = self._bucket(max(row.slot for row in rows) + 1)
        tokens = torch.zeros(n, dtype=torch.long)
        audio_positions = torch.zeros(n, dtype=torch.long)
        positions = torch.zeros(n, dtype=torch.long)
        # Every occupied slot in the bucket gets its real next input at its real position (a paused row's step
        # rewrites the same K/V and its result is dropped); a free slot writes at its position 0, which its
        # next prefill overwrites.
        for row in self._rows.values():
            if row.slot < n and not row.finished:
                tokens[row.slot] = row.token
                audio_positions[row.slot] = len(row.latents)
                positions[row.slot] = row.sentence.prefix.shape[1] + len(row.latents) - 1
        positions = positions.to(self.device)
        x = self.gpt.audio_embedding(tokens.to(self.device), audio_positions.to(self.device))[:, None]
        if self.graphs is not None:
            latents, logits = self.graphs.run(x, positions)
        else:
            latents, logits = self.gpt.decode(x, positions, int(positions.max()) + 1)
        index = torch.tensor([row.slot for row in rows], device=self.device)
        self._take(rows, latents[index], logits[index])
        return True

    def _bucket(self, n: int) -> int:
        return min(_bucket(n), self.slots)

    def _take(self, rows: list[_Row], latents, logits) -> None:
        """Sample each row's next token from its logits; keep the latents; mark rows that are done."""
        slots = torch.tensor([row.slot for row in rows], device=self.device)
        generated = torch.tensor([len(row.latents) for row in rows], device=self.device)
        minimum = torch.tensor([row.sentence.options.min_new_tokens for row in rows], device=self.device)
        scores = process_logits(
            logits, self._seen[slots], ban_stop=generated < minimum, stop_token=self.gpt.stop_token,
            **{name: values[slots] for name, values in self._params.items()},
        )
        tokens = sample(scores, greedy=self._greedy[slots])
        self._seen[slots, tokens] = True
        for row, latent, token in zip(rows, latents, tokens.tolist()):
            row.latents.append(latent)
            row.sentence.tokens.append(token)
            row.token = token
            cap = row.sentence.options.max_new_tokens or self.gpt.max_new_tokens
            row.finished = token == self.gpt.stop_token or len(row.latents) >= min(cap, self.gpt.max_new_tokens)

    def _vocode(self) -> bool:
        """HiFi-GAN windows of the rows with a chunk ready, equal lengths together, first chunks first."""
        ready = []
        for row in self._rows.values():
            if row.next_decode is None or not (row.finished or len(row.latents) >= row.next_decode):
                continue
            if row.finished:
                row.next_decode = None  # the last window: the row leaves after it
            else:
                # Chunks double up to chunk_tokens: small first for time to first audio, and each next one is
                # generated while the audio already sent plays.
                row.next_decode += min(self.chunk_tokens, len(row.latents))
            window = row.decoder.window(torch.stack(row.latents)[None], final=row.finished)
            if window is not None:
                ready.append((row, window))
        groups = collections.defaultdict(list)
        for row, window in ready:
            groups[(not window.first, window.z.shape[-1])].append((row, window))
        for key in sorted(groups):  # first chunks (False sorts first), then the rest
            members = groups[key]
            z = torch.cat([window.z for _, window in members])
            g = torch.cat([row.decoder.g for row, _ in members])
            wav = members[0][0].decoder.waveform(z, g).reshape(len(members), -1).float().cpu()
            for (row, window), audio in zip(members, wav):
                row.sentence.audio.put(window.cut(audio))
        return bool(ready)

    def _leave(self, row: _Row, end: bool = True) -> None:
        if end:
            row.sentence.audio.put(END)
        self._rows.pop(row.slot, None)
        with self._wake:
            self._free.append(row.slot)
