/* util/stop.h — a stop asked for with SIGINT (Ctrl-C) or SIGTERM (a scheduler's
 * preemption), honoured at the next clean point instead of killing the process.
 *
 * A run that dies mid-step loses the steps since its last checkpoint, and one that dies
 * while tokenizing leaves its temporary files behind. Commands with long work install
 * the handler, and their loops ask npt_stop_requested() between units of work: the
 * trainer after a step (it saves a checkpoint, then exits), data preparation after a
 * block (it removes its temporary output). A second signal ends the process at once
 * (the handler is reset to the default action when it first runs). Exit status after a
 * stop: 128 + the signal number (130 for SIGINT, 143 for SIGTERM), the shell's
 * convention for a process ended by that signal. */
#ifndef NPT_STOP_H
#define NPT_STOP_H

#include "common.h"

/* Catches SIGINT and SIGTERM from now on; -1 with err set if sigaction fails. */
int npt_stop_install(NptErr *err);
/* The signal that asked for a stop (SIGINT or SIGTERM), 0 if none. */
int npt_stop_requested(void);
/* "SIGINT", "SIGTERM" (or "signal N"). */
const char *npt_signal_name(int sig);

#endif
