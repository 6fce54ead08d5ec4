/* sasl_mech: the table of SASL mechanism names (see sasl.h). */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "proto/sasl.h"

static const char *const mech_names[SASL_MECH__COUNT] = {
    [SASL_MECH_PLAIN] = "PLAIN",
    [SASL_MECH_LOGIN] = "LOGIN",
    [SASL_MECH_SCRAM_SHA_256] = "SCRAM-SHA-256",
    [SASL_MECH_CRAM_MD5] = "CRAM-MD5",
    [SASL_MECH_DIGEST_MD5] = "DIGEST-MD5",
};

int sasl_mech_lookup(const char *name, size_t len)
{
    for (int i = 0; i < SASL_MECH__COUNT; i++)
        if (strlen(mech_names[i]) == len && strncasecmp(mech_names[i], name, len) == 0)
            return i;
    return -1;
}

const char *sasl_mech_name(enum sasl_mech mech)
{
    return (unsigned)mech < SASL_MECH__COUNT ? mech_names[mech] : "?";
}

bool sasl_mech_plaintext(enum sasl_mech mech)
{
    return mech == SASL_MECH_PLAIN || mech == SASL_MECH_LOGIN;
}

void sasl_mech_list(unsigned mechs, bool plaintext_ok, char *buf, size_t cap)
{
    size_t o = 0;
    buf[0] = '\0';
    for (int m = 0; m < SASL_MECH__COUNT; m++) {
        if (!(mechs & (1u << m)) ||
            (sasl_mech_plaintext((enum sasl_mech)m) && !plaintext_ok))
            continue;
        int n = snprintf(buf + o, cap - o, "%s%s", o ? " " : "",
                         sasl_mech_name((enum sasl_mech)m));
        if (n < 0 || (size_t)n >= cap - o) {
            buf[o] = '\0';
            break;
        }
        o += (size_t)n;
    }
}
