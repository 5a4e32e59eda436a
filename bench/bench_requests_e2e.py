"""Benchmark: deletion requests end to end, each through `codeunlearn request add` + `request process`.

Every request is its own `request process` call, so each wall-clock figure is what one user waits for one
request: loading the registered codebook model, mining, calibration on the request's validation split,
evaluation on its held-out test split, and registering the mask version (or rejecting). The config's run
directory must hold a trained, registered codebook (`codeunlearn run -c CONFIG` first).

Requests are written one JSON file each under --out, so a stopped benchmark resumes where it stopped;
the table printed at the end (and written as <out>/requests.md) reads them all.

    python bench/bench_requests_e2e.py -c configs/fortunes.yaml --out results/requests-fortunes \\
        --keywords love --keywords computer,computers --examples-grep "Mark Twain"
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from codeunlearn.core.config import load_config
from codeunlearn.data.corpus import load_corpus
from codeunlearn.requests.queue import RequestStore


def main() -> None:
    args = _parser().parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = load_config(Path(args.config), args.overrides)
    store = RequestStore(Path(config.run_dir) / "store")
    specs = [("keywords", words) for words in args.keywords] + [("label", label) for label in args.label]
    for phrase in args.examples_grep:
        specs.append(("examples", str(_examples_file(config, phrase, out))))
    for kind, value in specs:
        record = out / f"{_slug(kind, value)}.json"
        if record.exists():
            print(f"{kind} {value}: done before, skipped", file=sys.stderr)
            continue
        record.write_text(json.dumps(_answer(args, store, kind, value), default=str, indent=2) + "\n")
    rows = [json.loads(path.read_text()) for path in sorted(out.glob("*.json"))]
    table = _table(rows)
    (out / "requests.md").write_text(table + "\n")
    print(table)


def _answer(args: argparse.Namespace, store: RequestStore, kind: str, value: str) -> dict:
    before = {request.request_id for request in store.list()}
    base = ["codeunlearn", "request"]
    overrides = list(args.overrides)
    subprocess.run([*base, "add", "-c", args.config, f"--{kind}", value, *overrides], check=True)
    (added,) = [request for request in store.list() if request.request_id not in before]
    start = time.perf_counter()
    subprocess.run([*base, "process", "-c", args.config, *overrides], check=True)
    seconds = time.perf_counter() - start
    request = store.get(added.request_id)
    print(f"{kind} {value}: {request.status} in {seconds:.0f} s {request.error[:200]}", file=sys.stderr)
    return {"kind": kind, "value": value, "seconds": round(seconds, 1), **asdict(request)}


def _examples_file(config, phrase: str, out: Path) -> Path:
    """The corpus's texts that contain `phrase`, one per line: a user's list of documents to forget."""
    texts = load_corpus(config.data).column("text").to_pylist()
    pattern = re.compile(re.escape(phrase), re.IGNORECASE)
    path = out / f"examples-{_slug('phrase', phrase)}.txt"
    path.write_text("\n".join(text for text in texts if pattern.search(text)) + "\n")
    return path.resolve()


def _slug(kind: str, value: str) -> str:
    readable = re.sub(r"[^a-z0-9]+", "-", Path(value).stem.lower() if kind == "examples" else value.lower())
    return f"{kind}-{readable.strip('-')[:40]}-{hashlib.sha1(value.encode()).hexdigest()[:6]}"


def _table(rows: list[dict]) -> str:
    lines = [
        "| request | status | seconds | reason |",
        "|---|---|---|---|",
    ]
    for row in rows:
        name = Path(row["value"]).name if row["kind"] == "examples" else row["value"]
        reason = row.get("error", "").replace("|", "/")
        lines.append(f"| {row['kind']}: {name} | {row['status']} | {row['seconds']:.0f} | {reason} |")
    done = sum(row["status"] == "done" for row in rows)
    lines.append("")
    lines.append(f"{done} of {len(rows)} requests done; the rest rejected or failed as the table says.")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", required=True, help="YAML config whose run_dir holds the codebook")
    parser.add_argument("--out", required=True, help="folder for one JSON per request and requests.md")
    parser.add_argument("--keywords", action="append", default=[], help="a comma-separated word list")
    parser.add_argument("--label", action="append", default=[], help="a label value of the corpus")
    parser.add_argument(
        "--examples-grep",
        action="append",
        default=[],
        help="a phrase: the corpus texts holding it become an examples file request",
    )
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides for every call")
    return parser


if __name__ == "__main__":
    main()
