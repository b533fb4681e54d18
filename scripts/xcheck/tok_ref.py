# Tokenizers of the families' kinds, trained here with the Rust `tokenizers` library, and their encodings of test
# texts (expected ids), for tok-check.mts to compare with perp's Tokenizer (the JS @huggingface/tokenizers).
# Dev check, never CI: python tok_ref.py <out dir>   (PERP_DATA: the data folder; runs/demo/dense: the demo's model)
import json, os, sys
import tokenizers
from tokenizers import Tokenizer, models, trainers, pre_tokenizers, decoders, normalizers, processors
import pyarrow.parquet as pq
out = sys.argv[1]; os.makedirs(out, exist_ok=True)
D = os.environ.get("PERP_DATA", "../shared/data")
docs = pq.read_table(f"{D}/datasets/c4/c4-validation-2k.parquet").column("text").to_pylist()
wiki = open(f"{D}/datasets/wikitext-2-raw-v1/test.txt", encoding="utf8").read()
train = docs[:800]
tests = docs[1500:1600] + [wiki[i:i + 3000] for i in range(0, 300000, 30000)] + [
    "Hello world", " leading space", "trailing space ", "  two  spaces", "\n\nnewlines\n\n\n", "tab\tsep",
    "naïve café résumé", "日本語のテキスト", "emoji 🤗🚀 done", "Ünïcödé ŝtrîng", "@-@ 1 @,@ 000", "a" * 300, "",
    "don't won't it's", "3.14159 + 2.71828 = 5.85987", "<s> not special </s>", "mixed\r\nline\rendings"]
for line in open(f"{D}/tasks/hellaswag/validation.jsonl", encoding="utf8").readlines()[:50]:
    d = json.loads(line); tests += [d["activity_label"] + ": " + d["ctx"]] + [" " + e for e in d["endings"]]

# GPT-2 / OPT / NeoX style: byte-level BPE
bl = Tokenizer(models.BPE())
bl.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
bl.decoder = decoders.ByteLevel()
bl.train_from_iterator(train, trainers.BpeTrainer(vocab_size=2000, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
bl.post_processor = processors.ByteLevel(trim_offsets=False)
# OPT style: the same, with </s> prepended by the post-processor
opt = Tokenizer.from_str(bl.to_str())
opt.add_special_tokens(["</s>"])
opt.post_processor = processors.TemplateProcessing(single="</s> $A", pair="</s> $A </s> $B", special_tokens=[("</s>", opt.token_to_id("</s>"))])
# LLaMA (sentencepiece) style: BPE with byte fallback, ▁ for spaces, <s> prepended
sp = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
sp.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
sp.pre_tokenizer = None
sp.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
sp.train_from_iterator(train, trainers.BpeTrainer(vocab_size=2000, special_tokens=["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]))
sp.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", sp.token_to_id("<s>"))])
# LLaMA-2 / Mistral as newer transformers convert them (legacy false): Metaspace pre-tokenizer, "first" prepend scheme
sm = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
sm.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
sm.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
sm.train_from_iterator(train, trainers.BpeTrainer(vocab_size=2000, special_tokens=["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]))
sm.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", sm.token_to_id("<s>"))])
# LLaMA-3: a regex Split then byte-level without its own regex, <|begin_of_text|> prepended
L3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
l3 = Tokenizer(models.BPE(ignore_merges=True))
l3.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(tokenizers.Regex(L3), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
l3.decoder = decoders.ByteLevel()
l3.train_from_iterator(train, trainers.BpeTrainer(vocab_size=2000, special_tokens=["<|begin_of_text|>", "<|end_of_text|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
l3.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False), processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B", special_tokens=[("<|begin_of_text|>", l3.token_to_id("<|begin_of_text|>"))])])
# Qwen2 / Qwen3: NFC, then the same kind of regex Split (single digits) and byte-level, no BOS (bos_token null)
QW = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
qw = Tokenizer(models.BPE())
qw.normalizer = normalizers.NFC()
qw.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(tokenizers.Regex(QW), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
qw.decoder = decoders.ByteLevel()
qw.train_from_iterator(train, trainers.BpeTrainer(vocab_size=2000, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
qw.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
for name, t, cfg in [("spmeta", sm, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}),
                     ("llama3", l3, {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}),
                     ("qwen", qw, {"bos_token": None, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}),
                     ("bytelevel", bl, {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}),
                     ("opt", opt, {"bos_token": "</s>", "eos_token": "</s>"}),
                     ("spbpe", sp, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}),
                     ("stories260k", Tokenizer.from_file("runs/demo/dense/tokenizer.json"), None)]:
    d = os.path.join(out, name); os.makedirs(d, exist_ok=True)
    if cfg is not None:
        t.save(os.path.join(d, "tokenizer.json")); json.dump(cfg, open(os.path.join(d, "tokenizer_config.json"), "w"))
    else:
        import shutil
        for f in ["tokenizer.json", "tokenizer_config.json"]: shutil.copy(f"runs/demo/dense/{f}", d)
    exp = [{"text": s, "ids": t.encode(s).ids, "ids_nospecial": t.encode(s, add_special_tokens=False).ids, "decoded": t.decode(t.encode(s).ids)} for s in tests]
    json.dump(exp, open(os.path.join(d, "expected.json"), "w"))
    print(name, len(exp), "texts, vocab", t.get_vocab_size())
