# inv_freq and attention_scaling of transformers' ROPE_INIT_FUNCTIONS for the RoPE scaling cases of test/models.test.ts
# (HF_ROPE; longrope also past original_max_position_embeddings): a LlamaConfig with head_dim 16, rope_theta 500, max_position_embeddings 64. Dev machine only:
#   /tmp/tfenv/bin/python scripts/xcheck/rope_ref.py
import json, torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
cases = {
  "default": None,
  "linear": {"rope_type": "linear", "factor": 2.0},
  "llama3_orig": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
  "llama3_noorig": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0},
  "dynamic": {"rope_type": "dynamic", "factor": 2.0},
  "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
  "yarn_noorig": {"type": "yarn", "factor": 4.0},
  "yarn_attn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "attention_factor": 0.75, "beta_fast": 16, "beta_slow": 2},
  "yarn_mscale": {"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 8, "mscale": 1.0, "mscale_all_dim": 0.5},
  "yarn_notrunc": {"rope_type": "yarn", "factor": 3.0, "original_max_position_embeddings": 16, "truncate": False},
  "yarn_nofactor": {"rope_type": "yarn", "factor": None, "original_max_position_embeddings": 16},
  "longrope": {"rope_type": "longrope", "short_factor": [1.0, 1.05, 1.1, 1.3, 1.7, 2.2, 3.0, 4.5], "long_factor": [1.2, 1.9, 2.7, 4.1, 7.5, 13.0, 21.0, 40.0], "original_max_position_embeddings": 16},
  "longrope_attn": {"type": "longrope", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8, "original_max_position_embeddings": 8, "factor": 3.0, "attention_factor": 0.9},
}
out = {}
for name, sc in cases.items():
  kw = dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, intermediate_size=32, num_hidden_layers=1, vocab_size=10)
  if sc is None: cfg = LlamaConfig(**kw, rope_theta=500.0)
  else: cfg = LlamaConfig(**kw, rope_theta=500.0, rope_scaling=dict(sc))
  rp = cfg.rope_parameters
  rt = rp.get("rope_type", "default")
  fn = ROPE_INIT_FUNCTIONS[rt] if rt != "default" else None
  if fn is None:
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    inv, af = LlamaRotaryEmbedding.compute_default_rope_parameters(cfg)
  else:
    inv, af = fn(cfg, None)
  out[name] = {"scaling": sc, "inv": inv.float().tolist(), "attention_factor": float(af)}
  if rt == "longrope":  # the frequencies of a forward past the pretraining context
    out[name]["inv_long"] = fn(cfg, None, seq_len=rp["original_max_position_embeddings"] + 1)[0].float().tolist()
print(json.dumps(out))
