#!/bin/sh
# The browser tests (tests/test_app.py) drive Debian's chromium through its chromedriver
# (packages chromium and chromium-driver); nothing downloads a browser build.
#
# Already there: nothing to do. As root with apt-get (CI, a fresh Debian machine): installs both.
# Otherwise: says what is missing and exits 0, so the README's test command still runs for a user
# without root; the browser tests then skip with that reason (SALMA_REQUIRE_BROWSER=1 makes them fail).
set -eu
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver
else
    echo "tools/install_test_browser.sh: no chromium / chromedriver and no root apt-get: the browser tests" \
         "will be skipped (install the Debian packages chromium and chromium-driver to run them)" >&2
fi
