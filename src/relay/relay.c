/* Helpers shared by the TCP and UDP relays */
#include "relay.h"

bool relay_target_pick(const RelayTarget *t, int family, SockaddrUnion *ret) {
        const SockaddrUnion *first = family == AF_INET6 ? &t->guest6 : &t->guest4;
        const SockaddrUnion *second = family == AF_INET6 ? &t->guest4 : &t->guest6;
        const SockaddrUnion *pick = first->sa.sa_family != AF_UNSPEC ? first : second;

        if (pick->sa.sa_family == AF_UNSPEC)
                return false;
        *ret = *pick;
        sockaddr_set_port(ret, t->port);
        return true;
}
