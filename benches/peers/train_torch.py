"""PyTorch peer for `spotlight bench train`: the same hash-training step in eager PyTorch (as the
authors' code runs it) on the same GPU and the same SYNTHETIC standard-normal q/k shapes. One step
= for every layer: sample T queries and P (top, other) rank pairs, true logits and their causal
top-2% (torch.topk), then for both GQA layouts the residual hash MLP with softsign codes, draft
scores, the Bradley-Terry loss, backward, gradient clipping at 1.0 and AdamW (lr 1e-3, betas
0.9/0.98, wd 0.1). Timed like ours: wall clock per step after synchronisation, median over runs.

Reads our report (--ours) for the shapes and writes it back to --out with torch_step_s_median and
the ratio added."""
import argparse, json, statistics, time

import torch
import torch.nn.functional as F


class Mlp(torch.nn.Module):
    def __init__(self, nets, d):
        super().__init__()
        self.w1 = torch.nn.Parameter(torch.randn(nets, d, d, device="cuda") * 1e-3)
        self.b1 = torch.nn.Parameter(torch.zeros(nets, 1, d, device="cuda"))
        self.w2 = torch.nn.Parameter(torch.randn(nets, d, d, device="cuda") * 1e-3)
        self.b2 = torch.nn.Parameter(torch.zeros(nets, 1, d, device="cuda"))

    def forward(self, x, gamma):
        h1 = x + F.silu(torch.bmm(x, self.w1) + self.b1)
        h2 = h1 + torch.bmm(h1, self.w2) + self.b2
        return F.softsign(gamma * h2)


def targets(q, k, T, P, frac, gen):
    h, n, d = q.shape
    kv = k.shape[0]
    g = h // kv
    pos = torch.randperm(n, generator=gen, device="cuda")[:T].sort().values
    qs = q[:, pos]  # [h, T, d]
    logits = torch.bmm(qs.reshape(kv, g * T, d), k.transpose(1, 2)).reshape(h, T, n)
    visible = torch.arange(n, device="cuda")[None, None, :] <= pos[None, :, None]
    logits = logits.masked_fill(~visible, float("-inf"))
    ktop = max(1, int(frac * n))
    vals, idx = logits.topk(ktop, dim=-1)
    rank = torch.randint(0, ktop, (P,), generator=gen, device="cuda")
    other = torch.randint(0, n, (P,), generator=gen, device="cuda")
    top = idx[:, :, rank]  # [h, T, P]
    other = other[None, None, :].expand(h, T, P)
    kth = vals[:, :, -1:]
    count = (pos + 1).clamp(max=ktop)
    valid = (rank[None, None, :] < count[None, :, None]) & (other <= pos[None, :, None])
    valid &= logits.gather(2, other) < kth
    return qs, top, other, valid.float()


def bt_loss(cq, ck, top, other, valid, beta=1.0, margin=0.0):
    h, T, d = cq.shape
    hk, n, _ = ck.shape
    s = torch.bmm(cq.reshape(hk, -1, d), ck.transpose(1, 2)).reshape(h, T, n)
    diff = beta * (s.gather(2, top) - s.gather(2, other)) - margin
    per_head = (F.softplus(-diff) * valid).sum((1, 2)) / valid.sum((1, 2)).clamp(min=1)
    return per_head.sum()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--gamma", type=float, default=64.0)
    a = ap.parse_args()
    r = json.load(open(a.ours))
    L, h, kv, d, n = r["layers"], r["q_heads"], r["kv_heads"], r["head_dim"], r["seq_len"]
    T, P = min(r["queries"], n), r["pairs"]
    warm, runs = 2, max(3, len(r["step_s"]))
    torch.manual_seed(0)
    gen = torch.Generator(device="cuda").manual_seed(0)
    g = h // kv
    nets = []
    for _ in range(L):
        layer = {"faithful": [Mlp(h, d)], "group": [Mlp(h, d), Mlp(kv, d)]}
        opt = {
            name: torch.optim.AdamW(
                [p for m in ms for p in m.parameters()], lr=1e-3, betas=(0.9, 0.98), weight_decay=0.1
            )
            for name, ms in layer.items()
        }
        nets.append((layer, opt))
    times = []
    for step in range(warm + runs):
        qk = [(torch.randn(h, n, d, device="cuda"), torch.randn(kv, n, d, device="cuda")) for _ in range(L)]
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for (layer, opt), (q, k) in zip(nets, qk):
            with torch.no_grad():
                qs, top, other, valid = targets(q, k, T, P, 0.02, gen)
            for name, ms in layer.items():
                cq = ms[0](qs, a.gamma)
                if name == "faithful":
                    ck = ms[0](k.repeat_interleave(g, 0), a.gamma)
                else:
                    ck = ms[1](k, a.gamma)
                loss = bt_loss(cq, ck, top, other, valid)
                opt[name].zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for m in ms for p in m.parameters()], 1.0)
                opt[name].step()
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        print(f"torch step {step}: {dt:.3f} s", flush=True)
        if step >= warm:
            times.append(dt)
    med = statistics.median(times)
    r["torch"] = {
        "step_s": times,
        "step_s_median": med,
        "sequences_per_s_per_layer_layout": L * 2 / med,
        "version": torch.__version__,
        "note": "eager PyTorch, same SYNTHETIC shapes, same sampling sizes and optimiser",
    }
    r["ours_vs_torch_speedup"] = med / r["step_s_median"]
    json.dump(r, open(a.out, "w"), indent=2)
    print(f"ours {r['step_s_median']:.3f} s/step ({r['ops']}), torch {med:.3f} s/step")


if __name__ == "__main__":
    main()
