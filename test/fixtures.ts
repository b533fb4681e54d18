// Shared test fixture: a tiny random LLaMA (C=16, 2 layers, vocab 512) in HF layout with the stories260K tokenizer.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { dataPath } from "../src/io/data.js";
import { llama2cTokenizerJson, readLlama2cTokenizer } from "../src/io/llama2c.js";
import { saveCheckpoint } from "../src/io/safetensors.js";
import { Rng } from "../src/tensor/rng.js";

export const TOK = dataPath("models", "stories260K", "tok512.bin");

/** The smallest LLaMA config the tests build in memory (1 layer, 2 heads sharing 1 KV head, vocab 11). */
export const MICRO_LLAMA = {
  model_type: "llama",
  hidden_size: 8,
  intermediate_size: 12,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  vocab_size: 11,
  max_position_embeddings: 16,
};

export function writeTokenizer(dir: string): void {
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(llama2cTokenizerJson(readLlama2cTokenizer(TOK, 512))));
  writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify({ bos_token: "<s>", eos_token: "</s>" }));
}

export function writeTinyLlama(dir: string, o: { kv?: number; seed?: number; layers?: number } = {}): void {
  const [C, I, H, KV, L, V, D] = [16, 32, 4, o.kv ?? 4, o.layers ?? 2, 512, 4];
  const rng = new Rng(o.seed ?? 3);
  const ts: { name: string; dtype: "F32"; shape: number[]; data: Float32Array }[] = [];
  const add = (name: string, shape: number[], one = false) => {
    const n = shape.reduce((a, b) => a * b, 1);
    ts.push({
      name,
      dtype: "F32",
      shape,
      data: one ? new Float32Array(n).fill(1) : (rng.fillNormal(new Float32Array(n), 0.2) as Float32Array),
    });
  };
  add("model.embed_tokens.weight", [V, C]);
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}.`;
    add(`${p}input_layernorm.weight`, [C], true);
    add(`${p}self_attn.q_proj.weight`, [H * D, C]);
    add(`${p}self_attn.k_proj.weight`, [KV * D, C]);
    add(`${p}self_attn.v_proj.weight`, [KV * D, C]);
    add(`${p}self_attn.o_proj.weight`, [C, H * D]);
    add(`${p}post_attention_layernorm.weight`, [C], true);
    add(`${p}mlp.gate_proj.weight`, [I, C]);
    add(`${p}mlp.up_proj.weight`, [I, C]);
    add(`${p}mlp.down_proj.weight`, [C, I]);
  }
  add("model.norm.weight", [C], true);
  saveCheckpoint(dir, ts);
  const config = {
    model_type: "llama",
    hidden_size: C,
    intermediate_size: I,
    num_hidden_layers: L,
    num_attention_heads: H,
    num_key_value_heads: KV,
    vocab_size: V,
    max_position_embeddings: 64,
    tie_word_embeddings: true,
  };
  writeFileSync(join(dir, "config.json"), JSON.stringify(config));
  writeTokenizer(dir);
}
