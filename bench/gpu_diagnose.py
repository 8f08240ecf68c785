"""Two things bench/gpu_check.py found on an H200, measured apart: how bf16 autocast training speed against fp32
depends on how many distinct batch shapes there are (MiniLM- and BERT-base-sized random models, batch 32,
lengths 12-80 padded to multiples of 1, 8, 16, 64, and fixed 128), and how far bitsandbytes int8 (LLM.int8)
is from fp16 by rows, threshold and batch size.

    python bench/gpu_diagnose.py | tee bench/results/gpu/diagnose.txt

Needs one CUDA GPU and bitsandbytes; no network (random weights).
"""

from __future__ import annotations

import random
import sys
import tempfile
import time

import bitsandbytes as bnb
import torch
import transformers
from transformers import BertConfig, BertForSequenceClassification, BitsAndBytesConfig

if not torch.cuda.is_available():
    print("error: bench/gpu_diagnose.py needs a CUDA GPU, and torch.cuda.is_available() is False here", file=sys.stderr)
    sys.exit(2)
print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, bitsandbytes {bnb.__version__}, transformers {transformers.__version__}")

SIZES = {"minilm (384x6)": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
         "bert-base (768x12)": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)}


def steps_per_second(config, bf16, lengths, steps=60):
    transformers.set_seed(0)
    m = BertForSequenceClassification(config).cuda().train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-5)
    for step in range(steps + 5):
        if step == 5:
            torch.cuda.synchronize(); t = time.perf_counter()
        n = lengths[step % len(lengths)]
        batch = {"input_ids": torch.randint(1000, 5000, (32, n), device="cuda"), "labels": torch.randint(0, 2, (32,), device="cuda")}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = m(**batch).loss
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return steps / (time.perf_counter() - t)


random.seed(0)
varying = [random.randint(12, 80) for _ in range(65)]
for size, dims in SIZES.items():
    config = BertConfig(vocab_size=30522, num_labels=2, **dims)
    for multiple in (1, 8, 16, 64):
        lengths = [-(-n // multiple) * multiple for n in varying]
        fp32, bf16 = steps_per_second(config, False, lengths), steps_per_second(config, True, lengths)
        print(f"{size} lengths 12-80 padded to x{multiple} ({len(set(lengths))} shapes): fp32 {fp32:.1f} bf16 {bf16:.1f} steps/s, bf16/fp32 {bf16 / fp32:.2f}")
    fp32, bf16 = steps_per_second(config, False, [128]), steps_per_second(config, True, [128])
    print(f"{size} fixed 128: fp32 {fp32:.1f} bf16 {bf16:.1f} steps/s, bf16/fp32 {bf16 / fp32:.2f}")

torch.manual_seed(0)
for rows in (8, 1024):
    x = torch.randn(rows, 384, dtype=torch.float16, device="cuda")
    layer = torch.nn.Linear(384, 1536).half()
    ref = layer.cuda()(x)
    for threshold in (0.0, 6.0):
        q = bnb.nn.Linear8bitLt(384, 1536, has_fp16_weights=False, threshold=threshold)
        q.load_state_dict(layer.state_dict())
        out = q.cuda()(x)
        err = (out - ref).abs()
        print(f"Linear8bitLt rows {rows} threshold {threshold}: max abs err {err.max().item():.4f} mean {err.mean().item():.5f}, worst row {err.max(dim=1).values.argmax().item()}")

config = BertConfig(vocab_size=30522, num_labels=2, **SIZES["minilm (384x6)"])
transformers.set_seed(0)
model = BertForSequenceClassification(config).eval()
folder = tempfile.mkdtemp()
model.save_pretrained(folder)
ids = torch.randint(1000, 5000, (16, 64), device="cuda")
with torch.no_grad():
    ref = model.half().cuda()(input_ids=ids).logits.float()
    for threshold in (0.0, 6.0):
        q = BertForSequenceClassification.from_pretrained(folder, dtype=torch.float16, device_map="cuda",
            quantization_config=BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=threshold, llm_int8_skip_modules=["classifier", "pooler"]))
        out = q(input_ids=ids).logits.float()
        print(f"bnb-8bit model threshold {threshold}: max abs logit diff {(out - ref).abs().max().item():.4f}, per row {[round(v, 3) for v in (out - ref).abs().max(dim=1).values.tolist()]}")
    q = BertForSequenceClassification.from_pretrained(folder, dtype=torch.float16, device_map="cuda",
        quantization_config=BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=["classifier", "pooler"]))
    for rows in (1, 2, 16):
        out = q(input_ids=ids[:rows]).logits.float()
        print(f"bnb-8bit batch {rows}: max abs diff {(out - ref[:rows]).abs().max().item():.4f}")
