"""PyTorch peer for `spotlight bench retrieval`, run in the same job on the same GPU.

For every row of our JSON (same context, head layout, batch and budget) it times:
- the authors' decode pipeline: a packed-bit XOR+popcount scan (one Triton kernel, scores summed
  over the query group, int32 out), torch.topk over the middle tokens, concatenation with the sink
  and window, torch.gather of the K/V rows, and SDPA over them;
- dense decode attention: torch SDPA over the whole cache (enable_gqa).
CUDA-event timings over regions of 10 back-to-back calls, median of --runs after warm-up, inputs
rotated like ours. Writes our report
with the torch fields added to each row.
"""
import argparse, json, math

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

try:
    from triton.language.extra import libdevice
except ImportError:  # older layout
    from triton.language.extra.cuda import libdevice

ROTATE_BYTES = 200 << 20


@triton.jit
def scan_kernel(q_ptr, k_ptr, out_ptr, N, S: tl.constexpr, G: tl.constexpr, W: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    s = tl.program_id(1)
    b = tl.program_id(2)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    acc = tl.zeros([BLOCK], dtype=tl.int32)
    for w in tl.static_range(W):
        kw = tl.load(k_ptr + ((b * N + offs) * S + s) * W + w, mask=mask, other=0)
        for g in tl.static_range(G):
            qw = tl.load(q_ptr + ((b * S + s) * G + g) * W + w)
            acc += libdevice.popc(~(qw ^ kw))
    tl.store(out_ptr + (b * S + s) * N + offs, acc, mask=mask)


def scan(q, k, n, S, G, W, out):
    B = q.shape[0]
    scan_kernel[(triton.cdiv(n, 1024), S, B)](q, k, out, n, S=S, G=G, W=W, BLOCK=1024)
    return out


from timing import median_us  # the script's folder is on sys.path


def plan(n, fraction, sink, window):
    sink = min(sink, n)
    window = min(window, n - sink)
    k = max(min(n, 20), math.ceil(fraction * n))
    return sink, window, min(k, n - sink - window)


def bench_row(row, budget, runs):
    n, Hq, S, d, B = row["n"], row["q_heads"], row["kv_heads"], row["bits"], row["batch"]
    G, W = Hq // S, d // 32
    sink, window, top_k = plan(n, budget["fraction"], budget["sink"], budget["window"])
    dev = "cuda"
    code_bytes = B * n * S * W * 4
    copies = max(1, min(16, -(-ROTATE_BYTES // code_bytes)))
    codes = [torch.randint(-2**31, 2**31 - 1, (B, n, S, W), dtype=torch.int32, device=dev) for _ in range(copies)]
    qc = torch.randint(-2**31, 2**31 - 1, (B, Hq, W), dtype=torch.int32, device=dev)
    scores = torch.empty(B, S, n, dtype=torch.int32, device=dev)
    kv_bytes = 2 * 2 * B * S * n * d
    kv_copies = max(1, min(8, -(-ROTATE_BYTES // kv_bytes)))
    kv = [(torch.randn(B, S, n, d, dtype=torch.bfloat16, device=dev), torch.randn(B, S, n, d, dtype=torch.bfloat16, device=dev)) for _ in range(kv_copies)]
    q = torch.randn(B, Hq, 1, d, dtype=torch.bfloat16, device=dev)
    qg = q.view(B, S, G, d)
    sink_idx = torch.arange(sink, device=dev).expand(B, S, sink)
    win_idx = torch.arange(n - window, n, device=dev).expand(B, S, window)

    def select(i):
        sc = scan(qc, codes[i % copies], n, S, G, W, scores)
        top = torch.topk(sc[:, :, sink:n - window], top_k, dim=-1, sorted=False).indices + sink
        return torch.cat([sink_idx, top, win_idx], dim=-1)

    def pipeline(i):
        idx = select(i)
        k, v = kv[i % kv_copies]
        gi = idx.unsqueeze(-1).expand(-1, -1, -1, d)
        ks, vs = torch.gather(k, 2, gi), torch.gather(v, 2, gi)
        return F.scaled_dot_product_attention(qg, ks, vs)

    def dense(i):
        k, v = kv[i % kv_copies]
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

    for i in range(3):
        pipeline(i); dense(i)
    torch.cuda.synchronize()
    out = {
        "torch_scan_us": median_us(lambda i: scan(qc, codes[i % copies], n, S, G, W, scores), runs),
        "torch_topk_us": median_us(lambda i: torch.topk(scores[:, :, sink:n - window], top_k, dim=-1, sorted=False), runs),
        "torch_select_us": median_us(select, runs),
        "torch_pipeline_us": median_us(pipeline, runs),
        "torch_dense_us": median_us(dense, runs),
    }
    del codes, kv, scores
    torch.cuda.empty_cache()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", type=int, default=20)
    a = ap.parse_args()
    report = json.load(open(a.ours))
    b = report["budget"]  # "Budget { fraction: 0.02, min_tokens: 20, sink: 4, window: 64 }"
    fields = dict(kv.split(": ") for kv in b[b.index("{") + 1:b.index("}")].strip().split(", "))
    budget = {"fraction": float(fields["fraction"]), "sink": int(fields["sink"]), "window": int(fields["window"])}
    report["torch"] = torch.__version__
    report["triton"] = triton.__version__
    for row in report["rows"]:
        try:
            row.update(bench_row(row, budget, a.runs))
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            row["torch_error"] = "out of memory"
        if "torch_select_us" in row:
            row["speedup_select_vs_torch"] = row["torch_select_us"] / row["score_select_us"]
        if "torch_pipeline_us" in row and row.get("sparse_attend_us"):
            row["speedup_pipeline_vs_torch"] = row["torch_pipeline_us"] / (row["score_select_us"] + row["sparse_attend_us"])
        print(f"{row['q_heads']}/{row['kv_heads']}/{row['bits']} b{row['batch']} n{row['n']}: "
              + ", ".join(f"{k} {v:.1f}" for k, v in row.items() if k.startswith("torch_") and isinstance(v, float)), flush=True)
    json.dump(report, open(a.out, "w"), indent=1)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
