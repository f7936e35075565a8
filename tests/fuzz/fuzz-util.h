/* What the fuzz targets of the daemon's faces share: a network namespace of their own, quiet logs */
#pragma once

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "manager.h"

/* assert() that NDEBUG does not compile out: the harness's own calls sit inside its checks. */
#define fuzz_require(expr) ((expr) ? (void) 0 : fuzz_require_failed(#expr, __FILE__, __LINE__))
_Noreturn void fuzz_require_failed(const char *expr, const char *file, int line);

/* Moves the process into a new network namespace (as root, or in a new user namespace) with
 * only lo, up, so that the binds the inputs ask for (wildcards, fixed ports) never touch the
 * host's network. Exits with 77 (a skip for meson) when no namespace can be made: fuzzing
 * binds on the host's own network is not an option. Call once, from LLVMFuzzerInitialize. */
void fuzz_enter_network_namespace(void);

/* The daemon's logs at LOG_CRIT only, unless $FUZZ_LOG_LEVEL names a level ("debug"). */
void fuzz_quiet_logs(void);

/* Reads the input front to back; past its end every read gives zeros (or ""). */
typedef struct FuzzInput {
        const uint8_t *data;
        size_t size, pos;
} FuzzInput;

uint8_t fuzz_u8(FuzzInput *in);
uint16_t fuzz_u16(FuzzInput *in);
uint32_t fuzz_u32(FuzzInput *in);
uint64_t fuzz_u64(FuzzInput *in);
/* A string of up to max bytes (length from the input), NUL-terminated, in buf[max + 1]. */
const char *fuzz_string(FuzzInput *in, char *buf, size_t max);

/* The invariants of a manager's tables: every sandbox and port valid, the counts agreeing with
 * the iterators and the lookups. Aborts on a violation; returns the number of ports. */
uint32_t fuzz_check_manager(Manager *m);

/* An Authorizer that allows everything, answering at once or, when pending is set, from the
 * loop (so the cancel paths run too). */
typedef struct FuzzAuthorizer {
        Authorizer authorizer;
        struct ev_loop *loop;
        bool pending;
        struct FuzzPending *checks;
} FuzzAuthorizer;

void fuzz_authorizer_init(FuzzAuthorizer *a, struct ev_loop *loop);

/* A GuestResolver that answers from the loop with what answer() says for the sandbox id: r (0,
 * GUEST_RESOLVE_UNKNOWN, GUEST_RESOLVE_UNAVAILABLE) and the addresses. */
typedef struct FuzzResolver {
        GuestResolver resolver;
        struct ev_loop *loop;
        int (*answer)(void *userdata, const char *sandbox_id, SockaddrUnion *guest4,
                      SockaddrUnion *guest6);
        void *userdata;
        struct FuzzPending *lookups;
} FuzzResolver;

void fuzz_resolver_init(FuzzResolver *g, struct ev_loop *loop);
/* An answer for FuzzResolver.answer, by choice: unknown, unavailable, an IPv4 address, an IPv6
 * address, or both. */
int fuzz_guest_answer(uint8_t choice, SockaddrUnion *guest4, SockaddrUnion *guest6);
/* Checks and lookups still waiting for the loop. */
unsigned fuzz_pending(const FuzzAuthorizer *a, const FuzzResolver *g);

/* For a face's target, from LLVMFuzzerInitialize: the network namespace, quiet logs, the default
 * loop (returned), and the authorizer and the resolver (answering with answer) on it. */
struct ev_loop *fuzz_setup(FuzzAuthorizer *a, FuzzResolver *g,
                           int (*answer)(void *userdata, const char *sandbox_id,
                                         SockaddrUnion *guest4, SockaddrUnion *guest6));
