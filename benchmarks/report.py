#!/usr/bin/env python3
"""Markdown table of a bench_decode.py JSON file: python benchmarks/report.py benchmarks/results/h100.json"""
import json
import sys
from collections import defaultdict


def config_name(c):
    if "seqlens" in c:
        return f"b{c['b']} s_q{c['s_q']} h{c['h_q']} seqlens {c['seqlens']}"
    return f"b{c['b']} s_q{c['s_q']} h{c['h_q']} sk{c['mean_seqlen']}"


def main(path):
    rows = defaultdict(dict)
    for r in json.load(open(path)):
        rows[config_name(r["config"])].setdefault(r["impl"], r)  # a config repeated by --sq-sweep: first run
    peers = [p for p in ("flashmla", "fa3_mla", "flashinfer_mla") if any(p in v for v in rows.values())]
    head = ["config", "ours µs", "ours TFLOPS", "ours GB/s"]
    for p in peers:
        head += [f"{p} µs", f"{p}/ours"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, impls in rows.items():
        o = impls["ours"]
        cells = [name, f"{o['us']:.1f}", f"{o['tflops']:.0f}", f"{o['gbps']:.0f}"]
        for p in peers:
            cells += [f"{impls[p]['us']:.1f}", f"{impls[p]['us'] / o['us']:.2f}"] if p in impls else ["", ""]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
