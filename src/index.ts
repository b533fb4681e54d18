// perp's library API (the CLI is a thin layer over these).
export { runEngineBench } from "./bench/engine.js";
export { dataDir, requireData } from "./io/data.js";
export { cachedSnapshot, hubCacheDir, ResolveError, resolveModel } from "./io/hf-hub.js";
export { importLlama2c } from "./io/llama2c.js";
export { SafetensorsFile, SafetensorsStore, saveCheckpoint, writeSafetensors } from "./io/safetensors.js";
export { Tokenizer } from "./io/tokenizer.js";
export { generate, nextLogits } from "./models/generate.js";
export { type LoadedModel, loadModel, saveModel } from "./models/load.js";
export { buildModel, type CausalLM, type HfConfig, supportedModelTypes } from "./models/registry.js";
export * as F from "./nn/functional.js";
export { AdamW } from "./nn/optim.js";
export { backward, checkpoint, noGrad } from "./nn/tape.js";
export { isNative, K } from "./tensor/native.js";
export { Rng } from "./tensor/rng.js";
export { Tensor } from "./tensor/tensor.js";
