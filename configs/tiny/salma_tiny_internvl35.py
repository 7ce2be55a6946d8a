# The tiny SALMA of salma_tiny.py with an InternVL3.5-style LLM: a tiny Qwen3 (model_type 'qwen3':
# RMS q/k norms per head, head_dim given explicitly, no attention bias) in place of the tiny Qwen2.
# Everything else (InternViT, SAM-2, CMA/MBA, losses, the decode rule) is salma_tiny.py's.
# tests/test_backbone_internvl.py trains, predicts and exports it on a CPU.
_base_ = ["./salma_tiny.py"]

model = dict(
    mllm=dict(
        config=dict(
            text_config=dict(
                _delete_=True,
                model_type="qwen3",
                hidden_size=128,
                intermediate_size=256,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=48,  # not hidden_size / heads (32): Qwen3 reads it from the config, as InternVL3.5 ships it
                vocab_size=512,
                max_position_embeddings=2048,
                tie_word_embeddings=False,
            ),
        ),
    ),
)
