/*
 * The `estafeta serve` and `estafeta queue` subcommands. Each takes
 * (argc, argv) with argv[0] the subcommand name and returns the exit status.
 */
#ifndef ESTAFETA_ESTAFETA_SERVE_H
#define ESTAFETA_ESTAFETA_SERVE_H

/* Under data-dir while the server runs: its pid, for `estafeta queue
 * flush` (SIGUSR1). */
#define SERVE_PID_FILE "estafeta.pid"

int cmd_serve(int argc, char **argv);
int cmd_queue(int argc, char **argv);

#endif
