/*
 * cfgref: a reference-counted handle on an immutable struct config, so
 * SIGHUP can install a new configuration while sessions and the delivery
 * thread finish with the one they started with. The last cfgref_put frees
 * the configuration. Thread-safe (atomic count).
 */
#ifndef ESTAFETA_CONF_CFGREF_H
#define ESTAFETA_CONF_CFGREF_H

#include "conf/config.h"

struct cfgref {
    struct config *cfg;
    _Atomic unsigned refs;
};

/* Takes ownership of cfg; the new handle holds one reference. */
struct cfgref *cfgref_new(struct config *cfg);
struct cfgref *cfgref_get(struct cfgref *r);
void cfgref_put(struct cfgref *r);

#endif
