/*
 * cmd_queue.c: `estafeta queue list` — what is waiting in the queue, like
 * mailq(1): id, age, size, sender, and each recipient with its state.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conf/config.h"
#include "estafeta/serve.h"
#include "lib/xalloc.h"
#include "queue/queue.h"

static void queue_usage(FILE *f)
{
    fprintf(f,
            "usage: estafeta queue list [-c FILE] [--data-dir DIR]\n"
            "\n"
            "Lists the messages in the queue with their recipients' states.\n");
}

struct queue_ids {
    char **ids;
    size_t n;
};

static void queue_collect(const char *id, void *arg)
{
    struct queue_ids *q = arg;
    q->ids = xreallocarray(q->ids, q->n + 1, sizeof(*q->ids));
    q->ids[q->n++] = xstrdup(id);
}

static int queue_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static const char *queue_state_name(enum queue_rcpt_state st)
{
    switch (st) {
    case QUEUE_RCPT_PENDING:
        return "pending";
    case QUEUE_RCPT_DONE:
        return "delivered";
    case QUEUE_RCPT_FAILED:
        return "failed";
    }
    return "?";
}

int cmd_queue(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"data-dir", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    struct config_overrides ov = {.data_dir = getenv("ESTAFETA_DATA")};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case 'd':
            ov.data_dir = optarg;
            break;
        case 'h':
            queue_usage(stdout);
            return 0;
        default:
            queue_usage(stderr);
            return 2;
        }
    }
    if (optind >= argc || strcmp(argv[optind], "list") != 0 || optind + 1 != argc) {
        queue_usage(stderr);
        return 2;
    }
    path = config_choose_path(path);
    if (ov.data_dir != NULL && ov.data_dir[0] == '\0')
        ov.data_dir = NULL;
    struct buf err;
    buf_init(&err, 4096);
    struct config *cfg = config_load(path, &ov, &err);
    if (cfg == NULL) {
        fprintf(stderr, "estafeta: %s\n", buf_cstr(&err));
        buf_free(&err);
        return 1;
    }
    char qdir[4096];
    snprintf(qdir, sizeof(qdir), "%s/queue", cfg->data_dir);
    struct queue *q = queue_fs_open(qdir, &err);
    if (q == NULL) {
        fprintf(stderr, "estafeta: queue: %s\n", buf_cstr(&err));
        buf_free(&err);
        config_free(cfg);
        return 1;
    }
    buf_free(&err);
    struct queue_ids ids = {NULL, 0};
    queue_list(q, queue_collect, &ids);
    if (ids.n > 0)
        qsort(ids.ids, ids.n, sizeof(*ids.ids), queue_cmp);
    time_t now = time(NULL);
    for (size_t i = 0; i < ids.n; i++) {
        struct queue_env *env;
        int r = queue_load(q, ids.ids[i], &env);
        if (r < 0) {
            printf("%s  (unreadable%s)\n", ids.ids[i], r == -2 ? ": corrupt" : "");
            continue;
        }
        printf("%s  %llds  %llu bytes  <%s>\n", env->id,
               (long long)(now - env->created), (unsigned long long)env->body_size,
               env->sender);
        for (size_t k = 0; k < env->nrcpts; k++)
            printf("    <%s>  %s%s%s\n", env->rcpts[k].address,
                   queue_state_name(env->rcpts[k].state),
                   env->rcpts[k].status[0] ? "  " : "", env->rcpts[k].status);
        queue_env_free(env);
    }
    printf("-- %zu message%s in queue\n", ids.n, ids.n == 1 ? "" : "s");
    for (size_t i = 0; i < ids.n; i++)
        free(ids.ids[i]);
    free(ids.ids);
    queue_close(q);
    config_free(cfg);
    return 0;
}
