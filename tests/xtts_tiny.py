"""A tiny XTTS-v2-shaped checkpoint with random weights, for tests only.

No XTTS weights can be downloaded where the suite runs, yet the xtts engine should be exercised through the
real loading code, `Xtts.load_checkpoint(config, checkpoint_dir=...)`, not a mock. `build_tiny_xtts`
writes the three files that loader reads (config.json, vocab.json, model.pth) with the real architecture
shrunk where the config allows it: one 32-wide GPT layer with one head, the perceiver resampler (v2),
34 audio tokens, and a small BPE vocabulary with the special and language tokens VoiceBpeTokenizer
expects. The HiFi-GAN decoder and the speaker encoder have sizes fixed by the code, so the file is still
~90 MB: build it once per test session into a cache directory and never commit it.

The build is seeded, so two builds are byte-identical. The audio is noise: tests can assert shapes,
sample rates, chunking and timing, never what is said. With random weights the GPT samples [STOP]
early (after 1 to ~100 tokens, depending on the seed); pass `min_new_tokens` and `max_new_tokens`
(forwarded to Hugging Face generate) when a test needs a particular length.
"""

import os
from pathlib import Path

import torch
from tokenizers import Tokenizer
from tokenizers.models import BPE
from tokenizers.pre_tokenizers import Whitespace
from tokenizers.trainers import BpeTrainer
from TTS.tts.configs.xtts_config import XttsArgs, XttsAudioConfig, XttsConfig
from TTS.tts.models.xtts import Xtts

TINY_XTTS_LANGUAGES = ("en", "es", "fr", "de", "it", "pt")

SEED = 1234
# Same layout as the real vocab: [STOP]=0, [UNK]=1, [SPACE]=2, then the language tokens, then [START].
SPECIAL_TOKENS = ["[STOP]", "[UNK]", "[SPACE]", *(f"[{lang}]" for lang in TINY_XTTS_LANGUAGES), "[START]"]
# Everything multilingual_cleaners can leave behind for these languages, so no letter becomes [UNK].
ALPHABET = list("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?¡¿'-()&%$€@/àâäáãçèéêëìíîïñòóôöõœùúûüÿß")
CORPUS = [
    "hello world, thanks for calling! your appointment is confirmed for tuesday at three.",
    "please hold the line; an agent will be with you shortly. press one for sales, two for support.",
    "hola, gracias por llamar. ¿en qué puedo ayudarle? mañana por la mañana.",
    "bonjour, merci d'avoir appelé. votre rendez-vous est confirmé à dix heures, très bien.",
    "hallo, danke für ihren anruf. bitte warten sie einen moment, größe und straße.",
    "ciao, grazie per aver chiamato. perché è così? un attimo, per favore.",
    "olá, obrigado por ligar. não, a ligação está em espera, ação e opção.",
]

MODEL_ARGS = {
    "gpt_layers": 1,
    "gpt_n_model_channels": 32,
    "gpt_n_heads": 1,
    "gpt_use_perceiver_resampler": True,
    "gpt_num_audio_tokens": 34,
    "gpt_start_audio_token": 32,
    "gpt_stop_audio_token": 33,
    # Length limits as in the released XTTS v2 config: the tables they size are tiny at 32 channels, and
    # the text-length assert and the 602-token generation cap then behave as in production.
    "gpt_max_audio_tokens": 605,
    "gpt_max_text_tokens": 402,
    "gpt_max_prompt_tokens": 70,
    "decoder_input_dim": 32,
}


def _train_vocab() -> Tokenizer:
    tokenizer = Tokenizer(BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    trainer = BpeTrainer(
        vocab_size=256, special_tokens=SPECIAL_TOKENS, initial_alphabet=ALPHABET, show_progress=False
    )
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    return tokenizer


def build_tiny_xtts(directory: Path, **model_args) -> Path:
    """Write config.json, vocab.json and model.pth for a tiny random XTTS v2 into `directory`; return it.

    `model_args` override MODEL_ARGS (the GPU benchmark builds the full-size architecture this way).

    model.pth is written last, through a temporary name, so its presence means the build completed.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    tokenizer = _train_vocab()
    tokenizer.save(str(directory / "vocab.json"))

    config = XttsConfig(
        model_args=XttsArgs(
            **{**MODEL_ARGS, **model_args},
            # Xtts.init_models derives these from vocab.json on load; they are set here too, as in the
            # released config, so Xtts.init_from_config builds the GPT before a checkpoint is loaded.
            gpt_number_text_tokens=tokenizer.get_vocab_size(),
            gpt_start_text_token=tokenizer.token_to_id("[START]"),
            gpt_stop_text_token=tokenizer.token_to_id("[STOP]"),
        ),
        audio=XttsAudioConfig(),
        languages=list(TINY_XTTS_LANGUAGES),
    )
    config.save_json(str(directory / "config.json"))

    torch.manual_seed(SEED)
    model = Xtts(config)  # what Xtts.init_from_config (deprecated) does
    model.mel_stats.fill_(1.0)  # per-mel-channel normalisers of the conditioning mel; ones = no scaling
    state_dict = {name: tensor.detach().clone().contiguous() for name, tensor in model.state_dict().items()}
    partial = directory / "model.pth.partial"
    torch.save({"model": state_dict}, partial)
    os.replace(partial, directory / "model.pth")
    return directory
