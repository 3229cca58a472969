"""The model factory: a causal LM from the `model:` params (gpt2 or llama family), or an existing base model."""
from __future__ import annotations

from lifecycle.core import StageError
from lifecycle.params.model import ModelParams


def build_config(m: ModelParams, vocab_size: int, eos_id: int, pad_id: int):
    """A transformers config: gpt2 = learned positions, GELU, LayerNorm, MHA; llama = RoPE, SwiGLU, RMSNorm, GQA."""
    from transformers import GPT2Config, LlamaConfig

    common = dict(vocab_size=vocab_size, bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=pad_id,
                  tie_word_embeddings=m.tie_embeddings)
    if m.family == "gpt2":
        return GPT2Config(n_positions=m.context_length, n_embd=m.d_model, n_layer=m.n_layers, n_head=m.n_heads,
                          n_inner=m.d_ff, activation_function="gelu_new", resid_pdrop=m.dropout,
                          embd_pdrop=m.dropout, attn_pdrop=m.dropout, **common)
    return LlamaConfig(max_position_embeddings=m.context_length, hidden_size=m.d_model, num_hidden_layers=m.n_layers,
                       num_attention_heads=m.n_heads, num_key_value_heads=m.n_kv_heads or m.n_heads,
                       intermediate_size=m.d_ff, hidden_act="silu", attention_dropout=m.dropout, **common)


def load_base(name: str):
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(name, use_safetensors=True, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise StageError(f"params.yaml: model.base = {name!r}: cannot load it as a causal LM with safetensors "
                         f"weights ({str(err).splitlines()[0]})") from None


def build_model(m: ModelParams, tokenizer):
    """A fresh model sized for the tokenizer, or the base model (whose vocabulary must cover the tokenizer's)."""
    from transformers import AutoModelForCausalLM

    if m.base:
        model = load_base(m.base)
        if model.config.vocab_size < len(tokenizer):
            raise StageError(f"params.yaml: model.base = {m.base!r}: its vocabulary ({model.config.vocab_size}) is "
                             f"smaller than the tokenizer's ({len(tokenizer)}); "
                             "set tokenizer.pretrained to its tokenizer")
    else:
        config = build_config(m, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
        model = AutoModelForCausalLM.from_config(config, attn_implementation=m.attn_implementation)
    model.config.use_cache = False  # training: the KV cache only costs memory
    return model


def context_length(model) -> int:
    config = model.config
    return getattr(config, "n_positions", None) or config.max_position_embeddings


def parameter_count(model, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def parameter_counts(model) -> dict:
    """Total, embedding (token and learned position tables) and non-embedding parameters."""
    total = parameter_count(model)
    embedding = model.get_input_embeddings().weight.numel()
    for name, module in model.named_modules():
        if name.endswith("wpe"):  # learned positions (gpt2)
            embedding += module.weight.numel()
    output = model.get_output_embeddings()
    untied_head = output is not None and output.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    if untied_head:
        embedding += output.weight.numel()
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding}


def training_flops_per_token(model, sequence_length: int) -> int:
    """6N + 12·L·d·T (PaLM appendix B): N counts non-embedding weights plus the output projection, which is a
    matmul every token pays for even when tied; the second term is attention over a T-token sequence."""
    config = model.config
    d = config.hidden_size
    layers = config.num_hidden_layers
    n = parameter_counts(model)["non_embedding"] + d * config.vocab_size
    return int(6 * n + 12 * layers * d * sequence_length)
