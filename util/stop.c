/* util/stop.c — SIGINT / SIGTERM as a request to stop at the next clean point (see stop.h). */
#include "stop.h"

#include <errno.h>
#include <signal.h>
#include <string.h>

static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig) { stop_signal = sig; }

int npt_stop_install(NptErr *err) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    /* SA_RESTART: reads and writes in flight (HDF5, stdio) go on rather than failing with
     * EINTR; SA_RESETHAND: a second signal takes the default action and ends the process */
    sa.sa_flags = SA_RESTART | SA_RESETHAND;
    const int sigs[2] = {SIGINT, SIGTERM};
    for (int i = 0; i < 2; i++)
        if (sigaction(sigs[i], &sa, NULL) != 0)
            return npt_fail(err, "cannot catch %s: %s", npt_signal_name(sigs[i]), strerror(errno));
    return 0;
}

int npt_stop_requested(void) { return stop_signal; }

const char *npt_signal_name(int sig) {
    static char other[24];
    if (sig == SIGINT) return "SIGINT";
    if (sig == SIGTERM) return "SIGTERM";
    snprintf(other, sizeof other, "signal %d", sig);
    return other;
}
