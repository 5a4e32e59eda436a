#!/usr/bin/env bash
# Time `scripts/install.sh` (the main job's install) and `scripts/install.sh --all` (the tests' and
# every setting's) from nothing: a new virtual environment, pip's cache off, and with --bare (root
# only) the project's Debian packages purged and apt's cache emptied first, so that apt downloads and
# installs them as on a bare machine. Prints one table; the venv and its packages are removed after.
#
#   bash bench/bench_install.sh            pip part only (Debian packages as they are)
#   sudo bash bench/bench_install.sh --bare
#
# --bare removes and reinstalls system packages: run it where nothing else reads them meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."

bare=false
case "${1:-}" in
  "") ;;
  --bare) bare=true ;;
  *) echo "bench_install.sh: unknown option '$1'; use no option or --bare" >&2; exit 2 ;;
esac

main_debs=(wordnet-base)
all_debs=(sword-text-kjv sword-text-sparv debian-reference-en debian-reference-fr debian-handbook fortunes)
if $bare; then
  if [ "$(id -u)" -ne 0 ]; then echo "bench_install.sh: --bare needs root (apt-get purge)" >&2; exit 2; fi
  apt-get purge -y -qq "${main_debs[@]}" "${all_debs[@]}" >/dev/null
  apt-get clean
fi

venv=$(mktemp -d /tmp/codeunlearn-install-XXXXXX)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
export PATH="$venv/bin:$PATH" PIP_NO_CACHE_DIR=1

seconds() { local start=$SECONDS; "$@" >"$venv/install.log" 2>&1 || { cat "$venv/install.log" >&2; exit 1; }; echo $((SECONDS - start)); }

main_s=$(seconds bash scripts/install.sh)
all_s=$(seconds bash scripts/install.sh --all)
python3 -c "import codeunlearn, torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"

echo "| install | Debian packages | seconds |"
echo "|---|---|---|"
echo "| \`bash scripts/install.sh\` (main job) | $($bare && echo "downloaded: ${main_debs[*]}" || echo "already installed") | $main_s |"
echo "| then \`bash scripts/install.sh --all\` | $($bare && echo "downloaded: ${all_debs[*]}" || echo "already installed") | +$all_s |"
