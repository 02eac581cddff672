"""Device-to-device copy bandwidth with PyTorch: the ceiling every GPU benchmark is compared to.

Counts bytes read plus bytes written; median of 20 timed copies of 4 GiB after warm-up."""
import argparse
import json

import torch

p = argparse.ArgumentParser()
p.add_argument("--gib", type=float, default=4.0)
p.add_argument("--json", required=True)
a = p.parse_args()
n = int(a.gib * 2**30) // 4
src = torch.empty(n, dtype=torch.float32, device="cuda").normal_()
dst = torch.empty_like(src)
for _ in range(3):
    dst.copy_(src)
torch.cuda.synchronize()
times = []
for _ in range(20):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    dst.copy_(src)
    e.record()
    torch.cuda.synchronize()
    times.append(s.elapsed_time(e) / 1e3)
times.sort()
med = times[len(times) // 2]
gbps = 2 * n * 4 / med / 1e9
out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "bytes": 2 * n * 4, "median_s": med, "copy_gbps": gbps}
json.dump(out, open(a.json, "w"), indent=2)
print(f"copy: {gbps:.0f} GB/s (read + write) on {out['device']}")
