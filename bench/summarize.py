"""One table from the benchmark JSON files: `python bench/summarize.py RESULTS_DIR [--out FILE.md]`.

Rows are (benchmark, shape, C); columns are the figures the issue's acceptance criteria name.
Also writes all results into one summary.json beside the Markdown (for the device's few returned files).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def rows_of(report: dict) -> list[dict]:
    name, shape, rows = report["benchmark"], report.get("shape", ""), []
    search = report.get("args", {}).get("search", "exact")
    if search == "grouped":
        search = f"grouped P={report['args'].get('search_probes')}"
    if report.get("args", {}).get("combine", "mean") != "mean":
        search += f" {report['args']['combine']}"
    for result in report.get("results", []):
        row = {"bench": name, "shape": shape, "C": f"{result.get('n_codes', '')} {search}"}
        if name == "training":
            row |= {
                "figure": f"base {result['base_tok_s']:,.0f} tok/s; joint {result['joint_overhead']:+.1%}; "
                f"frozen/base {result['frozen_over_base']:.2f}; "
                f"codebook share {result['codebook_share_of_joint']:.1%}; "
                f"MFU joint {result['joint_mfu']:.1%} ({result['joint_tflops']:.0f} TFLOP/s)"
            }
        elif name == "mining":
            row |= {
                "figure": f"forward {result['forward_tok_s']:,.0f} tok/s; "
                f"mining {result['mining_tok_s']:,.0f} tok/s = {result['mining_over_forward']:.1%} of forward"
            }
        elif name == "generation":
            row |= {
                "figure": f"base {result['base_tok_s']:,.0f} tok/s; "
                f"masked {result['masked_tok_s']:,.0f} tok/s ({result['masked_overhead']:+.1%})"
            }
        elif name == "request":
            register = result["register_s"]
            row |= {
                "figure": f"request {result['request_s']:.3f} s"
                + (f" + register {register:.2f} s" if register is not None else " (register not measured)")
                + f"; NPO {result['npo_s']:.1f} s = {result['npo_over_request']:.0f}x"
            }
        elif name == "topk":
            row |= {
                "C": shape.replace("n", "", 1).replace("-c", " tokens x ") + " codes",
                "figure": f"{result['variant']}: {result['ms']:.2f} ms, differs {result['differ']:.2%}",
            }
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    reports = [
        json.loads(p.read_text()) for p in sorted(args.results.glob("*.json")) if p.name != "summary.json"
    ]
    rows = [row for report in reports for row in rows_of(report)]
    devices = sorted({report.get("device", "?") for report in reports})
    lines = [f"device: {', '.join(devices)}", "", "| bench | shape | C | figures |", "|---|---|---|---|"]
    lines += [f"| {r['bench']} | {r['shape']} | {r['C']} | {r['figure']} |" for r in rows]
    text = "\n".join(lines)
    print(text)
    out = args.out or args.results / "summary.md"
    out.write_text(text + "\n")
    (out.parent / "summary.json").write_text(json.dumps(reports, indent=2) + "\n")


if __name__ == "__main__":
    main()
