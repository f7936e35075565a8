/* Polling without sleeping for a moment after the loop had work */
#pragma once

#include <ev.h>

#include "backoff.h"

/* The window portpubd uses unless told otherwise (--busy-poll=). */
#define BUSY_POLL_DEFAULT_USEC 30u
#define BUSY_POLL_MAX_USEC 1000u

typedef struct BusyPoll {
        struct ev_loop *loop;
        ev_check check;
        ev_idle idle;
        ev_tstamp window;
        ev_tstamp deadline; /* CLOCK_MONOTONIC; 0: the window starts at the next empty poll */
        Backoff backoff; /* of opening a window */
        unsigned long hits, misses; /* work found while polling / windows that ran out */
} BusyPoll;

/* After an iteration that ran callbacks, the loop polls without blocking for up to window
 * seconds instead of sleeping; see busy-poll.c. window <= 0 leaves the loop alone. */
void busy_poll_start(BusyPoll *b, struct ev_loop *loop, ev_tstamp window);
void busy_poll_stop(BusyPoll *b);
