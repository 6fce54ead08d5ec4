/* cfgref: see cfgref.h for the contract. */
#include "conf/cfgref.h"

#include <stdlib.h>

#include "lib/xalloc.h"

struct cfgref *cfgref_new(struct config *cfg)
{
    struct cfgref *r = xcalloc(1, sizeof(*r));
    r->cfg = cfg;
    r->refs = 1;
    return r;
}

struct cfgref *cfgref_get(struct cfgref *r)
{
    r->refs++;
    return r;
}

void cfgref_put(struct cfgref *r)
{
    if (r == NULL)
        return;
    if (--r->refs == 0) {
        config_free(r->cfg);
        free(r);
    }
}
