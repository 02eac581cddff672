"""PyTorch peer for `spotlight bench decode`: an eager decode step of the same SYNTHETIC
architecture (bf16 weights, random KV cache filled to the same context) on the same GPU, timed the
same way (wall clock per step with the logits copied to the host, mean over --steps, median over
--runs). Written as a competent eager implementation would be: fused QKV and gate/up weights, a
preallocated cache written in place, F.rms_norm, and SDPA over the cache with the G query heads of
each KV head as G query rows (no repeated K/V; flash / memory-efficient kernels apply).

Adds torch_ms_per_step / torch_tok_s to every dense row of our report and writes --out."""
import argparse, json, statistics, time

import torch
import torch.nn.functional as F


def rope_tables(d, theta, cap, scaling):
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    if scaling:  # Llama 3.1
        factor, low, high, old = scaling
        wavelen = 2 * torch.pi / inv
        smooth = (old / wavelen - low) / (high - low)
        scaled = torch.where(wavelen > old / low, inv / factor, inv)
        mid = (wavelen <= old / low) & (wavelen >= old / high)
        inv = torch.where(mid, (1 - smooth) * inv / factor + smooth * inv, scaled)
    ang = torch.arange(cap, dtype=torch.float64)[:, None] * inv[None]
    return ang.cos().float().cuda(), ang.sin().float().cuda()


class Model:
    def __init__(self, s, gen):
        h, d, L = s["hidden"], s["head_dim"], s["layers"]
        hq, hkv, f, V = s["q_heads"], s["kv_heads"], s["intermediate"], s["vocab"]
        bf = torch.bfloat16

        def w(o, i):
            return (torch.rand(o, i, generator=gen, device="cuda", dtype=bf) * 2 - 1) / i ** 0.5

        self.s = s
        self.embed = w(V, h)
        self.head = self.embed if s["tied"] else w(V, h)
        self.layers = [dict(qkv=w((hq + 2 * hkv) * d, h), o=w(h, hq * d), gu=w(2 * f, h), down=w(h, f),
                            n1=torch.ones(h, device="cuda", dtype=bf), n2=torch.ones(h, device="cuda", dtype=bf))
                       for _ in range(L)]
        self.norm = torch.ones(h, device="cuda", dtype=bf)

    def step(self, tokens, pos, K, V, cos, sin):
        s = self.s
        h, d, hq, hkv, f = s["hidden"], s["head_dim"], s["q_heads"], s["kv_heads"], s["intermediate"]
        B, g, half = tokens.shape[0], hq // hkv, d // 2
        c, sn = cos[pos].to(torch.bfloat16), sin[pos].to(torch.bfloat16)

        def rope(x):
            x1, x2 = x[..., :half], x[..., half:]
            return torch.cat([x1 * c - x2 * sn, x2 * c + x1 * sn], -1)

        x = self.embed[tokens]
        for l, p in enumerate(self.layers):
            qkv = F.linear(F.rms_norm(x, (h,), p["n1"], 1e-5), p["qkv"])
            q = rope(qkv[:, : hq * d].view(B, hkv, g, d))
            k = rope(qkv[:, hq * d:(hq + hkv) * d].view(B, hkv, d))
            v = qkv[:, (hq + hkv) * d:].view(B, hkv, d)
            K[l][:, :, pos] = k
            V[l][:, :, pos] = v
            o = F.scaled_dot_product_attention(q, K[l][:, :, : pos + 1], V[l][:, :, : pos + 1])
            x = x + F.linear(o.reshape(B, hq * d), p["o"])
            gu = F.linear(F.rms_norm(x, (h,), p["n2"], 1e-5), p["gu"])
            x = x + F.linear(F.silu(gu[:, :f]) * gu[:, f:], p["down"])
        return F.linear(F.rms_norm(x, (h,), self.norm, 1e-5), self.head).float().cpu()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    report = json.load(open(a.ours))
    report["torch"] = torch.__version__
    shapes = {s["name"]: s for s in report["shapes"]}
    steps, runs = report["steps"], report["runs"]
    gen = torch.Generator(device="cuda").manual_seed(0)
    model, model_name = None, None
    timed = {}  # (shape, context, batch) -> torch ms per step: rows differing only in our settings share one timing
    for row in report["rows"]:
        if row["attention"] != "dense" or row["skipped"]:
            continue
        key = (row["shape"], row["context"], row["batch"])
        if key in timed:
            row["torch_ms_per_step"] = timed[key]
            row["torch_tok_s"] = row["batch"] / timed[key] * 1e3
            continue
        s = shapes[row["shape"]]
        if model_name != row["shape"]:
            model = None
            torch.cuda.empty_cache()
            model, model_name = Model(s, gen), row["shape"]
        B, ctx = row["batch"], row["context"]
        cap = ctx + steps + 1
        shape = (B, s["kv_heads"], cap, s["head_dim"])
        try:
            K = [torch.rand(shape, generator=gen, device="cuda", dtype=torch.bfloat16) * 2 - 1 for _ in range(s["layers"])]
            Vc = [torch.rand(shape, generator=gen, device="cuda", dtype=torch.bfloat16) * 2 - 1 for _ in range(s["layers"])]
        except torch.OutOfMemoryError as e:
            row["torch_skipped"] = f"out of memory: {e}".splitlines()[0]
            K = Vc = None
            torch.cuda.empty_cache()
            continue
        scaling = (8.0, 1.0, 4.0, 8192) if s["name"] == "llama3-8b" else None
        theta = 500000.0 if s["name"] == "llama3-8b" else 100000.0
        cos, sin = rope_tables(s["head_dim"], theta, cap, scaling)
        tokens = torch.tensor([(b * 7919) % s["vocab"] for b in range(B)], device="cuda")
        times = []
        with torch.inference_mode():
            for run in range(runs + 1):
                torch.cuda.synchronize()
                t = time.perf_counter()
                for i in range(steps):
                    model.step(tokens, ctx + i, K, Vc, cos, sin)
                torch.cuda.synchronize()
                if run > 0:
                    times.append((time.perf_counter() - t) * 1e3 / steps)
        ms = statistics.median(times)
        timed[key] = ms
        row["torch_ms_per_step"] = ms
        row["torch_tok_s"] = B / ms * 1e3
        print(f"{row['shape']} context {ctx} batch {B}: torch {ms:.2f} ms/step, ours {row['ms_per_step']:.2f}", flush=True)
        del K, Vc
        torch.cuda.empty_cache()
    json.dump(report, open(a.out, "w"), indent=1)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
