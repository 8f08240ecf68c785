"""Tiny random configs of every architecture in the layer-layout table (a few thousand parameters each)."""

from transformers import (
    AlbertConfig,
    BertConfig,
    DebertaV2Config,
    DistilBertConfig,
    ElectraConfig,
    GPT2Config,
    LlamaConfig,
    ModernBertConfig,
    MPNetConfig,
    Qwen2Config,
    RobertaConfig,
    XLMRobertaConfig,
    XLNetConfig,
)

H = dict(hidden_size=16, num_attention_heads=2, intermediate_size=32, vocab_size=100)


def tiny_config(model_type: str, layers: int):
    return {
        "bert": lambda: BertConfig(num_hidden_layers=layers, **H),
        "roberta": lambda: RobertaConfig(num_hidden_layers=layers, **H),
        "xlm-roberta": lambda: XLMRobertaConfig(num_hidden_layers=layers, **H),
        "electra": lambda: ElectraConfig(num_hidden_layers=layers, embedding_size=8, **H),
        "mpnet": lambda: MPNetConfig(num_hidden_layers=layers, **H),
        "deberta-v2": lambda: DebertaV2Config(num_hidden_layers=layers, **H),
        "distilbert": lambda: DistilBertConfig(n_layers=layers, dim=16, n_heads=2, hidden_dim=32, vocab_size=100),
        # a global-attention layer every 3rd, the rest a 4-token sliding window (shorter than the test batches)
        "modernbert": lambda: ModernBertConfig(num_hidden_layers=layers, global_attn_every_n_layers=3, local_attention=4,
                                               max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                               cls_token_id=1, sep_token_id=2, **H),
        "xlnet": lambda: XLNetConfig(n_layer=layers, d_model=16, n_head=2, d_inner=32, vocab_size=100),
        "albert": lambda: AlbertConfig(num_hidden_layers=layers, embedding_size=8, **H),
        "gpt2": lambda: GPT2Config(n_layer=layers, n_embd=16, n_head=2, vocab_size=100, pad_token_id=0),
        "llama": lambda: LlamaConfig(num_hidden_layers=layers, num_key_value_heads=2, pad_token_id=0, **H),
        "qwen2": lambda: Qwen2Config(num_hidden_layers=layers, num_key_value_heads=2, pad_token_id=0, **H),
    }[model_type]()


ENCODERS = ["bert", "roberta", "xlm-roberta", "electra", "mpnet", "deberta-v2", "modernbert", "distilbert", "xlnet", "albert"]
DECODERS = ["gpt2", "llama", "qwen2"]
