/* TCP relay: accept on the host, connect to the guest, splice both ways */
#pragma once

#include "relay.h"

typedef struct TcpRelay TcpRelay;

/* fds: listening TCP sockets (listen() already called, SOCK_NONBLOCK|SOCK_CLOEXEC), all of one
 * published port. On success the relay owns them and has started accepting; on failure the
 * caller still owns them. stats is updated in place and must outlive the relay. Callbacks must
 * not free the relay. */
int tcp_relay_new(TcpRelay **ret, struct ev_loop *loop, const int *fds, size_t n_fds,
                  const RelayConfig *config, RelayStats *stats, const RelayCallbacks *callbacks,
                  void *userdata);

/* Closes every listener and every connection (no callbacks are called). Accepts NULL. */
TcpRelay *tcp_relay_free(TcpRelay *r);

/* New connections go to the new target; open ones stay where they are. */
void tcp_relay_set_target(TcpRelay *r, const RelayTarget *target);

RelayState tcp_relay_get_state(const TcpRelay *r, const char **ret_reason);
