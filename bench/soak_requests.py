"""Soak: many deletion requests, two concurrent processors, one of them SIGKILLed every few seconds.

On the tiny tracked setup the tests use (a random-weight Llama with the real SmolLM2 tokenizer, 160
WordNet glosses per label, a real MLflow SQLite registry, the real Parquet store), it submits N
requests: label and keyword topics (some pass their gates, some are rejected) and a few poison ones
(an examples file deleted or edited after submission, a topic that matches nothing, one whose files
cannot be written). Two looping `codeunlearn request process` workers take them while a killer
SIGKILLs one worker process at random every --kill-min..--kill-max seconds. When the killer stops, a
last undisturbed run drains what is left, and the script checks:

  lost (not answered), processed twice (two final events), duplicate registry versions, stuck
  (still open), poison requests not failed with their reason, the active-mask invariant
  (`check_active_mask`, production included), duplicate store rows, MLflow runs left RUNNING.

    python bench/soak_requests.py --out results/soak            # 200 requests, about 30 min on 2 cores

Resumable: the setup, the registry and the requests live under --out/work; a rerun with the same --out
submits only what is missing and goes on. The figures go to --out/soak.json and --out/soak.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the tests' tiny setup (tests/pipeline/setup_files.py)

POISON_KINDS = ("examples-deleted", "examples-edited", "matches-nothing", "unwritable")
FINAL = ("done", "rejected", "failed", "reverted")


def main() -> None:
    args = _parser().parse_args()
    out = Path(args.out).resolve()
    work = out / "work"
    config_path = _setup(work, args)
    from codeunlearn.core.config import load_config

    config = load_config(config_path)
    plan = _submit(config, work, args)
    started = time.time()
    stop = threading.Event()
    workers = [_Worker(i, config_path, out / f"worker-{i}.log", stop) for i in range(args.processors)]
    for worker in workers:
        worker.start()
    kills = _kill_until_answered(config, workers, args, started)
    stop.set()
    for worker in workers:
        worker.join()
    drained = _run_cli(config_path, out / "drain.log")
    parts = _record_part(work, time.time() - started, kills)
    figures = _check(config, plan, parts, drained, args)
    (out / "soak.json").write_text(json.dumps(figures, indent=2, default=str) + "\n")
    (out / "soak.md").write_text(_markdown(figures, args) + "\n")
    print(_markdown(figures, args))
    sys.exit(0 if figures["passed"] else 1)


# ------------------------------------------------------------------ setup


def _setup(work: Path, args: argparse.Namespace) -> Path:
    """The tiny tracked setup with a trained, registered codebook (kept across reruns)."""
    import yaml

    config_path = work / "config.yaml"
    if (work / "ready").exists():
        return config_path
    from tests.pipeline.setup_files import tiny_config, write_config, write_corpus, write_tiny_model

    work.mkdir(parents=True, exist_ok=True)
    model_dir = write_tiny_model(work / "tiny-llama")
    corpus = write_corpus(work / "corpus.parquet")
    config = tiny_config(work, model_dir, corpus)
    config["gates"] = {**config["gates"], "min_forget_drop": args.min_forget_drop}
    config["calibration"] = {"grid": [4, 8]}
    config["topic"] = {**config["topic"], "max_val_retain": 100}  # a quicker calibration per request
    config["requests"] = {"max_attempts": args.max_attempts, "retry_backoff_s": args.backoff_s}
    write_config(config_path, config)
    print(yaml.safe_dump(config["gates"]), file=sys.stderr)
    from codeunlearn.core.config import load_config
    from codeunlearn.tracking import stages as tracked

    loaded = load_config(config_path)
    with tracked.pipeline_run(loaded) as parent:
        tracked.prepare(loaded, parent)
        tracked.train(loaded, parent)
    (work / "ready").write_text("trained and registered\n")
    return config_path


def _submit(config, work: Path, args: argparse.Namespace) -> dict[str, str]:
    """Submit the missing requests; returns request id -> kind ("ok" or a poison kind), also kept in
    work/plan.json so a rerun knows which are poison."""
    from codeunlearn.core.config import TopicConfig
    from codeunlearn.requests.processor import Processor
    from codeunlearn.tracking.tracker import Tracker
    from tests.pipeline.setup_files import LABELS

    plan_path = work / "plan.json"
    plan = json.loads(plan_path.read_text()) if plan_path.exists() else {}
    tracker = Tracker(config)
    processor = Processor(config, tracker)
    rng = random.Random(len(plan))
    keywords = (("food", "meat"), ("animal",), ("tree", "plant"), ("person", "man"), ("city", "region"))
    n_poison = max(len(POISON_KINDS), args.requests // 25)
    while len(plan) < args.requests:
        i = len(plan)
        if i % (args.requests // n_poison) == 3 and sum(k != "ok" for k in plan.values()) < n_poison:
            kind = POISON_KINDS[sum(k != "ok" for k in plan.values()) % len(POISON_KINDS)]
            request_id = _poison(kind, processor, config, work, i)
        else:
            kind = "ok"
            if rng.random() < 0.5:
                topic = TopicConfig(label=rng.choice(LABELS))
            else:
                topic = TopicConfig(label=None, keywords=rng.choice(keywords))
            request_id = processor.submit(topic).request_id
        plan[request_id] = kind
        plan_path.write_text(json.dumps(plan, indent=1))
    print(f"{len(plan)} requests submitted ({Counter(plan.values())})", file=sys.stderr)
    return plan


def _poison(kind: str, processor, config, work: Path, i: int) -> str:
    from codeunlearn.core.config import TopicConfig

    if kind == "matches-nothing":  # recorded past submit's check, as a hand-edited store might hold
        topic = TopicConfig(label=None, keywords=(f"zzqxv{i}",))
        return processor.requests.add(topic, processor.registry.codebook_name, "1").request_id
    examples = work / f"examples-{i}.jsonl"
    rows = [{"text": f"Glosses of the food kind number {j}: bread, rice, cheese."} for j in range(40)]
    examples.write_text("".join(json.dumps(row) + "\n" for row in rows))
    request = processor.submit(TopicConfig(label=None, examples_file=str(examples)))
    if kind == "examples-deleted":
        examples.unlink()
    elif kind == "examples-edited":
        examples.write_text(examples.read_text() + json.dumps({"text": "one more"}) + "\n")
    elif kind == "unwritable":  # its splits' directory is taken by a file: every attempt fails on disk
        obstacle = Path(config.run_dir) / "requests" / request.request_id
        obstacle.parent.mkdir(parents=True, exist_ok=True)
        obstacle.write_text("in the way")
    return request.request_id


# ------------------------------------------------------------------ the run


class _Worker(threading.Thread):
    """Runs `codeunlearn request process` again and again until stopped; `process` is the live one."""

    def __init__(self, index: int, config_path: Path, log: Path, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.index, self.config_path, self.log, self.stop = index, config_path, log, stop
        self.process: subprocess.Popen | None = None
        self.runs = Counter()

    def run(self) -> None:
        while not self.stop.is_set():
            with self.log.open("a") as log:
                self.process = subprocess.Popen(
                    _cli(self.config_path, wait_s=5),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=REPO,
                    env=_env(),
                )
                code = self.process.wait()
            self.runs["killed" if code == -signal.SIGKILL else f"exit {code}"] += 1
            time.sleep(0.5)


def _kill_until_answered(config, workers: list[_Worker], args: argparse.Namespace, started: float) -> dict:
    from codeunlearn.requests.queue import RequestStore

    rng = random.Random(7)
    store = RequestStore(Path(config.run_dir) / "store")
    kills = Counter()
    while time.time() - started < args.max_minutes * 60:
        time.sleep(rng.uniform(args.kill_min, args.kill_max))
        victim = rng.choice(workers).process
        if victim is not None and victim.poll() is None:
            victim.send_signal(signal.SIGKILL)
            kills["sent"] += 1
        statuses = Counter(r.status for r in store.list())
        print(f"{time.time() - started:6.0f} s  kills {kills['sent']:4d}  {dict(statuses)}", file=sys.stderr)
        if not any(statuses[s] for s in ("pending", "processing", "reverting")):
            break
    return dict(kills)


def _record_part(work: Path, wall_s: float, kills: dict) -> list[dict]:
    """Every part of the soak so far (a rerun resumes a stopped one), this one appended."""
    path = work / "parts.json"
    parts = json.loads(path.read_text()) if path.exists() else []
    parts.append({"wall_s": round(wall_s), "kills_sent": kills.get("sent", 0)})
    path.write_text(json.dumps(parts, indent=1))
    return parts


def _run_cli(config_path: Path, log: Path) -> int:
    with log.open("w") as handle:
        return subprocess.run(
            _cli(config_path, wait_s=120), stdout=handle, stderr=subprocess.STDOUT, cwd=REPO, env=_env()
        ).returncode


def _cli(config_path: Path, wait_s: float) -> list[str]:
    return [
        sys.executable,
        "-m",
        "codeunlearn",
        "request",
        "process",
        "-c",
        str(config_path),
        "--wait",
        str(wait_s),
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "CODEUNLEARN_PROGRESS": "0", "PYTHONPATH": str(REPO)}


# ------------------------------------------------------------------ the checks


def _check(config, plan: dict[str, str], parts: list[dict], drained: int, args) -> dict:
    from mlflow.tracking import MlflowClient

    from codeunlearn.requests.invariant import check_active_mask
    from codeunlearn.requests.queue import RequestStore
    from codeunlearn.tracking.tracker import Tracker

    store = RequestStore(Path(config.run_dir) / "store")
    tracker = Tracker(config)
    requests = {r.request_id: r for r in store.list()}
    finals = store.store.sql(
        "SELECT request_id, count(*) AS n FROM request_events WHERE list_contains($final, status) "
        "GROUP BY request_id",
        {"final": list(FINAL)},
    ).to_pylist()
    versions = Counter(v.tags.get("request_key") for v in tracker._versions(tracker.masked_name))
    duplicates = store.store.sql(
        "SELECT (SELECT count(*) FROM mask_codes) - (SELECT count(*) FROM (SELECT DISTINCT mask_version, "
        "source, code_id FROM mask_codes)) AS mask_rows, (SELECT count(*) FROM evaluations) - "
        "(SELECT count(*) FROM (SELECT DISTINCT evaluation_id, split FROM evaluations)) AS evaluation_rows"
    ).to_pylist()[0]
    running = MlflowClient(tracker.uri).search_runs([tracker.experiment_id], "attributes.status = 'RUNNING'")
    poison = {rid: kind for rid, kind in plan.items() if kind != "ok"}
    poison_not_failed = [
        f"{rid} ({kind}): {requests[rid].status} {requests[rid].error[:80]}"
        for rid, kind in poison.items()
        if requests[rid].status != "failed" or not requests[rid].error
    ]
    answered = [
        rid for rid, kind in plan.items() if kind == "ok" and requests[rid].status in ("done", "rejected")
    ]
    figures = {
        "requests": len(plan),
        "poison": len(poison),
        "parts": len(parts),
        "wall_s": sum(part["wall_s"] for part in parts),
        "kills_sent": sum(part["kills_sent"] for part in parts),
        "statuses": dict(Counter(r.status for r in requests.values())),
        "attempts": dict(Counter(r.attempts for r in requests.values())),
        "answered_of_ok": f"{len(answered)}/{len(plan) - len(poison)}",
        # an attempt past the first of a request that ended answered: a kill hit it mid-processing
        "attempts_killed_mid_request": sum(requests[rid].attempts - 1 for rid in answered),
        "lost": sum(rid not in requests for rid in plan),
        "stuck": sum(r.status in ("pending", "processing", "reverting") for r in requests.values()),
        "processed_twice": sum(row["n"] > 1 for row in finals),
        "duplicate_versions": sum(n > 1 for n in versions.values()),
        "poison_not_failed": poison_not_failed,
        "poison_reasons": {kind: requests[rid].error[:120] for rid, kind in poison.items()},
        "invariant_problems": check_active_mask(config, tracker),
        "duplicate_rows": duplicates,
        "runs_left_running": len(running),
        "drain_exit": drained,
    }
    figures["passed"] = (
        figures["lost"]
        == figures["stuck"]
        == figures["processed_twice"]
        == figures["duplicate_versions"]
        == 0
        and not poison_not_failed
        and len(answered) == len(plan) - len(poison)
        and not figures["invariant_problems"]
        and duplicates == {"mask_rows": 0, "evaluation_rows": 0}
        and not running
    )
    return figures


def _markdown(figures: dict, args: argparse.Namespace) -> str:
    lines = [
        f"# Soak: {figures['requests']} deletion requests, {args.processors} processors, SIGKILL every "
        f"{args.kill_min:g}-{args.kill_max:g} s",
        "",
        f"Command: `python bench/soak_requests.py --out {args.out} --requests {args.requests}`",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    for key, value in figures.items():
        if key != "poison_reasons":
            lines.append(f"| {key} | {value} |")
    lines += ["", "Poison requests, their recorded reasons:", ""]
    lines += [f"- {kind}: {reason}" for kind, reason in figures["poison_reasons"].items()]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/soak")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--processors", type=int, default=2)
    parser.add_argument("--kill-min", type=float, default=4.0)
    parser.add_argument("--kill-max", type=float, default=12.0)
    parser.add_argument("--max-minutes", type=float, default=90.0)
    parser.add_argument("--max-attempts", type=int, default=8, help="requests.max_attempts of the soak")
    parser.add_argument("--backoff-s", type=float, default=0.5, help="requests.retry_backoff_s of the soak")
    # The tiny random-weight model forgets little: its normalised forget drops lie around -0.003 to 0,
    # so this gate passes some requests and rejects others.
    parser.add_argument("--min-forget-drop", type=float, default=-0.0025, help="gates.min_forget_drop")
    return parser


if __name__ == "__main__":
    main()
