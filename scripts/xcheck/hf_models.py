# Cross-check of perp's model families against transformers (dev machine only, never CI). Builds tiny random models
# of every family and config variant perp supports with transformers itself (every weight random, biases and norm
# weights included), saves them with save_pretrained (so config.json is in the writing version's format: 5.x puts
# rope_theta / scaling / partial rotary into rope_parameters), reads each folder back with from_pretrained in float32
# and stores its logits. scripts/xcheck/hf-logits.mts then loads the folders with perp and compares.
#   python -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install torch transformers safetensors numpy
#   /tmp/tfenv/bin/python scripts/xcheck/hf_models.py /tmp/xc [case ...]
#   node --import tsx scripts/xcheck/hf-logits.mts /tmp/xc
import json, os, sys, torch
import transformers as tf
torch.manual_seed(0)
out = sys.argv[1]
V = 97
def llama(**kw):
    c = dict(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False)
    c.update(kw); return tf.LlamaConfig(**c)
cases = {
  "llama": llama(),
  "llama_tied_theta": llama(tie_word_embeddings=True, rope_theta=500000.0),
  "llama_bias": llama(attention_bias=True, mlp_bias=True),
  "llama_headdim": llama(head_dim=32),
  "llama_rope_linear": llama(rope_scaling={"type": "linear", "factor": 2.0}),
  "llama_rope_llama3": llama(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
  "llama_rope_llama3_noorig": llama(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}),
  "llama_rope_yarn": llama(rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}),
  "llama_rope_yarn_mscale": llama(rope_scaling={"type": "yarn", "factor": 8.0, "original_max_position_embeddings": 8, "mscale": 1.0, "mscale_all_dim": 0.5, "beta_fast": 16}),
  "llama_rope_dynamic": llama(rope_scaling={"rope_type": "dynamic", "factor": 2.0}),
  "neox_rope_yarn": tf.GPTNeoXConfig(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64, rotary_pct=0.5, rope_scaling={"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 32}),
  "mistral_window": tf.MistralConfig(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, sliding_window=5, max_position_embeddings=64, tie_word_embeddings=False),
  "opt_pre": tf.OPTConfig(vocab_size=V, hidden_size=64, ffn_dim=96, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=64, do_layer_norm_before=True),
  "opt_post_proj": tf.OPTConfig(vocab_size=V, hidden_size=64, ffn_dim=96, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=32, do_layer_norm_before=False),
  "neox_parallel": tf.GPTNeoXConfig(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64, rotary_pct=0.25, use_parallel_residual=True),
  "neox_seq": tf.GPTNeoXConfig(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64, rotary_pct=1.0, use_parallel_residual=False, rotary_emb_base=1000),
  "neox_rope_linear": tf.GPTNeoXConfig(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64, rotary_pct=0.5, rope_scaling={"rope_type": "linear", "factor": 3.0}),
  "gpt2": tf.GPT2Config(vocab_size=V, n_embd=64, n_layer=2, n_head=4, n_positions=64),
  "gpt2_inner_relu": tf.GPT2Config(vocab_size=V, n_embd=64, n_layer=2, n_head=4, n_positions=64, n_inner=80, activation_function="relu", scale_attn_by_inverse_layer_idx=True),
  "opt_nobias_noaffine": tf.OPTConfig(vocab_size=V, hidden_size=64, ffn_dim=96, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=64, enable_bias=False, layer_norm_elementwise_affine=False),
  "neox_nobias_tied": tf.GPTNeoXConfig(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64, attention_bias=False, tie_word_embeddings=True, hidden_act="gelu_new"),
  "gpt2_noscale": tf.GPT2Config(vocab_size=V, n_embd=64, n_layer=3, n_head=4, n_positions=64, scale_attn_weights=False, activation_function="gelu"),
  "qwen2": tf.Qwen2Config(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True, rope_theta=1000000.0),
  "qwen2_window": tf.Qwen2Config(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False, use_sliding_window=True, sliding_window=5, max_window_layers=1),
  "qwen3": tf.Qwen3Config(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=64, tie_word_embeddings=True),
  "qwen3_bias_window": tf.Qwen3Config(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1, head_dim=8, max_position_embeddings=64, attention_bias=True, use_sliding_window=True, sliding_window=6, max_window_layers=2),
  "phi3": tf.Phi3Config(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, original_max_position_embeddings=64, sliding_window=None, pad_token_id=0, bos_token_id=1, eos_token_id=2),
  "phi3_window_partial": tf.Phi3Config(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=64, original_max_position_embeddings=64, sliding_window=7, partial_rotary_factor=0.75, tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2),
  "phi3_longrope": tf.Phi3Config(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, original_max_position_embeddings=16, sliding_window=None, pad_token_id=0, bos_token_id=1, eos_token_id=2, rope_scaling={"type": "longrope", "short_factor": [1.0, 1.02, 1.1, 1.2, 1.5, 1.9, 2.4, 3.0], "long_factor": [1.1, 1.7, 2.6, 4.0, 6.5, 11.0, 19.0, 33.0]}),
  "phi3_longrope_partial": tf.Phi3Config(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, original_max_position_embeddings=20, sliding_window=None, partial_rotary_factor=0.75, tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2, rope_scaling={"rope_type": "longrope", "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5], "long_factor": [1.5, 2.5, 4.0, 7.0, 12.0, 20.0]}),
  "gemma": tf.GemmaConfig(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=32, max_position_embeddings=64, pad_token_id=0, bos_token_id=2, eos_token_id=1),
  "gemma3": tf.Gemma3TextConfig(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64, sliding_window=5, sliding_window_pattern=2, query_pre_attn_scalar=24, rope_theta=50000.0, rope_local_base_freq=1000.0, rope_scaling={"rope_type": "linear", "factor": 2.0}, pad_token_id=0, bos_token_id=2, eos_token_id=1),
  "phi": tf.PhiConfig(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64, partial_rotary_factor=0.5, pad_token_id=0),
  "phi_qkln_gqa": tf.PhiConfig(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, partial_rotary_factor=0.4, qk_layernorm=True, hidden_act="gelu", rope_theta=500.0),
  "mistral_nowindow_headdim": tf.MistralConfig(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, sliding_window=None, head_dim=8, max_position_embeddings=64, tie_word_embeddings=True),
}
DT = {"llama_bf16": torch.bfloat16, "opt_f16": torch.float16}
cases["llama_bf16"] = llama(num_key_value_heads=4)
cases["opt_f16"] = tf.OPTConfig(vocab_size=V, hidden_size=64, ffn_dim=96, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=64)
SHARDED = {"llama_sharded", "neox_sharded"}
cases["llama_sharded"] = llama()
cases["neox_sharded"] = tf.GPTNeoXConfig(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64)
BASE_ONLY = {"gpt2_base_names", "opt_base_names"}
cases["gpt2_base_names"] = tf.GPT2Config(vocab_size=V, n_embd=64, n_layer=2, n_head=4, n_positions=64)
cases["opt_base_names"] = tf.OPTConfig(vocab_size=V, hidden_size=64, ffn_dim=96, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=64)
only = sys.argv[2:] 
ids = torch.randint(0, V, (1, 24), generator=torch.Generator().manual_seed(1))
for name, cfg in cases.items():
    if only and name not in only: continue
    m = tf.AutoModelForCausalLM.from_config(cfg).float().eval()
    with torch.no_grad():
        for n, p in m.named_parameters():  # everything random, biases and norm weights included
            p.copy_(torch.randn_like(p) * (0.3 if p.dim() == 1 else 0.08) + (1.0 if ("norm" in n or "ln" in n) and n.endswith("weight") and p.dim() == 1 else 0.0))
    d = os.path.join(out, name)
    if name in BASE_ONLY:  # saved from the base model: names without the LM's prefix (as gpt2's and facebook/opt's)
        getattr(m, m.base_model_prefix).save_pretrained(d, safe_serialization=True)
        c = json.load(open(os.path.join(d, "config.json"))); c["architectures"] = [type(m).__name__]
        json.dump(c, open(os.path.join(d, "config.json"), "w"))
    else:
      (m.to(DT[name]) if name in DT else m).save_pretrained(d, safe_serialization=True, **({"max_shard_size": "40KB"} if name in SHARDED else {}))
    # The reference: the saved folder as transformers reads it back, in float32 (half-precision files widened).
    r = tf.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = r(ids).logits[0]
        if (r.config.rope_parameters or {}).get("rope_type") == "longrope":
            # transformers 5.18's Phi-3 generate() drops its cache where longrope switches to the long factors and
            # then runs every later token on its own, without a cache (its forwards get one token and no past): the
            # reference is greedy decoding by re-running the whole sequence, what that recompute is meant to give
            gen = ids[:, :8]
            for _ in range(16):
                gen = torch.cat([gen, r(gen, use_cache=False).logits[:, -1:].argmax(-1)], 1)
        else:
            gen = r.generate(ids[:, :8], max_new_tokens=16, min_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=0)
    json.dump({"ids": ids[0].tolist(), "logits": logits.tolist(), "gen_prompt": ids[0, :8].tolist(), "gen": gen[0, 8:].tolist()}, open(os.path.join(d, "ref.json"), "w"))
    print(name, "saved", tuple(logits.shape))
