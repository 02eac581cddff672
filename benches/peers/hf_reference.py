"""Independent reference and PyTorch peer for the dense runtime, on the same GPU and files.

Loads the same GGUF with Hugging Face transformers (its own dequantiser, its own Llama code), then
  1. the greedy continuation of the reference prompt and its last-position logits (top 5),
  2. perplexity on the first N tokens of Moby-Dick (teacher-forced, one forward),
  3. decode tokens/s of `generate` (greedy, f32, eager PyTorch) at batch 1 and 8 after a 512-token prompt.
"""
import argparse
import json
import os
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

p = argparse.ArgumentParser()
p.add_argument("--gguf", required=True)
p.add_argument("--text", required=True)
p.add_argument("--ppl-tokens", type=int, default=4096)
p.add_argument("--json", required=True)
a = p.parse_args()

d, f = os.path.dirname(a.gguf), os.path.basename(a.gguf)
tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32).cuda().eval()
torch.backends.cuda.matmul.allow_tf32 = False
out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "dtype": "float32"}

prompt = "The capital of France is"
ids = tok(prompt, return_tensors="pt").input_ids.cuda()
out["prompt_ids"] = ids[0].tolist()
with torch.no_grad():
    logits = model(ids).logits[0, -1].float()
    top = torch.topk(logits, 5)
    out["top5_ids"], out["top5_logits"] = top.indices.tolist(), top.values.tolist()
    g = model.generate(ids, max_new_tokens=8, do_sample=False)
out["greedy_ids"] = g[0, ids.shape[1]:].tolist()
out["greedy_text"] = tok.decode(out["greedy_ids"])
print("greedy:", repr(out["greedy_text"]), "prompt ids", out["prompt_ids"])

text = open(a.text).read()
t = tok(text, return_tensors="pt").input_ids[:, : a.ppl_tokens].cuda()
with torch.no_grad():
    lg = model(t).logits[0, :-1].float()
    nll = torch.nn.functional.cross_entropy(lg, t[0, 1:])
out["ppl_tokens"] = int(t.shape[1])
out["ppl"] = float(torch.exp(nll))
print(f"perplexity on the first {t.shape[1]} tokens: {out['ppl']:.4f}")

rows = []
for batch in (1, 8):
    x = t[:, :512].repeat(batch, 1)
    times = []
    for run in range(4):
        torch.cuda.synchronize()
        s = time.perf_counter()
        with torch.no_grad():
            model.generate(x, max_new_tokens=64, min_new_tokens=64, do_sample=False)
        torch.cuda.synchronize()
        if run > 0:
            times.append(time.perf_counter() - s)
    times.sort()
    med = times[len(times) // 2]
    rows.append({"batch": batch, "prompt_tokens": 512, "new_tokens": 64, "total_s_median": med, "tok_s_including_prefill": batch * 64 / med})
    print(f"hf generate batch {batch}: {batch * 64 / med:.1f} tok/s (64 new tokens after 512, prefill included)")
out["generate"] = rows
json.dump(out, open(a.json, "w"), indent=2)
