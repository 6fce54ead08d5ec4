/*
 * testlib: the file-system helpers every unit test binary that makes a
 * directory tree uses (a fresh directory under /tmp, and its removal).
 * Static inline, so a test that uses only some of them compiles without
 * warnings. The store's tests add theirs in store_testlib.h.
 */
#ifndef ESTAFETA_TESTS_TESTLIB_H
#define ESTAFETA_TESTS_TESTLIB_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/xalloc.h"

/* A new directory /tmp/estafeta-test-XXXXXX (malloc'd path), or NULL. */
static inline char *make_tmpdir(void)
{
    char tmpl[] = "/tmp/estafeta-test-XXXXXX";
    char *d = mkdtemp(tmpl);
    return d != NULL ? xstrdup(d) : NULL;
}

/* Removes path and everything under it; symbolic links are removed, never
 * followed. */
static inline void rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (d != NULL) {
            struct dirent *de;
            while ((de = readdir(d)) != NULL) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                    continue;
                char sub[4096];
                int n = snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
                if (n > 0 && (size_t)n < sizeof(sub))
                    rm_rf(sub);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

#endif
