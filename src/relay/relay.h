/* The data plane's face toward the manager: configuration, counters, state callbacks */
#pragma once

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "sockaddr-util.h"

typedef enum RelayProxyProtocol {
        RELAY_PROXY_NONE = 0,
        RELAY_PROXY_V1 = 1,
        RELAY_PROXY_V2 = 2,
} RelayProxyProtocol;

typedef enum RelayState {
        RELAY_LISTENING,
        RELAY_PAUSED, /* at MaxSessions, or out of file descriptors */
} RelayState;

/* Counters of one published port, owned by the caller and updated in place by the relay. The
 * manager reads them whenever it likes (GetAll returns live values). */
typedef struct RelayStats {
        uint64_t active; /* sessions open now */
        uint64_t total; /* sessions ever accepted (TCP: connections; UDP: client sessions) */
        uint64_t rejected; /* refused at MaxSessions or for lack of fds */
        uint64_t failed; /* guest refused, timed out, or unreachable */
        uint64_t bytes_to_guest;
        uint64_t bytes_from_guest;
} RelayStats;

typedef struct RelayCallbacks {
        /* stats->active changed (a session opened or closed). May be called often: coalesce. */
        void (*sessions_changed)(void *userdata);
        /* The relay paused or resumed; reason is "" when listening, else a short text such as
         * "MaxSessions reached" or "Too many open files". */
        void (*state_changed)(void *userdata, RelayState state, const char *reason);
} RelayCallbacks;

/* Where sessions go: the guest address of the listener's family, else the other family's.
 * Addresses with sa_family == AF_UNSPEC are absent. Port numbers inside are ignored; port is used. */
typedef struct RelayTarget {
        SockaddrUnion guest4;
        SockaddrUnion guest6;
        uint16_t port;
} RelayTarget;

typedef struct RelayConfig {
        RelayTarget target;
        uint64_t idle_timeout_usec; /* 0 = never (TCP); UDP: session idle timeout, 0 = default */
        uint32_t max_sessions; /* 0 = unlimited */
        uint64_t connect_timeout_usec; /* TCP: 0 = default 10 s */
        RelayProxyProtocol proxy_protocol;
} RelayConfig;

/* The longest idle timeout a port may have, for TCP and UDP alike: longer than a year is a typo,
 * not an intention. The relays refuse a longer one (-EINVAL) rather than clamp it, so the value a
 * port reports is the value it uses. */
#define RELAY_IDLE_TIMEOUT_MAX_USEC (366 * 24 * 3600 * UINT64_C(1000000))
#define RELAY_UDP_IDLE_TIMEOUT_DEFAULT_USEC (60 * UINT64_C(1000000))
#define RELAY_TCP_CONNECT_TIMEOUT_DEFAULT_USEC (10 * UINT64_C(1000000))

/* Picks the guest address for a listener of the given family: same family first, else the
 * other. Returns false when the target has no address at all. The result carries target->port. */
bool relay_target_pick(const RelayTarget *t, int family, SockaddrUnion *ret);
