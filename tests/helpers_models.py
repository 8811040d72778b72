"""Write tiny random-init Llama checkpoints (config + safetensors + tokenizer) for tests and benchmarks.

Nothing is downloaded: the tokenizer is a word-level ``tokenizers`` model trained on a few sentences
and wrapped in :class:`transformers.PreTrainedTokenizerFast`; the weights are a seeded random init
from a :class:`transformers.LlamaConfig`.

Examples
--------
>>> from tests.helpers_models import write_tiny_llama          # doctest: +SKIP
>>> path = write_tiny_llama(tmp_path / "tiny", hidden_size=64)  # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the derivative of x squared? It is two x.",
    "Write a short poem about the sea and the moon.",
    "The court ruled that the contract was valid under state law.",
    "Photosynthesis turns light, water and carbon dioxide into sugar.",
    "def add(a, b): return a + b",
    "Solve for x: 3 x + 5 = 20, so x = 5.",
    "History tells us that empires rise and fall.",
    "A patient with fever and cough should see a doctor.",
    "Hello, how are you today? I am fine, thank you.",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def build_tokenizer(vocab_size: int = 256, chat_template: bool = True):
    """A small word-level tokenizer trained on :data:`SENTENCES` (no downloads)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins word tokens with spaces
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=specials, min_frequency=1)
    tok.train_from_iterator(SENTENCES, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_llama_config(
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    intermediate_size: int | None = None,
    num_heads: int = 4,
    vocab_size: int = 256,
    tie_word_embeddings: bool = False,
):
    """A :class:`transformers.LlamaConfig` for a tiny model."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or hidden_size * 3,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=256,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )


def write_tiny_llama(
    folder: str | Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    intermediate_size: int | None = None,
    num_heads: int = 4,
    vocab_size: int = 256,
    seed: int = 0,
    dtype: str = "float32",
    tie_word_embeddings: bool = False,
    chat_template: bool = True,
) -> Path:
    """Write a random-init tiny Llama (``config.json``, ``model.safetensors``, tokenizer) to ``folder``.

    Parameters
    ----------
    folder : path
        Created if needed; returned.
    hidden_size, num_layers, intermediate_size, num_heads, vocab_size : int
        Model shape. ``hidden_size=64, num_layers=2`` is ~0.1M parameters; ``hidden_size=512,
        num_layers=8`` is ~19M (vocab is small on purpose, so layers dominate).
    seed : int
        Seed for the random init (two calls with the same seed write identical weights).
    dtype : str
        Stored dtype (``"float32"``, ``"bfloat16"``, ``"float16"``).
    """
    import torch
    from transformers import LlamaForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab_size, chat_template=chat_template)
    vocab_size = max(vocab_size, len(tokenizer))
    config = tiny_llama_config(
        hidden_size=hidden_size,
        num_layers=num_layers,
        intermediate_size=intermediate_size,
        num_heads=num_heads,
        vocab_size=vocab_size,
        tie_word_embeddings=tie_word_embeddings,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(getattr(torch, dtype)).eval()
    with torch.no_grad():  # a larger init spread makes greedy outputs vary with the prompt
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.08)
        # special tokens and ids past the word list decode to nothing: zero their output rows so
        # greedy answers are words (an empty answer counts as an expert failure in the CoE)
        words = set(range(len(tokenizer))) - set(tokenizer.all_special_ids)
        dead = [i for i in range(vocab_size) if i not in words]
        model.get_output_embeddings().weight[dead] = 0.0
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def param_count(hidden_size: int, num_layers: int, vocab_size: int = 256, intermediate_size: int | None = None) -> int:
    """Parameter count of :func:`write_tiny_llama`'s model (untied embeddings)."""
    inter = intermediate_size or hidden_size * 3
    per_layer = 4 * hidden_size * hidden_size + 3 * hidden_size * inter + 2 * hidden_size
    return num_layers * per_layer + 2 * vocab_size * hidden_size + hidden_size
