"""Every bad input through the real command line: exit 2, a message naming the problem, no traceback,
and nothing written. Each case fails before any model loads."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from codeunlearn.cli.main import app

RUN_DIR = "run"
STATE_DIR = "state"


def _write(name: str, content: str | bytes) -> Callable[[Path], Path]:
    """An input file made in the test's directory; its path goes on the command line."""

    def make(root: Path) -> Path:
        path = root / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    return make


def _corpus(root: Path) -> Path:
    """A small local corpus, so the examples-file cases need no WordNet."""
    path = root / "corpus.jsonl"
    rows = [{"text": f"example number {i} about things", "label": f"t{i % 3}"} for i in range(30)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _examples_case(name: str, content: bytes | None) -> Callable[[Path], list[str]]:
    def args(root: Path) -> list[str]:
        examples = _write(name, content)(root) if content is not None else root / name
        return [
            "prepare",
            f"data.corpus={_corpus(root)}",
            "topic.label=null",
            f"topic.examples_file={examples}",
        ]

    return args


def _stage(*overrides: str) -> Callable[[Path], list[str]]:
    return lambda root: ["prepare", *overrides]


def _with_config(name: str, content: str) -> Callable[[Path], list[str]]:
    return lambda root: ["prepare", "-c", str(_write(name, content)(root))]


# name -> (the command line, given the test's directory; a distinctive part of the message)
CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "missing config file": (
        lambda root: ["prepare", "-c", str(root / "absent.yaml")],
        "absent.yaml does not exist: pass the path of a YAML file",
    ),
    "config file not YAML": (_with_config("broken.yaml", "train: [1, 2\nlr: :\n"), "is not valid YAML"),
    "config file a YAML list": (
        _with_config("list.yaml", "- train\n- lr\n"),
        "must hold a mapping at the top level",
    ),
    "unknown top-level key": (_stage("trian.lr=1e-3"), "unknown config key trian; did you mean train?"),
    "unknown nested key": (_stage("train.lrr=1e-3"), "unknown config key train.lrr; did you mean train.lr?"),
    "wrongly typed value": (_stage("train.lr=abc"), "train.lr='abc' is a str, but it must be a float"),
    "override without =": (_stage("train.lr"), "is not of the form section.key=value"),
    "override YAML syntax error": (_stage("topic.keywords=[a, b"), "the value is not valid YAML"),
    "negative count": (_stage("mining.n_select=-1"), "mining.n_select=-1"),
    "forget gate above 1": (
        _stage("gates.min_forget_drop=1.5"),
        "gates.min_forget_drop=1.5: set it to 1 or less",
    ),
    "retain gate below 0": (
        _stage("gates.max_retain_drop=-0.1"),
        "gates.max_retain_drop=-0.1: set it to 0 or more",
    ),
    "random-share gate below 0": (
        _stage("gates.max_random_share=-0.1"),
        "gates.max_random_share=-0.1: set it to 0 or more",
    ),
    "no attempt allowed": (
        _stage("requests.max_attempts=0"),
        "requests.max_attempts=0: set it to 1 or more",
    ),
    "negative retry backoff": (
        _stage("requests.retry_backoff_s=-5"),
        "requests.retry_backoff_s=-5.0: give seconds from 0 to 86400",
    ),
    "top_k of 0": (_stage("bottleneck.top_k=0"), "top_k must be between 1 and n_codes"),
    "n_codes of 0": (_stage("bottleneck.n_codes=0"), "bottleneck.n_codes=0: set it to 1 or more"),
    "test fraction above 1": (_stage("data.test_fraction=1.5"), "data.test_fraction=1.5: set a share"),
    "two topic kinds": (
        _stage("topic.label=noun.food", "topic.keywords=[bread]"),
        "topic needs exactly one of label, keywords, regex, examples_file; got ['label', 'keywords']",
    ),
    "empty keyword list": (_stage("topic.keywords=[]"), "topic needs exactly one of label, keywords"),
    "blank keywords": (_stage("topic.keywords=['', ' ']"), "topic.keywords holds no words"),
    "invalid regex": (_stage("topic.regex=("), "topic.regex='(' is not a valid regular expression"),
    "examples file missing": (_examples_case("absent.txt", None), "absent.txt' does not exist"),
    "examples file not UTF-8": (_examples_case("forget.txt", b"\xff\xfe\x00bad"), "is not UTF-8 text"),
    "examples file of unknown extension": (
        _examples_case("forget.docx", b"one\ntwo\nthree\n"),
        "has the extension '.docx', which is not an examples format",
    ),
    "unknown unlearning method": (
        _stage("unlearn.method=nonsense"),
        "unlearn.method='nonsense' is not an unlearning method",
    ),
    "negative probe questions": (
        _stage("eval.probe.questions_per_topic=-1"),
        "eval.probe.questions_per_topic=-1: set it to 1 or more",
    ),
    "tracking URI with spaces": (_stage("tracking.tracking_uri=not a uri"), "is not a URI"),
    "request show of an unknown id": (
        lambda root: ["request", "show", "req-unknown"],
        "no deletion request 'req-unknown'",
    ),
    "request revert of an unknown id": (
        lambda root: ["request", "revert", "req-unknown"],
        "no deletion request 'req-unknown'",
    ),
    "request retry of an unknown id": (
        lambda root: ["request", "retry", "req-unknown"],
        "no deletion request 'req-unknown'",
    ),
    "request add with two topics": (
        lambda root: ["request", "add", "--label", "noun.food", "--keywords", "bread"],
        "give exactly one of --label, --keywords, --regex, --examples; got ['label', 'keywords']",
    ),
    "request add with no topic": (lambda root: ["request", "add"], "give exactly one of --label"),
    "verify a malformed certificate": (
        lambda root: ["verify", str(_write("certificate.json", "{not json")(root))],
        "certificate.json is not JSON",
    ),
    "verify a missing certificate": (
        lambda root: ["verify", str(root / "absent.json")],
        "absent.json does not exist: pass a certificate.json",
    ),
    "sql syntax error": (
        lambda root: ["sql", "selec code_id frm code_counts", "--run-dir", str(_existing_run_dir(root))],
        "code store query failed: Parser Error: syntax error",
    ),
    "sql on a missing run directory": (
        lambda root: ["sql", "select 1", "--run-dir", str(root / "no-such-run")],
        "no-such-run does not exist: pass --run-dir of a run",
    ),
}


def _existing_run_dir(root: Path) -> Path:
    (root / RUN_DIR).mkdir(exist_ok=True)
    return root / RUN_DIR


def _files(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


def test_there_are_at_least_25_distinct_cases():
    assert len(CASES) >= 25 and len({message for _, message in CASES.values()}) >= 20


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_with_a_message_and_writes_nothing(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything written to a relative default path would land here
    build_args, message = CASES[name]
    args = build_args(tmp_path)
    if args[0] not in ("verify", "sql"):
        args += [f"run_dir={tmp_path / RUN_DIR}", f"tracking.state_dir={tmp_path / STATE_DIR}"]
    elif "--run-dir" not in args:
        args += ["--run-dir", str(tmp_path / RUN_DIR)]
    inputs = _files(tmp_path)

    result = CliRunner().invoke(app, args)

    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert message in result.stderr, result.output
    assert result.stderr.startswith("error: ") or "\nerror: " in result.stderr
    assert "Traceback" not in result.output
    assert _files(tmp_path) == inputs, "the command wrote files"
    for directory in (tmp_path / RUN_DIR, tmp_path / STATE_DIR):
        assert not directory.exists() or not _files(directory)


def test_gates_set_wide_open_still_load():
    from codeunlearn.core.config import load_config
    from codeunlearn.evaluation.outcome import TopicOutcome

    config = load_config(
        None,
        [
            "gates.min_forget_drop=-1e9",
            "gates.max_retain_drop=1e9",
            "gates.max_random_share=1e9",
            "gates.min_gain=-1e9",
        ],
    )
    # a topic barely learned, a mask no better than chance that wrecks the retained topics
    nll = {"base": (2.01, 3.0), "codebook": (2.0, 2.0), "masked": (2.5, 7.0), "random": (2.5, 2.0)}
    outcome = TopicOutcome(
        forget={v: f for v, (f, _) in nll.items()}, retain={v: r for v, (_, r) in nll.items()}
    )
    assert outcome.failures(config.gates) == []
