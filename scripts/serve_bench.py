#!/usr/bin/env python3
"""Throughput and time-to-first-token of a running `spotlight serve`, Python standard library only
(the GPU machine has no network for pip).

For each prompt length and each client count, that many clients stream one text completion each at
the same time (token-id prompts of exactly the given length, greedy, a fixed number of new tokens).
Per cell: median and p99 time to first token, median per-client decode tokens/s, aggregate
generated tokens/s over the cell's wall time, and the server's mean decode batch and K/V read share.

    python3 scripts/serve_bench.py --base http://127.0.0.1:8080 --clients 1,4,16 \
        --prompt-tokens 4096,8192 --new-tokens 64 --label dense --out serve_dense.json
"""
import argparse
import http.client
import json
import statistics
import threading
import time
import urllib.parse


def metrics(base):
    u = urllib.parse.urlparse(base)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def one_stream(base, prompt, new_tokens, result):
    u = urllib.parse.urlparse(base)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = json.dumps({"prompt": prompt, "max_tokens": new_tokens, "temperature": 0,
                       "stream": True, "stream_options": {"include_usage": True}})
    t0 = time.perf_counter()
    c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        result["error"] = f"{r.status}: {r.read()[:300]!r}"
        return
    first = None
    tokens = 0
    for raw in r:
        line = raw.decode().strip()
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        if "error" in chunk:
            result["error"] = chunk["error"]["message"]
            return
        if chunk["choices"] and chunk["choices"][0]["text"] and first is None:
            first = time.perf_counter()
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
    end = time.perf_counter()
    first = first or end
    result.update(ttft_s=first - t0, total_s=end - t0, tokens=tokens,
                  decode_tok_s=(tokens - 1) / max(end - first, 1e-9))


def cell(base, clients, prompt_tokens, new_tokens, vocab, seed):
    results = [dict() for _ in range(clients)]
    # Distinct deterministic token-id prompts (ids 100.. avoid the special tokens at the start).
    prompts = [[100 + (i * 7919 + t * 104729 + seed) % (vocab - 200) for t in range(prompt_tokens)]
               for i in range(clients)]
    before = metrics(base)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=one_stream, args=(base, prompts[i], new_tokens, results[i]))
               for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    after = metrics(base)
    errors = [r["error"] for r in results if "error" in r]
    ok = [r for r in results if "error" not in r]
    ttft = sorted(r["ttft_s"] for r in ok)
    steps = after["spotlight_decode_steps_total"] - before["spotlight_decode_steps_total"]
    rows = after["spotlight_decode_rows_total"] - before["spotlight_decode_rows_total"]
    return {
        "clients": clients, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
        "errors": errors,
        "ttft_median_s": statistics.median(ttft) if ttft else None,
        "ttft_p99_s": ttft[min(len(ttft) - 1, round(0.99 * (len(ttft) - 1)))] if ttft else None,
        "decode_tok_s_per_client_median": statistics.median(r["decode_tok_s"] for r in ok) if ok else None,
        "throughput_tok_s": sum(r["tokens"] for r in ok) / wall,
        "wall_s": wall,
        "mean_decode_batch": rows / steps if steps else None,
        "kv_read_share": after["spotlight_kv_read_share"],
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default="http://127.0.0.1:8080")
    p.add_argument("--clients", default="1,4,16")
    p.add_argument("--prompt-tokens", default="4096,8192")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--vocab", type=int, default=49152)
    p.add_argument("--label", default="")
    p.add_argument("--out")
    a = p.parse_args()
    cells = []
    # One warm-up request (kernel compilation) before anything is timed.
    one_stream(a.base, list(range(100, 164)), 4, {})
    for n in [int(x) for x in a.prompt_tokens.split(",")]:
        for c in [int(x) for x in a.clients.split(",")]:
            r = cell(a.base, c, n, a.new_tokens, a.vocab, seed=len(cells))
            r["label"] = a.label
            print(json.dumps(r), flush=True)
            cells.append(r)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"label": a.label, "cells": cells}, f, indent=1)


if __name__ == "__main__":
    main()
