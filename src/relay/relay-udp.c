/* UDP relay: one session per client address, a connected socket per session toward the guest */

/*
 * Theory of operation
 * ===================
 *
 * Listeners
 *   One UdpListener per bound socket of the published port (say 127.0.0.1 and ::1). Its ev_io
 *   reads client datagrams with recvmmsg() into the shared pool (below). On a wildcard bind
 *   (0.0.0.0, ::) IP_PKTINFO / IPV6_RECVPKTINFO is on: every datagram then says which local
 *   address the client sent it to, and the replies carry that address back in an IP_PKTINFO /
 *   IPV6_PKTINFO cmsg, so they leave from the address the client talks to. Without it a
 *   multi-homed host answers from whatever address the route picks and the client drops the
 *   answer. (A :: listener takes IPv6 only: the caller sets IPV6_V6ONLY.)
 *
 * Sessions
 *   One UdpSession per client: the key is (listener, client address and port, and on wildcard
 *   listeners the local address the client sent to), normalized into a fixed-size struct
 *   (IPv4 as v4-mapped IPv6) and hashed with uthash. A session owns a socket connect()ed to
 *   the guest (relay_target_pick() by the listener's family, so a v4 listener reaches a
 *   v6-only guest). The guest sees one stable source port per client, and its replies land
 *   on the session's own socket: they map to their client without a lookup.
 *
 *   A session is OPEN (in the table and the LRU list, its watcher running) or DEAD (fd closed,
 *   unlinked, on the relay's dead list). It dies of idleness, of an unreachable guest (an
 *   ICMP error makes send/recv on the connected socket fail with ECONNREFUSED and the like:
 *   stats->failed++), or with the relay. Dead sessions are freed at the end of the event
 *   handler that killed them, never inside their own callback chain, so a batch that still
 *   points at one stays valid.
 *
 * Expiry
 *   Idle time counts from the last datagram in either direction. Open sessions sit in an
 *   LRU list ordered by last activity: traffic moves a session to the tail (O(1), skipped when
 *   the clock did not move), so the head always expires first. One ev_timer per relay is armed
 *   for the head's deadline plus a little slack (to coalesce wakeups); when it fires it closes
 *   every expired head and re-arms for the new one. Traffic never touches the timer.
 *   Timestamps come from CLOCK_MONOTONIC_COARSE, read once per event handler: as cheap as
 *   ev_now(), which follows the wall clock and would expire everything (or nothing) when the
 *   clock is set.
 *
 * Limits
 *   MaxSessions: a datagram from an unknown client while the relay holds max_sessions sessions
 *   is dropped and counted in stats->rejected. Every refused datagram counts, since UDP has no
 *   handshake: each datagram of a new client is one more attempt to open a session. Existing
 *   sessions are untouched and the listeners keep reading. Like the TCP relay, the relay
 *   reports RELAY_PAUSED "MaxSessions reached" while it is at the cap, RELAY_LISTENING once a
 *   session ends.
 *   Out of file descriptors (the session socket fails with EMFILE/ENFILE): the datagram is
 *   dropped and counted the same way, the relay reports RELAY_PAUSED "Too many open files"
 *   until it creates a session again or one of its sessions ends. Nothing spins: the refused
 *   datagram has been read. Logs about refused datagrams are rate-limited.
 *   A new client whose session cannot even be opened toward the guest (no guest address of
 *   any family, no route to it) has its datagram dropped and counted in stats->failed.
 *   Sends that would block drop the datagram, as a congested network would: nothing is queued
 *   beyond the kernel's socket buffers.
 *
 * Pool and batching
 *   All relays of the process share one pool of UDP_BATCH slots of 64 KiB, so that any
 *   datagram (65507 bytes over IPv4, 65527 over IPv6) arrives whole. It is allocated with the
 *   first relay and freed with the last; a slot's pages become resident only as far as
 *   datagrams reach, so small traffic keeps about UDP_BATCH pages. Every event handler reads
 *   into the pool and sends everything out again before it returns: nothing stays there.
 *   Client to guest: one recvmmsg() reads up to UDP_BATCH datagrams of a listener; each run of
 *   consecutive datagrams of one client goes out in one call on its session's socket.
 *   Guest to client: a session's recvmmsg() reads its replies, which go back in one call on
 *   the listener, to the client's address and with its pktinfo. Replies are not held back to
 *   be batched with other sessions' replies: on request/response traffic the latency costs
 *   more than the system calls it saves.
 *   "One call": a run of datagrams of equal size (the last may be shorter) leaves as a single
 *   UDP GSO send (UDP_SEGMENT), one trip through the stack for up to 64 datagrams that the
 *   receiving socket or device cuts apart again; anything else leaves with sendmmsg(). A path
 *   that refuses GSO (no checksum offload, datagrams above its MTU) is remembered per session
 *   and direction and gets sendmmsg() from then on.
 *   The pool has no lock: all relays must run on one thread (portpubd has only one).
 *
 * Polled mode
 *   Under a flood a wakeup per few datagrams costs more than the datagrams: every datagram
 *   queued on a socket that epoll watches runs the wakeup path on the sender's CPU, and every
 *   short burst the relay sends wakes the receiver again. So a socket (listener or session)
 *   whose wakeup finds UDP_POLL_ENTER datagrams or more waiting leaves epoll and is polled
 *   instead: a one-shot timerfd per relay fires UDP_POLL_INTERVAL_USEC after the last poll
 *   ended, and each poll drains every polled socket of the relay (at most UDP_POLL_ROUNDS
 *   batches each). A poll that finds a socket empty hands it back to epoll. This is the
 *   interrupt moderation of network cards: under load a datagram may wait up to one interval
 *   longer, and the work comes in bursts of hundreds of datagrams on both sides. Request and
 *   response traffic never queues that many datagrams and never sees the difference. The
 *   timerfd is made the first time a socket of the relay floods; without it (out of fds) the
 *   relay keeps to wakeups. Listeners get a larger receive buffer (UDP_LISTENER_RCVBUF, as far
 *   as net.core.rmem_max allows) so that an interval's worth of datagrams fits.
 */

#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

/* Running out of memory while adding a session must drop that session, not exit(). */
#define HASH_NONFATAL_OOM 1
#include <uthash.h>
#include <utlist.h>

#include "log.h"
#include "macro.h"
#include "relay-udp.h"
#include "time-util.h"

/* Datagrams per recvmmsg()/sendmmsg(), and slots in the pool. */
#define UDP_BATCH 64U
#define UDP_SLOT_SIZE 65536U
/* Slots start at different offsets modulo 4 KiB, so their first cache lines do not all compete
 * for the same few cache sets. */
#define UDP_SLOT_STRIDE (UDP_SLOT_SIZE + 64U)
/* recvmmsg() calls per wakeup of one socket, so one busy client cannot starve the others. */
#define UDP_RX_ROUNDS 4
/* Polled mode (see above): datagrams that one wakeup must find to switch a socket to polling,
 * the time between polls, and recvmmsg() calls per socket and poll. */
#define UDP_POLL_ENTER 32U
#define UDP_POLL_INTERVAL_USEC 100
#define UDP_POLL_ROUNDS 16
/* Receive buffer asked for on listeners; the kernel doubles it and caps it at
 * net.core.rmem_max. */
#define UDP_LISTENER_RCVBUF (1024 * 1024)
#define UDP_LOG_INTERVAL 1.0
/* Limits of one UDP GSO send: the kernel's segment cap (UDP_MAX_SEGMENTS) and one IP packet. */
#define UDP_GSO_MAX_SEGMENTS 64U
#define UDP_GSO_MAX_BYTES 65000U

typedef union UdpAddr {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
} UdpAddr;

typedef struct UdpControl {
        _Alignas(struct cmsghdr) uint8_t buf[CMSG_SPACE(sizeof(struct in6_pktinfo))]; /* in_pktinfo is smaller */
} UdpControl;

/* Hashed as raw bytes: always built from a zeroed struct, and there is no padding. */
typedef struct UdpSessionKey {
        struct in6_addr client; /* IPv4 as ::ffff:a.b.c.d */
        struct in6_addr local; /* where the client sent to; wildcard listeners only */
        uint32_t scope_id;
        uint16_t port; /* network byte order */
        uint16_t listener;
} UdpSessionKey;

/* The read side of a socket, listener or session: its watcher, or its place among the polled
 * sockets of the relay (see "Polled mode"). */
typedef struct UdpReader UdpReader;
struct UdpReader {
        ev_io io;
        UdpRelay *relay;
        /* Reads up to rounds batches and forwards them; returns the number of datagrams read. */
        unsigned (*read)(UdpReader *r, int rounds, ev_tstamp now);
        UdpReader **poll_list; /* the list it is on while polled, else NULL */
        UdpReader *poll_prev, *poll_next;
        bool closed;
};

typedef struct UdpListener {
        UdpRelay *relay;
        UdpReader reader;
        int fd;
        int family;
        uint16_t index;
        bool pktinfo;
} UdpListener;

typedef struct UdpSession UdpSession;
struct UdpSession {
        UdpSessionKey key;
        UT_hash_handle hh;
        UdpRelay *relay;
        UdpListener *listener;
        UdpReader reader;
        int fd;
        ev_tstamp last_activity;
        UdpSession *lru_prev, *lru_next; /* lru_next also links the dead list */
        UdpAddr client;
        socklen_t client_len;
        socklen_t control_len; /* 0: the reply needs no pktinfo */
        UdpControl control;
        /* UDP GSO still worth trying on the way to the guest / back to the client */
        bool gso_forward, gso_reply;
};

struct UdpRelay {
        struct ev_loop *loop;
        RelayTarget target;
        ev_tstamp idle_timeout;
        ev_tstamp expiry_slack;
        uint32_t max_sessions;
        RelayStats *stats;
        RelayCallbacks callbacks;
        void *userdata;

        UdpListener *listeners;
        size_t n_listeners;

        UdpSession *sessions; /* hash table */
        UdpSession *lru; /* open sessions, least recently active first */
        UdpSession *dead; /* closed, freed by relay_dispatch() */
        uint64_t n_sessions;

        ev_timer expiry;
        bool pool_ref;

        /* Polled mode: the sockets polled on the next tick, and those of the tick under way */
        UdpReader *polled, *polling;
        ev_io poll_io; /* on poll_fd, a timerfd made when first needed */
        int poll_fd;
        bool poll_armed;

        bool out_of_fds;
        bool sessions_changed;
        RelayState state;
        const char *reason;
        RelayState reported_state;
        const char *reported_reason;
        ev_tstamp log_next;
        char name[SOCKADDR_STR_MAX];
};

typedef struct UdpPool {
        unsigned n_users;
        uint8_t *data; /* UDP_BATCH slots, UDP_SLOT_STRIDE apart */
        struct mmsghdr msg[UDP_BATCH];
        struct iovec iov[UDP_BATCH];
        UdpAddr name[UDP_BATCH];
        UdpControl control[UDP_BATCH];
        unsigned all[UDP_BATCH]; /* 0, 1, 2...: every slot, in order */
        unsigned run[UDP_BATCH]; /* slots of client datagrams on their way to one session */
        struct mmsghdr out[UDP_BATCH];
        struct iovec gso_iov[UDP_BATCH];
} UdpPool;

static UdpPool *pool;

DEFINE_TRIVIAL_CLEANUP_FUNC(UdpRelay *, udp_relay_free);

static const char reason_max_sessions[] = "MaxSessions reached";
static const char reason_no_fds[] = "Too many open files";

/* Puts slots [first, first + n) back into the state recvmmsg() wants: room for a whole datagram,
 * an address and a pktinfo cmsg, whichever socket reads into them. The pointers never change. */
static void pool_reset(unsigned first, unsigned n) {
        for (unsigned i = first; i < first + n; i++) {
                pool->iov[i].iov_len = UDP_SLOT_SIZE;
                pool->msg[i].msg_hdr.msg_namelen = sizeof(pool->name[i]);
                pool->msg[i].msg_hdr.msg_controllen = sizeof(pool->control[i]);
        }
}

static int pool_ref(void) {
        if (!pool) {
                _cleanup_free_ UdpPool *p = calloc(1, sizeof *p);
                if (!p)
                        return -ENOMEM;
                /* malloc, not calloc: untouched slot pages must stay non-resident. */
                p->data = malloc((size_t) UDP_BATCH * UDP_SLOT_STRIDE);
                if (!p->data)
                        return -ENOMEM;
                for (unsigned i = 0; i < UDP_BATCH; i++) {
                        p->iov[i].iov_base = p->data + (size_t) i * UDP_SLOT_STRIDE;
                        p->msg[i].msg_hdr = (struct msghdr){
                                .msg_name = &p->name[i],
                                .msg_iov = &p->iov[i],
                                .msg_iovlen = 1,
                                .msg_control = p->control[i].buf,
                        };
                        p->all[i] = i;
                }
                pool = TAKE_PTR(p);
                pool_reset(0, UDP_BATCH);
        }
        /* cppcheck does not see TAKE_PTR() set pool above. */
        // cppcheck-suppress nullPointerRedundantCheck
        pool->n_users++;
        return 0;
}

static void pool_unref(void) {
        if (!pool || --pool->n_users > 0)
                return;
        free(pool->data);
        free(pool);
        pool = NULL;
}

static const char *udp_addr_format(const UdpAddr *a, char buf[static SOCKADDR_STR_MAX]) {
        SockaddrUnion u = {};

        /* Copied: the pool's addresses are not aligned for a SockaddrUnion. */
        memcpy(&u, a, a->sa.sa_family == AF_INET ? sizeof a->in : sizeof a->in6);
        return sockaddr_format(&u, buf, SOCKADDR_STR_MAX);
}

static bool relay_log_allowed(UdpRelay *relay, ev_tstamp now) {
        if (log_get_max_level() < LOG_DEBUG || now < relay->log_next)
                return false;
        relay->log_next = now + UDP_LOG_INTERVAL;
        return true;
}

static void relay_update_state(UdpRelay *relay) {
        if (relay->max_sessions > 0 && relay->n_sessions >= relay->max_sessions) {
                relay->state = RELAY_PAUSED;
                relay->reason = reason_max_sessions;
        } else if (relay->out_of_fds) {
                relay->state = RELAY_PAUSED;
                relay->reason = reason_no_fds;
        } else {
                relay->state = RELAY_LISTENING;
                relay->reason = "";
        }
}

/* Runs at the end of every event handler: frees what died during it, then tells the owner,
 * once, what changed. */
static void relay_dispatch(UdpRelay *relay) {
        UdpSession *s;

        while ((s = relay->dead)) {
                relay->dead = s->lru_next;
                free(s);
        }

        if (relay->sessions_changed) {
                relay->sessions_changed = false;
                if (relay->callbacks.sessions_changed)
                        relay->callbacks.sessions_changed(relay->userdata);
        }

        if (relay->state != relay->reported_state || relay->reason != relay->reported_reason) {
                relay->reported_state = relay->state;
                relay->reported_reason = relay->reason;
                if (relay->callbacks.state_changed)
                        relay->callbacks.state_changed(relay->userdata, relay->state, relay->reason);
        }
}

static void relay_expiry_arm(UdpRelay *relay, ev_tstamp now) {
        ev_tstamp after;

        ev_timer_stop(relay->loop, &relay->expiry);
        if (!relay->lru)
                return;

        after = relay->lru->last_activity + relay->idle_timeout - now + relay->expiry_slack;
        ev_timer_set(&relay->expiry, MAX(after, 0.), 0.);
        ev_timer_start(relay->loop, &relay->expiry);
}

static void reader_io_cb(struct ev_loop *loop, ev_io *w, int revents);

static void reader_init(UdpReader *r, UdpRelay *relay, int fd,
                        unsigned (*read)(UdpReader *r, int rounds, ev_tstamp now)) {
        ev_io_init(&r->io, reader_io_cb, fd, EV_READ);
        r->relay = relay;
        r->read = read;
        ev_io_start(relay->loop, &r->io);
}

static void reader_stop(UdpReader *r) {
        r->closed = true;
        ev_io_stop(r->relay->loop, &r->io);
        if (r->poll_list) {
                DL_DELETE2(*r->poll_list, r, poll_prev, poll_next);
                r->poll_list = NULL;
        }
}

static void session_close(UdpSession *s) {
        UdpRelay *relay = s->relay;

        reader_stop(&s->reader);
        s->fd = safe_close(s->fd);
        HASH_DELETE(hh, relay->sessions, s);
        DL_DELETE2(relay->lru, s, lru_prev, lru_next);
        LL_PREPEND2(relay->dead, s, lru_next);

        relay->n_sessions--;
        relay->stats->active--;
        relay->sessions_changed = true;
        /* An fd was just freed: the next new client may well get a session. */
        relay->out_of_fds = false;
        relay_update_state(relay);
}

/* The errors an ICMP message leaves on a connected UDP socket: the guest is gone. */
static bool errno_is_unreachable(int error) {
        switch (error) {
        case ECONNREFUSED:
        case EHOSTUNREACH:
        case ENETUNREACH:
        case EHOSTDOWN:
        case ENETDOWN:
        case ENONET:
        case EPROTO:
                return true;
        default:
                return false;
        }
}

/* UDP GSO does not work on this path: no checksum offload (EIO), datagrams above the MTU
 * (EINVAL, EMSGSIZE), a kernel without it (ENOPROTOOPT, EOPNOTSUPP). */
static bool errno_is_gso_refused(int error) {
        return error == EINVAL || error == EIO || error == EMSGSIZE || error == ENOPROTOOPT ||
               error == EOPNOTSUPP;
}

/* Nothing to do now; the watcher calls again when there is. */
static bool errno_is_transient(int error) {
        return error == EAGAIN || error == EINTR || error == ENOMEM || error == ENOBUFS;
}

static void session_fail(UdpSession *s, int error, ev_tstamp now) {
        UdpRelay *relay = s->relay;

        relay->stats->failed++;
        if (relay_log_allowed(relay, now)) {
                char client[SOCKADDR_STR_MAX];

                log_debug_errno(error, "UDP %s: guest unreachable for client %s, closing session: %m",
                                relay->name, udp_addr_format(&s->client, client));
        }
        session_close(s);
}

static void session_touch(UdpSession *s, ev_tstamp now) {
        UdpRelay *relay = s->relay;

        /* Sessions with equal timestamps may sit in any order: skipping keeps the list sorted. */
        if (s->last_activity == now)
                return;
        s->last_activity = now;
        if (s->lru_next) {
                DL_DELETE2(relay->lru, s, lru_prev, lru_next);
                DL_APPEND2(relay->lru, s, lru_prev, lru_next);
        }
}

/* Where a run of datagrams goes: a connected socket, or a listener with the client's address and
 * the pktinfo that picks the reply's source. */
typedef struct UdpDest {
        int fd;
        const UdpAddr *name; /* NULL on a connected socket */
        socklen_t name_len;
        const UdpControl *control;
        socklen_t control_len;
        bool *gso; /* cleared when the path refuses UDP GSO */
} UdpDest;

static size_t slot_len(unsigned slot) {
        return pool->msg[slot].msg_len;
}

/* End of the run of datagrams from slot[i] on that can leave as one UDP GSO send: same size,
 * the last one possibly shorter. i + 1 when there is none. */
static unsigned gso_run_end(const unsigned *slot, unsigned i, unsigned n) {
        size_t size = slot_len(slot[i]), total = size;
        unsigned j = i + 1;

        if (size == 0)
                return j;
        while (j < n && j - i < UDP_GSO_MAX_SEGMENTS && slot_len(slot[j]) == size &&
               total + size <= UDP_GSO_MAX_BYTES) {
                total += size;
                j++;
        }
        if (j < n && j - i < UDP_GSO_MAX_SEGMENTS && slot_len(slot[j]) > 0 &&
            slot_len(slot[j]) < size && total + slot_len(slot[j]) <= UDP_GSO_MAX_BYTES)
                j++;
        return j;
}

/* One sendmsg() carrying n datagrams as one packet through the stack, cut back into datagrams
 * at the receiving socket or the device. Returns the bytes sent or -errno. */
static ssize_t udp_send_gso(const UdpDest *d, const unsigned *slot, unsigned n) {
        struct {
                _Alignas(struct cmsghdr) uint8_t buf[sizeof(UdpControl) + CMSG_SPACE(sizeof(uint16_t))];
        } control = {};
        uint16_t gso_size = (uint16_t) slot_len(slot[0]);
        struct msghdr h = {
                .msg_name = (void *) d->name,
                .msg_namelen = d->name_len,
                .msg_iov = pool->gso_iov,
                .msg_iovlen = n,
                .msg_control = control.buf,
                .msg_controllen = d->control_len + CMSG_SPACE(sizeof gso_size),
        };
        struct cmsghdr *c;
        ssize_t k;

        for (unsigned i = 0; i < n; i++)
                pool->gso_iov[i] = pool->iov[slot[i]];

        /* The pktinfo first, if any, then the segment size. */
        c = CMSG_FIRSTHDR(&h);
        if (d->control_len > 0) {
                memcpy(control.buf, d->control->buf, d->control_len);
                c = CMSG_NXTHDR(&h, c);
        }
        if (!c) /* cannot be: the buffer has room for both */
                return -EINVAL;
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof gso_size);
        memcpy(CMSG_DATA(c), &gso_size, sizeof gso_size);

        k = sendmsg(d->fd, &h, MSG_DONTWAIT);
        return k < 0 ? -errno : k;
}

/* Sends n datagrams one by one, in as few sendmmsg() calls as the socket allows. Returns the bytes
 * sent, or -errno if the destination reported itself unreachable. */
static int64_t udp_send_each(const UdpDest *d, const unsigned *slot, unsigned n) {
        int64_t bytes = 0;
        unsigned i = 0;

        for (unsigned k = 0; k < n; k++)
                pool->out[k].msg_hdr = (struct msghdr){
                        .msg_name = (void *) d->name,
                        .msg_namelen = d->name_len,
                        .msg_iov = &pool->iov[slot[k]],
                        .msg_iovlen = 1,
                        .msg_control = d->control_len > 0 ? (void *) d->control->buf : NULL,
                        .msg_controllen = d->control_len,
                };

        while (i < n) {
                int k = sendmmsg(d->fd, pool->out + i, n - i, MSG_DONTWAIT);
                if (k < 0) {
                        /* A full socket buffer drops the rest, as a congested network would. */
                        if (errno == EAGAIN || errno == ENOBUFS || errno == EINTR)
                                break;
                        if (errno_is_unreachable(errno))
                                return -errno;
                        i++; /* only this one cannot go (EMSGSIZE: a v6 jumbo toward a v4 guest) */
                        continue;
                }
                for (unsigned j = i; j < i + (unsigned) k; j++)
                        bytes += pool->out[j].msg_len;
                i += (unsigned) k;
        }
        return bytes;
}

/* Sends the datagrams in the given slots, in order, to d: runs of equal size as one UDP GSO send
 * each while the path takes them, the rest with sendmmsg(). Datagrams that would block are
 * dropped. Returns the bytes sent, or -errno if the destination reported itself unreachable. */
static int64_t udp_send(const UdpDest *d, const unsigned *slot, unsigned n) {
        int64_t bytes = 0, r;
        unsigned i = 0;

        while (i < n) {
                unsigned end = *d->gso ? gso_run_end(slot, i, n) : i + 1;

                if (end - i >= 2) {
                        ssize_t k = udp_send_gso(d, slot + i, end - i);
                        if (k >= 0) {
                                bytes += k;
                                i = end;
                                continue;
                        }
                        if (k == -EAGAIN || k == -ENOBUFS || k == -EINTR)
                                return bytes;
                        if (errno_is_unreachable((int) -k))
                                return k;
                        if (!errno_is_gso_refused((int) -k)) {
                                i = end; /* dropped, like each of them would be (EPERM: a firewall) */
                                continue;
                        }
                        /* No GSO on this path: one by one from now on. */
                        *d->gso = false;
                } else
                        /* Gather the datagrams up to where the next GSO run starts. */
                        while (end < n && (!*d->gso || gso_run_end(slot, end, n) - end < 2))
                                end++;

                r = udp_send_each(d, slot + i, end - i);
                if (r < 0)
                        return r;
                bytes += r;
                i = end;
        }
        return bytes;
}

static unsigned session_read(UdpReader *reader, int rounds, ev_tstamp now) {
        UdpSession *s = container_of(reader, UdpSession, reader);
        UdpRelay *relay = s->relay;
        UdpDest d = {
                .fd = s->listener->fd,
                .name = &s->client,
                .name_len = s->client_len,
                .control = &s->control,
                .control_len = s->control_len,
                .gso = &s->gso_reply,
        };
        unsigned total = 0;

        for (int round = 0; round < rounds; round++) {
                int64_t r;
                int k;

                k = recvmmsg(s->fd, pool->msg, UDP_BATCH, MSG_DONTWAIT, NULL);
                if (k < 0) {
                        if (!errno_is_transient(errno))
                                session_fail(s, errno, now);
                        break;
                }
                if (k == 0)
                        break;

                total += (unsigned) k;
                session_touch(s, now);
                for (int i = 0; i < k; i++)
                        pool->iov[i].iov_len = pool->msg[i].msg_len;
                /* Straight back, not batched with other sessions' replies: on a request/response
                 * pattern the latency this saves is worth more than the syscalls. */
                r = udp_send(&d, pool->all, (unsigned) k);
                if (r > 0)
                        relay->stats->bytes_from_guest += (uint64_t) r;
                pool_reset(0, (unsigned) k);

                /* A short batch means the queue is empty: save the recvmmsg() that says EAGAIN. */
                if ((unsigned) k < UDP_BATCH)
                        break;
        }
        return total;
}

static void addr_map_v4(struct in6_addr *ret, struct in_addr a) {
        *ret = (struct in6_addr){};
        ret->s6_addr[10] = 0xff;
        ret->s6_addr[11] = 0xff;
        memcpy(&ret->s6_addr[12], &a, sizeof a);
}

/* Builds the session key of a received datagram; for wildcard listeners also returns the
 * interface it came in on (needed to answer from a link-local address). */
static int session_key_make(const UdpListener *l, struct msghdr *h, UdpSessionKey *ret,
                            unsigned *ret_ifindex) {
        const UdpAddr *a = h->msg_name;
        UdpSessionKey key = { .listener = l->index };
        unsigned ifindex = 0;

        if (a->sa.sa_family == AF_INET && h->msg_namelen >= sizeof(struct sockaddr_in)) {
                addr_map_v4(&key.client, a->in.sin_addr);
                key.port = a->in.sin_port;
        } else if (a->sa.sa_family == AF_INET6 && h->msg_namelen >= sizeof(struct sockaddr_in6)) {
                key.client = a->in6.sin6_addr;
                key.scope_id = a->in6.sin6_scope_id;
                key.port = a->in6.sin6_port;
        } else
                return -EAFNOSUPPORT;

        if (l->pktinfo)
                for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
                        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO &&
                            c->cmsg_len >= CMSG_LEN(sizeof(struct in_pktinfo))) {
                                struct in_pktinfo pi;

                                memcpy(&pi, CMSG_DATA(c), sizeof pi);
                                /* The local address to answer from: the destination for unicast,
                                 * the interface's address for broadcast. */
                                addr_map_v4(&key.local, pi.ipi_spec_dst);
                        } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO &&
                                   c->cmsg_len >= CMSG_LEN(sizeof(struct in6_pktinfo))) {
                                struct in6_pktinfo pi;

                                memcpy(&pi, CMSG_DATA(c), sizeof pi);
                                key.local = pi.ipi6_addr;
                                ifindex = pi.ipi6_ifindex;
                        }
                }

        *ret = key;
        *ret_ifindex = ifindex;
        return 0;
}

/* The cmsg that makes a reply leave from the address the client sent to. */
static void session_set_reply_source(UdpSession *s, unsigned ifindex) {
        struct msghdr h = { .msg_control = s->control.buf, .msg_controllen = sizeof s->control };
        struct cmsghdr *c = CMSG_FIRSTHDR(&h);
        const struct in6_addr *local = &s->key.local;

        if (IN6_IS_ADDR_UNSPECIFIED(local)) /* no pktinfo came: let the kernel pick */
                return;

        if (s->listener->family == AF_INET) {
                struct in_pktinfo pi = {};

                memcpy(&pi.ipi_spec_dst, &local->s6_addr[12], sizeof pi.ipi_spec_dst);
                c->cmsg_level = IPPROTO_IP;
                c->cmsg_type = IP_PKTINFO;
                c->cmsg_len = CMSG_LEN(sizeof pi);
                memcpy(CMSG_DATA(c), &pi, sizeof pi);
                s->control_len = CMSG_SPACE(sizeof pi);
        } else {
                struct in6_pktinfo pi = {};

                /* A multicast destination cannot be a source: the kernel picks one then. The
                 * interface matters for link-local and multicast only; elsewhere the route
                 * decides, as for any other packet. */
                if (IN6_IS_ADDR_MULTICAST(local))
                        pi.ipi6_ifindex = ifindex;
                else {
                        pi.ipi6_addr = *local;
                        if (IN6_IS_ADDR_LINKLOCAL(local))
                                pi.ipi6_ifindex = ifindex;
                }
                c->cmsg_level = IPPROTO_IPV6;
                c->cmsg_type = IPV6_PKTINFO;
                c->cmsg_len = CMSG_LEN(sizeof pi);
                memcpy(CMSG_DATA(c), &pi, sizeof pi);
                s->control_len = CMSG_SPACE(sizeof pi);
        }
}

static int session_new(UdpListener *l, const UdpSessionKey *key, const UdpAddr *client,
                       unsigned ifindex, ev_tstamp now, UdpSession **ret) {
        UdpRelay *relay = l->relay;
        _cleanup_free_ UdpSession *s = NULL;
        _cleanup_close_ int fd = -EBADF;
        SockaddrUnion target;

        if (!relay_target_pick(&relay->target, l->family, &target))
                return -EDESTADDRREQ;

        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;

        fd = socket(target.sa.sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        /* Connected: the guest's replies arrive here and nowhere else, ICMP errors surface as
         * errors on this socket, and the kernel does the routing once, not per datagram. */
        if (connect(fd, &target.sa, sockaddr_len(&target)) < 0)
                return -errno;

        s->key = *key;
        s->relay = relay;
        s->listener = l;
        s->client_len = client->sa.sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                                        : sizeof(struct sockaddr_in6);
        s->gso_forward = s->gso_reply = true;
        memcpy(&s->client, client, s->client_len);
        if (l->pktinfo)
                session_set_reply_source(s, ifindex);

        HASH_ADD(hh, relay->sessions, key, sizeof s->key, s);
        if (!s->hh.tbl) /* uthash could not grow its table */
                return -ENOMEM;

        s->fd = TAKE_FD(fd);
        reader_init(&s->reader, relay, s->fd, session_read);
        s->last_activity = now;
        DL_APPEND2(relay->lru, s, lru_prev, lru_next);

        relay->n_sessions++;
        relay->stats->total++;
        relay->stats->active++;
        relay->sessions_changed = true;
        relay->out_of_fds = false;
        relay_update_state(relay);
        if (!ev_is_active(&relay->expiry))
                relay_expiry_arm(relay, now);

        *ret = TAKE_PTR(s);
        return 0;
}

/* The session of a received datagram: found, created, or NULL when the client is refused
 * (counted here). */
static UdpSession *session_get(UdpListener *l, const UdpSessionKey *key, const UdpAddr *client,
                               unsigned ifindex, ev_tstamp now) {
        UdpRelay *relay = l->relay;
        UdpSession *s;
        int r;

        HASH_FIND(hh, relay->sessions, key, sizeof *key, s);
        if (s) {
                session_touch(s, now);
                return s;
        }

        if (relay->max_sessions > 0 && relay->n_sessions >= relay->max_sessions)
                r = -EUSERS;
        else {
                r = session_new(l, key, client, ifindex, now, &s);
                if (r >= 0)
                        return s;
        }

        switch (r) {
        case -EUSERS:
        case -EMFILE:
        case -ENFILE:
        case -ENOMEM:
        case -ENOBUFS:
                relay->stats->rejected++;
                if (r == -EMFILE || r == -ENFILE) {
                        relay->out_of_fds = true;
                        relay_update_state(relay);
                }
                break;
        default:
                /* No guest address of any family, or the guest cannot be routed to. */
                relay->stats->failed++;
        }

        if (relay_log_allowed(relay, now)) {
                char a[SOCKADDR_STR_MAX];

                udp_addr_format(client, a);
                if (r == -EUSERS)
                        log_debug("UDP %s: MaxSessions (%" PRIu32
                                  ") reached, dropping datagram of new client %s",
                                  relay->name, relay->max_sessions, a);
                else
                        log_debug_errno(
                                r,
                                "UDP %s: cannot open a session for client %s, dropping datagram: %m",
                                relay->name, a);
        }
        return NULL;
}

/* Sends a run of datagrams of one client to the guest. */
static void session_forward(UdpSession *s, const unsigned *slot, unsigned n, ev_tstamp now) {
        UdpDest d = { .fd = s->fd, .gso = &s->gso_forward };
        int64_t r;

        r = udp_send(&d, slot, n);
        if (r < 0)
                session_fail(s, (int) -r, now);
        else
                s->relay->stats->bytes_to_guest += (uint64_t) r;
}

/* Hands the client datagrams in slots [0, n) to their sessions, a run of datagrams of the same
 * client at a time. */
static void listener_forward(UdpListener *l, unsigned n, ev_tstamp now) {
        UdpSession *cur = NULL;
        unsigned n_run = 0;

        for (unsigned i = 0; i < n; i++) {
                struct msghdr *h = &pool->msg[i].msg_hdr;
                UdpSessionKey key;
                unsigned ifindex;

                if (_unlikely_(h->msg_flags & MSG_TRUNC)) /* cannot happen: a slot holds any datagram */
                        continue;
                if (session_key_make(l, h, &key, &ifindex) < 0)
                        continue;

                if (!cur || memcmp(&key, &cur->key, sizeof key) != 0) {
                        if (cur && n_run > 0)
                                session_forward(cur, pool->run, n_run, now);
                        n_run = 0;
                        cur = session_get(l, &key, h->msg_name, ifindex, now);
                        if (!cur)
                                continue;
                }

                pool->iov[i].iov_len = pool->msg[i].msg_len;
                pool->run[n_run++] = i;
        }
        if (cur && n_run > 0)
                session_forward(cur, pool->run, n_run, now);
}

static unsigned listener_read(UdpReader *reader, int rounds, ev_tstamp now) {
        UdpListener *l = container_of(reader, UdpListener, reader);
        UdpRelay *relay = l->relay;
        unsigned total = 0;

        for (int round = 0; round < rounds; round++) {
                int k;

                k = recvmmsg(l->fd, pool->msg, UDP_BATCH, MSG_DONTWAIT, NULL);
                if (k < 0) {
                        if (!errno_is_transient(errno) && relay_log_allowed(relay, now))
                                log_debug_errno(errno, "UDP %s: failed to receive, ignoring: %m",
                                                relay->name);
                        break;
                }

                listener_forward(l, (unsigned) k, now);
                pool_reset(0, (unsigned) k);
                total += (unsigned) k;
                if ((unsigned) k < UDP_BATCH)
                        break;
        }
        return total;
}

static void relay_poll_arm(UdpRelay *relay) {
        struct itimerspec its = { .it_value.tv_nsec = UDP_POLL_INTERVAL_USEC * 1000L };

        if (relay->poll_armed)
                return;
        /* Cannot fail on a timerfd of ours with a valid time. */
        (void) timerfd_settime(relay->poll_fd, 0, &its, NULL);
        relay->poll_armed = true;
}

/* Moves a socket from its watcher to polling, if the relay has its timerfd or can make it. */
static void reader_poll(UdpReader *r, ev_tstamp now) {
        UdpRelay *relay = r->relay;

        if (relay->poll_fd < 0) {
                relay->poll_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
                if (relay->poll_fd < 0) {
                        if (relay_log_allowed(relay, now))
                                log_debug_errno(errno,
                                                "UDP %s: cannot make a timerfd, not polling: %m",
                                                relay->name);
                        return;
                }
                ev_io_set(&relay->poll_io, relay->poll_fd, EV_READ);
                ev_io_start(relay->loop, &relay->poll_io);
        }

        ev_io_stop(relay->loop, &r->io);
        DL_APPEND2(relay->polled, r, poll_prev, poll_next);
        r->poll_list = &relay->polled;
        relay_poll_arm(relay);
}

static void reader_io_cb(struct ev_loop *loop, ev_io *w, int revents) {
        UdpReader *r = container_of(w, UdpReader, io);
        UdpRelay *relay = r->relay;
        ev_tstamp now = monotonic_coarse_sec();

        if (r->read(r, UDP_RX_ROUNDS, now) >= UDP_POLL_ENTER && !r->closed)
                reader_poll(r, now);

        relay_dispatch(relay);
}

static void relay_poll_cb(struct ev_loop *loop, ev_io *w, int revents) {
        UdpRelay *relay = w->data;
        ev_tstamp now = monotonic_coarse_sec();
        uint64_t expirations;
        UdpReader *r;
        unsigned n;

        if (read(relay->poll_fd, &expirations, sizeof expirations) < 0)
                return; /* EAGAIN: not expired after all */
        relay->poll_armed = false;

        /* Every socket once, also when reading one closes another (a session whose guest
         * answered with an ICMP error): whatever is closed leaves the list it is on. */
        relay->polling = relay->polled;
        relay->polled = NULL;
        for (UdpReader *p = relay->polling; p; p = p->poll_next)
                p->poll_list = &relay->polling;
        while ((r = relay->polling)) {
                DL_DELETE2(relay->polling, r, poll_prev, poll_next);
                r->poll_list = NULL;
                n = r->read(r, UDP_POLL_ROUNDS, now);
                if (r->closed) /* by its own read */
                        continue;
                if (n == 0) {
                        ev_io_start(loop, &r->io); /* empty: back to wakeups */
                        continue;
                }
                DL_APPEND2(relay->polled, r, poll_prev, poll_next);
                r->poll_list = &relay->polled;
        }
        if (relay->polled)
                relay_poll_arm(relay);

        relay_dispatch(relay);
}

static void relay_expiry_cb(struct ev_loop *loop, ev_timer *w, int revents) {
        UdpRelay *relay = w->data;
        ev_tstamp now = monotonic_coarse_sec();

        while (relay->lru && relay->lru->last_activity + relay->idle_timeout <= now)
                session_close(relay->lru);
        relay_expiry_arm(relay, now);

        relay_dispatch(relay);
}

static int listener_setup(UdpListener *l, int fd, SockaddrUnion *ret_local) {
        SockaddrUnion local = {};
        socklen_t len = sizeof local, type_len = sizeof(int), int_len = sizeof(int);
        int type = 0, one = 1, rcvbuf = 0, r;

        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) < 0)
                return -errno;
        if (type != SOCK_DGRAM)
                return -ESOCKTNOSUPPORT;
        if (getsockname(fd, &local.sa, &len) < 0)
                return -errno;
        if (local.sa.sa_family != AF_INET && local.sa.sa_family != AF_INET6)
                return -EAFNOSUPPORT;

        l->family = local.sa.sa_family;
        l->pktinfo = sockaddr_is_wildcard(&local);

        /* Room for a poll interval of a flood (see "Polled mode"). Best effort: the kernel caps
         * it at net.core.rmem_max, and a caller's larger buffer stays. */
        if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, &int_len) >= 0 &&
            rcvbuf < 2 * UDP_LISTENER_RCVBUF) {
                rcvbuf = UDP_LISTENER_RCVBUF;
                (void) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
        }
        if (l->pktinfo) {
                if (l->family == AF_INET)
                        r = setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
                else
                        r = setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one);
                if (r < 0)
                        return -errno;
        }

        *ret_local = local;
        return 0;
}

int udp_relay_new(UdpRelay **ret, struct ev_loop *loop, const int *fds, size_t n_fds,
                  const RelayConfig *config, RelayStats *stats, const RelayCallbacks *callbacks,
                  void *userdata) {
        _cleanup_(udp_relay_freep) UdpRelay *relay = NULL;
        uint64_t timeout_usec;
        int r;

        if (!ret || !loop || !fds || n_fds == 0 || n_fds > UINT16_MAX || !config || !stats ||
            config->idle_timeout_usec > RELAY_IDLE_TIMEOUT_MAX_USEC)
                return -EINVAL;

        relay = calloc(1, sizeof *relay);
        if (!relay)
                return -ENOMEM;

        relay->loop = loop;
        relay->target = config->target;
        relay->max_sessions = config->max_sessions;
        relay->stats = stats;
        if (callbacks)
                relay->callbacks = *callbacks;
        relay->userdata = userdata;
        relay->state = relay->reported_state = RELAY_LISTENING;
        relay->reason = relay->reported_reason = "";

        timeout_usec = config->idle_timeout_usec > 0 ? config->idle_timeout_usec
                                                     : RELAY_UDP_IDLE_TIMEOUT_DEFAULT_USEC;
        relay->idle_timeout = (ev_tstamp) timeout_usec / USEC_PER_SEC;
        /* Sessions may outlive their timeout by up to 1/32 of it (at most 1 s), so that one
         * timer wakeup closes every session that went idle around the same time. */
        relay->expiry_slack = MIN(relay->idle_timeout / 32, 1.);
        ev_init(&relay->expiry, relay_expiry_cb);
        relay->expiry.data = relay;
        ev_init(&relay->poll_io, relay_poll_cb);
        relay->poll_io.data = relay;
        relay->poll_fd = -EBADF;

        relay->listeners = calloc(n_fds, sizeof *relay->listeners);
        if (!relay->listeners)
                return -ENOMEM;
        relay->n_listeners = n_fds;
        for (size_t i = 0; i < n_fds; i++)
                relay->listeners[i].fd = -EBADF; /* the caller's until we succeed */

        for (size_t i = 0; i < n_fds; i++) {
                UdpListener *l = &relay->listeners[i];
                SockaddrUnion local;

                l->relay = relay;
                l->index = (uint16_t) i;
                r = listener_setup(l, fds[i], &local);
                if (r < 0)
                        return r;
                if (i == 0)
                        sockaddr_format(&local, relay->name, sizeof relay->name);
        }

        r = pool_ref();
        if (r < 0)
                return r;
        relay->pool_ref = true;

        /* Nothing fails from here on: take the sockets. */
        for (size_t i = 0; i < n_fds; i++) {
                UdpListener *l = &relay->listeners[i];

                l->fd = fds[i];
                reader_init(&l->reader, relay, l->fd, listener_read);
        }

        *ret = TAKE_PTR(relay);
        return 0;
}

UdpRelay *udp_relay_free(UdpRelay *relay) {
        UdpSession *s, *tmp;

        if (!relay)
                return NULL;

        HASH_ITER (hh, relay->sessions, s, tmp) {
                HASH_DELETE(hh, relay->sessions, s);
                reader_stop(&s->reader);
                safe_close(s->fd);
                free(s);
                relay->stats->active--;
        }
        while ((s = relay->dead)) {
                relay->dead = s->lru_next;
                free(s);
        }
        ev_timer_stop(relay->loop, &relay->expiry);
        ev_io_stop(relay->loop, &relay->poll_io);
        safe_close(relay->poll_fd);

        for (size_t i = 0; i < relay->n_listeners; i++) {
                UdpListener *l = &relay->listeners[i];

                if (l->fd >= 0) {
                        reader_stop(&l->reader);
                        safe_close(l->fd);
                }
        }
        free(relay->listeners);

        if (relay->pool_ref)
                pool_unref();
        free(relay);
        return NULL;
}

void udp_relay_set_target(UdpRelay *relay, const RelayTarget *target) {
        relay->target = *target;
}

RelayState udp_relay_get_state(const UdpRelay *relay, const char **ret_reason) {
        if (ret_reason)
                *ret_reason = relay->reason;
        return relay->state;
}
