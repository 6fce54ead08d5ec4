#!/bin/sh
# Installs what estafeta needs to build and test on Debian 12. Safe to run again:
# it installs only what is missing and never changes configuration.
set -eu

BUILD_PKGS="build-essential pkg-config libevent-dev libssl-dev libargon2-dev libsqlite3-dev libunbound-dev zlib1g-dev libisal-dev"
TEST_PKGS="clang libclang-rt-14-dev valgrind python3 python3-pytest swaks openssl procps iproute2 msmtp testssl.sh libnet-ssleay-perl libauthen-sasl-perl util-linux fetchmail postfix python3-dnslib"

missing=""
for p in $BUILD_PKGS $TEST_PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -n "$missing" ]; then
    echo "setup: installing:$missing"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing
else
    echo "setup: all build and test packages present"
fi
