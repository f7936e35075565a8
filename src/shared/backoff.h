/* Exponential back-off of an optional shortcut */
#pragma once

#include <stdbool.h>

/* After each miss the next 1, 2, 4 ... max attempts skip the shortcut; a hit lets every attempt
 * try it again. Zero-initialized: no back-off. */
typedef struct Backoff {
        unsigned skip; /* attempts still to skip */
        unsigned length; /* of the last skip run */
} Backoff;

/* Whether this attempt skips the shortcut. */
static inline bool backoff_skip(Backoff *b) {
        if (b->skip == 0)
                return false;
        b->skip--;
        return true;
}

static inline void backoff_hit(Backoff *b) {
        b->length = 0;
}

static inline void backoff_miss(Backoff *b, unsigned max) {
        b->length = b->length == 0 ? 1 : 2 * b->length;
        if (b->length > max)
                b->length = max;
        b->skip = b->length;
}
