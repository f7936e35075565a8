/* Small helpers every module uses: cleanup attributes, ownership transfer, fd closing */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _noinline_ __attribute__((noinline))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)

/* The struct of type around the member field at ptr. */
#define container_of(ptr, type, member) ((type *) (void *) ((char *) (ptr) -offsetof(type, member)))

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* Hand ownership on: return the pointer and leave NULL behind for the cleanup handler. */
#define TAKE_PTR(p)                                                                                \
        ({                                                                                         \
                __typeof__(p) _p = (p);                                                            \
                (p) = NULL;                                                                        \
                _p;                                                                                \
        })

#define TAKE_FD(fd)                                                                                \
        ({                                                                                         \
                int _fd = (fd);                                                                    \
                (fd) = -EBADF;                                                                     \
                _fd;                                                                               \
        })

#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)                                                    \
        static inline void func##p(type *p) {                                                      \
                if (*p)                                                                            \
                        func(*p);                                                                  \
        }

/* Frees and returns NULL, for "p->x = mfree(p->x)". */
static inline void *mfree(void *p) {
        free(p);
        return NULL;
}

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

/* Closes fd when it is valid, keeps errno, and returns -EBADF for "p->fd = safe_close(p->fd)". */
static inline int safe_close(int fd) {
        if (fd >= 0) {
                int saved = errno;
                (void) close(fd);
                errno = saved;
        }
        return -EBADF;
}

static inline void closep(int *fd) {
        safe_close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

#define USEC_PER_SEC UINT64_C(1000000)
#define USEC_PER_MSEC UINT64_C(1000)

/* A string a caller sent, in a message: at most QUOTE_MAX bytes of it (cut at a UTF-8 character
 * boundary, so that a D-Bus error can carry it), then "..." when it was longer. Use as
 * "'" QUOTE_FMT "'" with QUOTE(s): a 1 MiB argument makes no 1 MiB error or log line. */
#define QUOTE_MAX 128
#define QUOTE_FMT "%.*s%s"
#define QUOTE(s) quote_len(s), (s), (s)[quote_len(s)] ? "..." : ""

static inline int quote_len(const char *s) {
        size_t n = strnlen(s, QUOTE_MAX + 1);

        if (n <= QUOTE_MAX)
                return (int) n;
        n = QUOTE_MAX;
        while (n > 0 && ((unsigned char) s[n] & 0xC0) == 0x80)
                n--;
        return (int) n;
}
