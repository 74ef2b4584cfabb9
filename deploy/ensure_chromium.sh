#!/usr/bin/env bash
# Make sure Debian's Chromium is installed for the playground's browser test (tests/service/playground/):
# installs `chromium` and `chromium-driver` with apt-get when /usr/bin/chromium is missing. Playwright drives
# that binary, so no browser is downloaded at test time.
#
# Never fails the caller: `make test` runs this first, and without Chromium the browser test skips with the
# reason, so a machine without apt or root still runs the rest of the suite.
set -uo pipefail

CHROMIUM="${DIFFPLEX_CHROMIUM:-/usr/bin/chromium}"

give_up() {
    echo "chromium: $1; the playground browser test will skip" >&2
    exit 0
}

if [[ -x "$CHROMIUM" ]]; then
    echo "chromium: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 || give_up "not installed and apt-get is not available (install chromium yourself)"

sudo=()
if [[ "$(id -u)" -ne 0 ]]; then
    # -n: never wait for a password prompt in CI
    sudo -n true 2>/dev/null || give_up "installing it needs root (or password-less sudo)"
    sudo=(sudo -n)
fi

echo "chromium: installing chromium, chromium-driver and fonts-liberation with apt-get"
apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o Dpkg::Use-Pty=0)
"${apt[@]}" update || give_up "apt-get update failed"
# Recommends would add printing and desktop services; a headless browser only needs a font to render text.
"${apt[@]}" install -y --no-install-recommends chromium chromium-driver fonts-liberation ||
    give_up "apt-get install failed"

[[ -x "$CHROMIUM" ]] || give_up "apt-get installed the packages but $CHROMIUM is still missing"
echo "chromium: $("$CHROMIUM" --version 2>/dev/null || echo "installed at $CHROMIUM")"
