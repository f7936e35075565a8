/* Deadlines: every timeout and window in portpubd is measured on CLOCK_MONOTONIC */
#pragma once

#include <stdint.h>
#include <time.h>

#include "macro.h"

/* Microseconds on CLOCK_MONOTONIC: never steps back when the wall clock is set. */
static inline uint64_t monotonic_usec(void) {
        struct timespec ts;

        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

/* The same in seconds, for libev's ev_tstamp arithmetic. */
static inline double monotonic_sec(void) {
        struct timespec ts;

        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}
