"""Many XTTS streams on one model at once: continuous batching of the GPT and batched HiFi-GAN windows.

One loop thread per engine owns the model. Job threads submit sentences (`BatchLoop.submit`) and read their
audio from a queue per sentence; nothing serializes whole streams. Each loop iteration:
  1. admits waiting sentences into free slots: their prefixes (conditioning latents, text, start token) are
     prefilled together, right-padded to the longest;
  2. runs one decode step for every slot in use at once, over a KV cache with a position per row (each
     stream is at its own length), then samples each row with its own parameters and history;
  3. cuts the HiFi-GAN windows of the rows that have a chunk ready and hands them to the vocoder thread;
  4. lets finished, cancelled and failed rows leave, freeing their slots at once.
The vocoder thread (on CUDA, its own stream) runs HiFi-GAN on windows of equal length together, first chunks
first (a new caller's first audio does not wait behind the others' later chunks), while the GPT goes on
decoding; windows that arrive meanwhile make its next batch bigger.

GPT-2 here has no rotary embedding and XTTS replaces its position table by zeros, so a row's position only
decides where its K/V go in the cache and which cache entries it attends to; the audio position embedding
is added to the input. Slots are handed out lowest first and the decode step runs over slots [0, n) for the
smallest bucket n covering the highest slot in use, so the batch is a contiguous view of the cache (on CUDA
each bucket's step is one CUDA graph; free and paused slots in it compute into places that nobody reads).
Attention reads the cache up to a length bucket covering the longest row, not the whole preallocated length.
"""
import collections
import contextlib
import logging
import math
import queue
import sys
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


def _to_device(values: list, device: torch.device) -> torch.Tensor:
    """Host integers to the device without waiting for the GPU: a copy from pageable memory synchronizes the
    stream first (the CPU would stop feeding the GPU several times a step), one from pinned memory does not."""
    host = torch.tensor(values, dtype=torch.long)
    return host.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else host


def _length_bucket(length: int, max_len: int) -> int:
    """Cache lengths a decode step attends over: powers of two from 128, capped at the cache's length."""
    return min(max_len, 1 << max(7, (length - 1).bit_length()))


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
        lengths = _to_device([p.shape[1] for p in prefixes], self.device)
        longest = int(max(p.shape[1] for p in prefixes))
        x = torch.cat([F.pad(p, (0, 0, 0, longest - p.shape[1])) for p in prefixes]).to(self.dtype)
        rows = _to_device(slots, self.device)
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
    """CUDA graphs of the decode step, one per (batch bucket, length bucket) (static shapes)."""

    def __init__(self, gpt: BatchedGpt):
        self.gpt = gpt
        self.graphs: dict[int, tuple] = {}
        self.pool = None

    def capture(self, n: int, length: int) -> None:
        gpt = self.gpt
        x = torch.zeros(n, 1, gpt.dim, dtype=gpt.dtype, device=gpt.device)
        positions = torch.zeros(n, dtype=torch.long, device=gpt.device)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm up (cuBLAS handles, allocator) outside the graph
                gpt.decode(x, positions, length)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            latents, logits = gpt.decode(x, positions, length)
        self.pool = graph.pool()
        self.graphs[n, length] = (graph, x, positions, latents, logits)

    def run(self, x, positions, length: int):
        graph, static_x, static_positions, latents, logits = self.graphs[x.shape[0], length]
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
    windows_pending: int = 0  # HiFi-GAN windows cut and not yet vocoded (they count as unread audio)
    times: dict = field(default_factory=dict)  # perf_counter() at submitted, admitted, first_window, first_audio
    failed: bool = False  # an exception went to `audio`: nothing more is made for it

    def cancel(self) -> None:
        self.cancelled.set()

    @property
    def abandoned(self) -> bool:
        return self.failed or self.cancelled.is_set()


@dataclass(eq=False)
class _VocodeJob:
    """A window to vocode for a sentence (None: nothing new), and whether it is the sentence's last."""

    sentence: Sentence
    decoder: object  # the row's xtts._LatentWindowDecoder
    window: object  # xtts._Window | None
    last: bool
    ready: object = None  # CUDA event after which the window's frames exist

    @property
    def key(self) -> tuple:
        """Windows that can share one HiFi-GAN call: first windows apart (they go first), equal lengths."""
        return not self.window.first, self.window.z.shape[-1]


class _Vocoder:
    """HiFi-GAN for every row's windows on its own thread (and, on CUDA, its own stream), so the GPT's decode
    steps go on while audio is made. Each call takes the most urgent group: first windows before later ones,
    then the group of the oldest window; one window per sentence per call (a sentence's audio stays in order)
    and at most `max_batch` (a new caller's first window waits behind one call at most)."""

    def __init__(self, device: torch.device, *, max_batch: int):
        self.max_batch = max_batch
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._pending: list[_VocodeJob] = []
        self._wake = threading.Condition()
        self.calls = 0
        self.windows = 0
        self.call_seconds = 0.0  # moving average of one HiFi-GAN call
        self.first_audio: collections.deque[dict] = collections.deque(maxlen=1024)  # recent sentences' times
        self._thread = threading.Thread(target=self._run, name="xtts-vocoder", daemon=True)
        self._thread.start()

    def submit(self, jobs: list[_VocodeJob]) -> None:
        """From the loop thread: windows (and ends) in each sentence's order."""
        ready = None
        if self.stream is not None:
            ready = torch.cuda.Event()
            ready.record()
        with self._wake:
            for job in jobs:
                job.ready = ready
                job.sentence.windows_pending += 1
            self._pending.extend(jobs)
            self._wake.notify()

    def waiting(self) -> int:
        return len(self._pending)

    def _next(self) -> list[_VocodeJob]:
        with self._wake:
            while not self._pending:
                self._wake.wait()
            heads, seen = [], set()
            for job in self._pending:  # each sentence's oldest job
                if id(job.sentence) not in seen:
                    seen.add(id(job.sentence))
                    heads.append(job)
            nothing_to_make = [job for job in heads if job.window is None or job.sentence.abandoned]
            if nothing_to_make:
                batch = nothing_to_make
            else:
                key = min(heads, key=lambda job: job.key[0]).key  # a first window if any, else the oldest
                batch = [job for job in heads if job.key == key][: self.max_batch]
            taken = set(map(id, batch))
            self._pending = [job for job in self._pending if id(job) not in taken]
            return batch, not nothing_to_make

    def _run(self) -> None:
        while True:
            batch, make = self._next()
            try:
                if make:
                    self._vocode(batch)
            except Exception as exc:
                logger.exception("XTTS vocoder failed")
                for job in batch:
                    job.sentence.failed = True
                    job.sentence.audio.put(exc)
            with self._wake:
                for job in batch:
                    job.sentence.windows_pending -= 1
                    if job.last and not job.sentence.abandoned:
                        job.sentence.audio.put(END)

    def _vocode(self, batch: list[_VocodeJob]) -> None:
        started = time.perf_counter()
        with torch.inference_mode(), (torch.cuda.stream(self.stream) if self.stream else contextlib.nullcontext()):
            if batch[0].ready is not None:
                for event in {id(job.ready): job.ready for job in batch}.values():
                    self.stream.wait_event(event)
            z = torch.cat([job.window.z for job in batch])
            g = torch.cat([job.decoder.g for job in batch])
            wav = batch[0].decoder.waveform(z, g).reshape(len(batch), -1).float().cpu()
        now = time.perf_counter()
        for job, audio in zip(batch, wav):
            job.sentence.audio.put(job.window.cut(audio))
            if job.window.first:
                job.sentence.times["first_audio"] = now
                self.first_audio.append(job.sentence.times)
        elapsed = time.perf_counter() - started
        self.call_seconds = 0.9 * self.call_seconds + 0.1 * elapsed if self.calls else elapsed
        self.calls += 1
        self.windows += len(batch)


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
                 chunk_tokens: int, cuda_graphs: bool, max_unread_chunks: int = 8, vocoder_batch: int = 64):
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
        self.step_seconds = 0.0  # moving average of one iteration with rows in it, over the last busy spell
        self.steps = 0
        self.graphs = _DecodeGraphs(self.gpt) if cuda_graphs and self.device.type == "cuda" else None
        if self.graphs is not None:
            self._capture_graphs()
        self.vocoder = _Vocoder(self.device, max_batch=vocoder_batch)
        # The loop gives the GIL up around every kernel launch; a job thread running pure Python (text
        # normalization) keeps it, once it has it, for the whole switch interval (5 ms by default) before the
        # loop gets it back: with many callers starting at once that convoy stalls every stream's next step.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))
        self._thread = threading.Thread(target=self._run, name="xtts-batch-loop", daemon=True)
        self._thread.start()

    # --- job threads --------------------------------------------------------------------------------------
    def submit(self, sentence: Sentence) -> None:
        sentence.times["submitted"] = time.perf_counter()
        with self._wake:
            self._waiting.append(sentence)
            self._wake.notify()

    def stats(self) -> dict:
        return {
            "slots": self.slots,
            "slots_in_use": len(self._rows),
            "rows_paused": sum(not row.finished and self._behind(row) for row in list(self._rows.values())),
            "sentences_waiting": len(self._waiting),
            "step_ms": round(self.step_seconds * 1000, 2),
            "cuda_graphs": self.graphs is not None,
            "windows_waiting": self.vocoder.waiting(),
            "vocoder_call_ms": round(self.vocoder.call_seconds * 1000, 2),
            "vocoder_batch": round(self.vocoder.windows / max(1, self.vocoder.calls), 1),
        }

    # --- the loop -----------------------------------------------------------------------------------------
    def _capture_graphs(self) -> None:
        """One graph per bucket, checked against the eager step once; any doubt and the loop stays eager."""
        try:
            buckets = sorted({self._bucket(n) for n in range(1, self.slots + 1)})
            lengths = sorted({_length_bucket(n, self.gpt.max_len) for n in range(1, self.gpt.max_len + 1)})
            with torch.inference_mode():
                for n in buckets:
                    for length in lengths:
                        self.graphs.capture(n, length)
                x = torch.randn(buckets[0], 1, self.gpt.dim, device=self.device).to(self.gpt.dtype)
                positions = torch.zeros(buckets[0], dtype=torch.long, device=self.device)
                eager = self.gpt.decode(x, positions, lengths[0])[1].clone()
                replayed = self.graphs.run(x, positions, lengths[0])[1]
                if not torch.allclose(eager, replayed, atol=1e-2, rtol=1e-2):
                    raise RuntimeError("graph replay differs from the eager step")
        except Exception:
            logger.warning("XTTS decode runs eagerly: capturing CUDA graphs failed", exc_info=True)
            self.graphs = None

    def _run(self) -> None:
        while True:
            with self._wake:
                if not self._waiting and not self._rows:
                    self.steps = 0  # idle: the next busy spell is measured afresh
                while not self._waiting and not self._rows:
                    self._wake.wait()
            started = time.perf_counter()
            try:
                with torch.inference_mode():
                    busy = self._iterate()
            except Exception as exc:  # fail the rows in flight cleanly; the loop itself goes on
                logger.exception("XTTS batch loop failed")
                for row in list(self._rows.values()):
                    row.sentence.failed = True
                    row.sentence.audio.put(exc)
                    self._leave(row)
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
            row.sentence.audio.put(END)  # a reader that still reads stops here
            self._leave(row)
        admitted = self._admit()
        stepped = self._step()
        windows = self._cut_windows()
        for row in [r for r in self._rows.values() if r.finished and r.next_decode is None]:
            self._leave(row)  # its last window is with the vocoder, which ends the sentence after it
        return admitted or stepped or windows

    def _admit(self) -> bool:
        admitted = []
        with self._wake:
            while self._waiting and self._free:
                sentence = self._waiting.popleft()
                if sentence.cancelled.is_set():
                    sentence.audio.put(END)  # nobody reads it; a reader that still does stops here
                    continue
                self._free.sort()
                decoder = self.make_decoder(sentence.speaker_embedding, sentence.speed)
                admitted.append(_Row(sentence, self._free.pop(0), decoder, self.first_chunk_tokens))
        if not admitted:
            return False
        now = time.perf_counter()
        for row in admitted:
            options, slot = row.sentence.options, row.slot
            row.sentence.times["admitted"] = now
            self._seen[slot] = False
            self._seen[slot, PLACEHOLDER_TOKEN] = True
            self._seen[slot, self.gpt.start_token] = True
            self._params["temperature"][slot] = options.temperature
            self._params["top_k"][slot] = options.top_k
            self._params["top_p"][slot] = options.top_p
            self._params["repetition_penalty"][slot] = options.repetition_penalty
            self._greedy[slot] = options.greedy
            self._rows[slot] = row
        prefixes = [row.sentence.prefix.to(self.device) for row in admitted]
        latents, logits = self.gpt.prefill(prefixes, [row.slot for row in admitted])
        self._take(admitted, latents, logits, self._row_inputs(admitted))
        return True

    def _behind(self, row: _Row) -> bool:
        """Its reader has fallen behind: audio made and not read, and windows cut and not yet vocoded."""
        return row.sentence.audio.qsize() + row.sentence.windows_pending >= self.max_unread_chunks

    def _active(self) -> list[_Row]:
        """Rows that decode this step: not finished, and not paused for a reader that fell behind."""
        return [row for row in self._rows.values() if not row.finished and not self._behind(row)]

    def _step(self) -> bool:
        """One decode step for the active rows; False when there were none."""
        rows = self._active()
        if not rows:
            return False
        n = self._bucket(max(row.slot for row in rows) + 1)
        tokens, audio_positions, positions = [0] * n, [0] * n, [0] * n
        # Every occupied slot in the bucket gets its real next input at its real position (a paused row's step
        # rewrites the same K/V and its result is dropped); a free slot writes at its position 0, which its
        # next prefill overwrites.
        for row in self._rows.values():
            if row.slot < n and not row.finished:
                tokens[row.slot] = row.token
                audio_positions[row.slot] = len(row.latents)
                positions[row.slot] = row.sentence.prefix.shape[1] + len(row.latents) - 1
        length = max(positions) + 1
        tokens, audio_positions, positions = _to_device([tokens, audio_positions, positions], self.device)
        x = self.gpt.audio_embedding(tokens, audio_positions)[:, None]
        if self.graphs is not None:
            latents, logits = self.graphs.run(x, positions, _length_bucket(length, self.gpt.max_len))
        else:
            latents, logits = self.gpt.decode(x, positions, length)
        inputs = self._row_inputs(rows)
        self._take(rows, latents[inputs[0]], logits[inputs[0]], inputs)
        return True

    def _bucket(self, n: int) -> int:
        return min(_bucket(n), self.slots)

    def _row_inputs(self, rows: list[_Row]) -> torch.Tensor:
        """[3, n] on the device: the rows' slots, tokens generated so far, and min_new_tokens."""
        return _to_device([[row.slot for row in rows], [len(row.latents) for row in rows],
                           [row.sentence.options.min_new_tokens for row in rows]], self.device)

    def _take(self, rows: list[_Row], latents, logits, inputs) -> None:
        """Sample each row's next token from its logits; keep the latents; mark rows that are done."""
        slots, generated, minimum = inputs
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

    def _cut_windows(self) -> bool:
        """Hand the vocoder the windows of the rows with a chunk ready (and a finished row's end)."""
        jobs = []
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
            if window is not None and window.first:
                row.sentence.times["first_window"] = time.perf_counter()
            if window is not None or row.finished:
                jobs.append(_VocodeJob(row.sentence, row.decoder, window, last=row.finished))
        if jobs:
            self.vocoder.submit(jobs)
        return bool(jobs)

    def _leave(self, row: _Row) -> None:
        self._rows.pop(row.slot, None)
        with self._wake:
            self._free.append(row.slot)
