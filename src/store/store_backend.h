/*
 * store_backend: the private function table behind store.h, and the name
 * validation every backend shares (doc/store.md "Names are validated").
 * Not for use outside src/store.
 */
#ifndef ESTAFETA_STORE_STORE_BACKEND_H
#define ESTAFETA_STORE_STORE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>

#include "store/store.h"

#define STORE_LOCAL_MAX 64
#define STORE_DOMAIN_MAX 255
#define STORE_FOLDER_MAX 200

struct store_ops {
    void (*free)(struct store *s);
    int (*deliver)(struct store *s, const char *mailbox, const char *folder,
                   const char *prefix, size_t prefix_len, store_read_fn read,
                   void *read_arg, char *uid_r, size_t uid_cap);
    int (*mailbox_path)(struct store *s, const char *mailbox, char *out,
                        size_t out_cap);
    int (*clean_tmp)(struct store *s, const char *mailbox, const char *folder,
                     long max_age);
};

struct store {
    const struct store_ops *ops;
};

/* 0 with the position of the '@' in *at_r, or -1 EINVAL. */
int store_check_mailbox(const char *mailbox, size_t *at_r);
/* 0 (with *inbox_r true for NULL or "INBOX" in any case), or -1 EINVAL. */
int store_check_folder(const char *folder, bool *inbox_r);

#endif
