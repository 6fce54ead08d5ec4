#!/bin/sh
# The README's first command: installs what is missing, builds estafeta and
# runs it in the foreground on its embedded demo configuration
# (domain example.test, user demo@example.test, SMTP on 127.0.0.1:2525,
# all state under one data directory). Ctrl-C stops it.
set -eu
cd "$(dirname "$0")/.."

./scripts/setup.sh
make -j"$(nproc)" >/dev/null
BIN="$PWD/build/release/estafeta"

RUN_AS=""
if [ "$(id -u)" -eq 0 ]; then
    # Network input is never parsed as root: run as a system user, with the
    # data where that user can reach it.
    if ! getent passwd estafeta >/dev/null; then
        useradd --system --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin estafeta
    fi
    RUN_AS="--run-as estafeta"
    DATA="${ESTAFETA_DATA:-/var/lib/estafeta-demo}"
else
    DATA="${ESTAFETA_DATA:-$PWD/estafeta-data}"
fi

cat <<MSG

estafeta demo: SMTP on 127.0.0.1:2525 for the domain example.test
(user demo@example.test; team@example.test is a list; postmaster goes to demo).
All state lives in $DATA.

Send a message from another terminal, for example with swaks:
    swaks --server 127.0.0.1:2525 --from you@example.org --to demo@example.test
or with Python:
    /usr/bin/python3 -c 'import smtplib; smtplib.SMTP("127.0.0.1", 2525).sendmail("you@example.org", ["demo@example.test"], "Subject: hi\r\n\r\nhello\r\n")'

Submission (your mail client): 127.0.0.1:2587 with STARTTLS, or
127.0.0.1:2465 with TLS (self-signed certificate), login demo@example.test
with password demo:
    swaks --server 127.0.0.1:2587 --tls --auth PLAIN --auth-user demo@example.test --auth-password demo --from demo@example.test --to demo@example.test

Read it over POP3: 127.0.0.1:2110 (STLS) or 127.0.0.1:2995 (TLS), same login.

It lands as a file in the Maildir:
    $DATA/mail/example.test/demo/new/
Queue:  $BIN queue list --data-dir $DATA
Stop with Ctrl-C.

MSG
# shellcheck disable=SC2086
exec "$BIN" serve --data-dir "$DATA" $RUN_AS
