/* Deadlines: every timeout and window in portpubd is measured on CLOCK_MONOTONIC */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "macro.h"

/* Microseconds on CLOCK_MONOTONIC: never steps back when the wall clock is set. */
static inline uint64_t monotonic_usec(void) {
        struct timespec ts;

        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

/* The timeout for poll() that wakes at deadline (monotonic_usec()), rounded up: waking before
 * it would only spin. 0 when it passed, -1 (no timeout) for UINT64_MAX. */
static inline int poll_timeout_ms(uint64_t deadline) {
        uint64_t now;

        if (deadline == UINT64_MAX)
                return -1;
        now = monotonic_usec();
        if (deadline <= now)
                return 0;
        return (int) MIN((deadline - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC, (uint64_t) INT32_MAX);
}

/* The same in seconds, for libev's ev_tstamp arithmetic. */
static inline double monotonic_sec(void) {
        struct timespec ts;

        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* CLOCK_MONOTONIC_COARSE in seconds: the time of the last tick (a few ms), for timestamps taken
 * so often that even the vDSO's clock read would show. */
static inline double monotonic_coarse_sec(void) {
        struct timespec ts;

        (void) clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* monotonic_sec(), read once per generation: a caller on a hot path passes a number that changes
 * whenever time may have passed that matters to its deadlines (a loop passes its iteration
 * count, which changes at every poll) and gets the first reading of that generation back. */
typedef struct MonotonicCache {
        double sec;
        unsigned generation;
        bool valid;
} MonotonicCache;

/* Out of line, so that the hit, which is most calls, needs no stack frame for the timespec. */
static _noinline_ _unused_ double monotonic_cache_refresh(MonotonicCache *c, unsigned generation) {
        c->sec = monotonic_sec();
        c->generation = generation;
        c->valid = true;
        return c->sec;
}

static inline double monotonic_sec_cached(MonotonicCache *c, unsigned generation) {
        if (_likely_(c->valid && c->generation == generation))
                return c->sec;
        return monotonic_cache_refresh(c, generation);
}
