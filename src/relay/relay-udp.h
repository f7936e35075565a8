/* UDP relay: one session per client address, a connected socket per session toward the guest */
#pragma once

#include "relay.h"

typedef struct UdpRelay UdpRelay;

/* fds: bound UDP sockets (SOCK_NONBLOCK|SOCK_CLOEXEC), all of one published port. On success the
 * relay owns them and has started receiving; on failure the caller still owns them. stats is
 * updated in place and must outlive the relay. Callbacks must not free the relay. */
int udp_relay_new(UdpRelay **ret, struct ev_loop *loop, const int *fds, size_t n_fds,
                  const RelayConfig *config, RelayStats *stats, const RelayCallbacks *callbacks,
                  void *userdata);

/* Closes every socket and session (no callbacks are called). Accepts NULL. */
UdpRelay *udp_relay_free(UdpRelay *r);

/* New sessions go to the new target; existing sessions stay where they are. */
void udp_relay_set_target(UdpRelay *r, const RelayTarget *target);

RelayState udp_relay_get_state(const UdpRelay *r, const char **ret_reason);
