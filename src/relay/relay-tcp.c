/* TCP relay: accept on the host, connect to the guest, splice both ways */

/*
 * Theory of operation
 * ===================
 *
 * A TcpRelay owns the listening sockets of one published port. Each accepted connection becomes a
 * TcpConn with two sides, SIDE_CLIENT (the accepted socket) and SIDE_GUEST (our socket toward the
 * guest), and two flows: flow[s] carries the bytes read from side s to side !s. So flow[SIDE_CLIENT]
 * goes to the guest and flow[SIDE_GUEST] comes from it.
 *
 * Connection states:
 *
 *   CONNECTING   the guest socket's nonblocking connect() is in progress; only its writability is
 *                watched, with the connect timeout armed. The client is not read yet: its bytes wait
 *                in its socket. On loopback the handshake is usually complete by the time
 *                connect() returns EINPROGRESS; a second connect() confirms that and this state
 *                is skipped.
 *   RELAYING     both sides are watched; the timer, if any, is the idle timeout.
 *   closing      conn_close() was called: watchers are stopped and the connection sits on the relay's
 *                closing list. The reaper (an ev_prepare, so it runs after every callback of this loop
 *                iteration) closes the sockets and frees it. Nothing is freed inside its own callback
 *                chain.
 *
 * Events of a flow (the "FIN_RCVD" / "FIN_SENT" of passt's tcp_splice.c):
 *
 *   eof          the source returned end-of-file (FIN received on that side).
 *   shut         the FIN was passed on: once the flow has drained after eof, shutdown(SHUT_WR) on
 *                the destination. A half-closed client keeps receiving the guest's reply.
 *   stalled      a read hit EAGAIN while bytes were still queued: the pipe may be full even though
 *                its byte count says otherwise (pipes fill by slots, not bytes), so reading waits
 *                for the next successful write instead of spinning on a readable source.
 *
 * The connection ends normally when both flows are shut (the second FIN is passed on by close()
 * itself rather than a shutdown()). A hard error on either side (ECONNRESET, EPIPE, ...) resets both:
 * SO_LINGER {1, 0} and close(), so the peer of the other side sees a RST too. A refused, unreachable
 * or timed-out guest resets the client and counts as failed.
 *
 * Hangups: a side whose flow waits for room toward a peer that does not read, with nothing to
 * write to it either, is watched for nothing: its reset would go unnoticed, and the connection
 * would hold its sockets while its peer never hears of it. So the first time a side ends up so,
 * its socket also joins the relay's hangup set: an epoll instance of its own (in the loop as one
 * ev_io), edge-triggered and asking for no event, so that it reports only what epoll always
 * reports, EPOLLERR and EPOLLHUP, once each time they come. A side whose SO_ERROR is set then
 * resets the connection; a hangup without an error (both FINs exchanged while bytes still wait)
 * changes nothing. The socket stays in the set until it is closed, which takes it out: one
 * epoll_ctl() per side at most, and none for a connection that never stalls. (A side that sent
 * its FIN is left out: it waits for its peer, which finds out at its next write, and leaving it
 * out keeps the closing of an ordinary short connection at the system calls it had.)
 *
 * Moving bytes: bulk flows splice(). A flow starts out copying through a buffer from a process-wide
 * pool (recv() and send(): for a small message that is two system calls where splice() needs four
 * and a pipe); the first read that fills the buffer marks the flow as bulk, and from then on it
 * takes an empty pipe from a pool of its own when data arrives, splice()s the source into it and
 * the pipe into the destination. Either way the storage goes back to its pool once it has
 * drained, so an idle connection holds no pipe and no buffer: two sockets and this small struct.
 * Where splice() is refused (EINVAL) or no pipe can be had, a bulk flow copies too.
 * PORTPUB_TCP_SPLICE=0 in the environment forces the copy path (for tests, and for kernels whose
 * splice misbehaves).
 *
 * Watched events follow the flows: side s is read while flow[s] has room (and has not stalled or
 * seen eof), and watched for writability while flow[!s] holds bytes. That is the backpressure: a
 * slow reader stops the relay from reading its peer, and the kernel's socket buffers push back to
 * the sender. Reads fill the pipe as far as it goes; a read that did not fill it is taken to have
 * emptied the socket, so the next read waits for the next readiness report (level-triggered).
 *
 * PROXY protocol: the v1 line or v2 header is built at accept time from the client's address and
 * the address it connected to, and written to the guest ahead of any client byte; a short write
 * keeps the rest in the connection until the guest is writable again. The idle timeout uses
 * libev's lazy pattern: moving bytes only updates last_activity, and the timer, when it fires,
 * re-arms itself for whatever is left. last_activity is CLOCK_MONOTONIC, not ev_now(), which
 * follows the wall clock: setting the clock would move every idle deadline. The clock is read
 * at most once per loop iteration and relay (MonotonicCache), and only when the port has an
 * idle timeout: the byte-moving path of a port without one reads no clock at all.
 *
 * Counters: total counts every accepted connection that got a guest socket (failed ones
 * included), active those not yet reaped; the byte counters count payload written to each side,
 * not the PROXY header. sessions_changed is called once per accept batch and once per reaper pass.
 *
 * Limits: at MaxSessions all accept watchers stop (state paused; new clients wait in the kernel's
 * backlog) and restart when a session ends. When accept() or socket() runs out of fds or memory,
 * accepting stops as well and a timer retries after TCP_RETRY_USEC, never spinning.
 *
 * splice() into a socket whose peer is gone raises SIGPIPE: the process must ignore SIGPIPE.
 * Single-threaded: the pipe pool is process-wide and unlocked.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backoff.h"
#include "log.h"
#include "macro.h"
#include "relay-tcp.h"
#include "time-util.h"

#define TCP_ACCEPT_BATCH 64u /* accept4() calls per wakeup of one listener */
/* Asked for; the kernel may give less. 1 MiB pipes measured ~8% slower in relaybench than 256 KiB
 * (more bytes in flight, probably colder caches at the receiver). */
#define TCP_PIPE_SIZE (256u * 1024u)
#define TCP_PIPE_POOL_MAX 64u /* empty pipes kept for reuse */
/* Copy path, per flow while bytes are in flight. Measured in relaybench against 16 and 64 KiB:
 * 32 KiB was fastest, 64 KiB a third slower. */
#define TCP_COPY_BUFFER_SIZE (32u * 1024u)
#define TCP_BUFFER_POOL_MAX 16u /* idle copy buffers kept for reuse */
#define TCP_PUMP_ROUNDS 16u /* read/write rounds per flow per wakeup */
/* Send buffer toward the guest of a bulk flow (the kernel doubles it). The guest is on this host,
 * microseconds away, yet autotuning grows the buffer toward tcp_wmem's maximum (4 MiB on Debian)
 * on such a path, and the bytes queued there only go cold in the caches before the guest reads
 * them. iperf3, 1 stream through relay-standalone on loopback, interleaved runs: autotuned
 * 15.4-16.2 Gbit/s, 1 MiB 15.4-18.0, 256 KiB 17.0-19.0, 128 KiB 16.6-19.4 at more relay CPU.
 * 512 KiB in flight still carries 80 Gbit/s at a 50 us round trip. The client side keeps
 * autotuning: clients may be far away. */
#define TCP_GUEST_SNDBUF (256 * 1024)
#define TCP_EARLY_READ_MAX_SKIP 64u
#define TCP_RETRY_USEC (100 * USEC_PER_MSEC) /* accepting again after running out of fds */
#define TCP_HANGUP_BATCH 64u /* hangup reports read per wakeup */

enum {
        SIDE_CLIENT = 0,
        SIDE_GUEST = 1,
};

typedef enum TcpConnState {
        TCP_CONN_CONNECTING,
        TCP_CONN_RELAYING,
} TcpConnState;

typedef enum TcpPause {
        TCP_PAUSE_NONE,
        TCP_PAUSE_MAX_SESSIONS,
        TCP_PAUSE_NO_FDS,
        TCP_PAUSE_NO_MEMORY,
} TcpPause;

typedef struct TcpFlow {
        int pipe[2]; /* from the pool while bytes are in flight, else -EBADF */
        char *buf; /* copy path only, while bytes are in flight */
        uint32_t start; /* copy path: first unsent byte in buf */
        uint32_t pending; /* read from the source, not yet written to the destination */
        uint32_t capacity; /* of the pipe or buf */
        bool eof : 1;
        bool shut : 1;
        bool stalled : 1;
        bool bulk : 1; /* a read filled the copy buffer: splice from now on */
        bool watch_eof : 1; /* EOF read: keep the read watcher until its next report */
} TcpFlow;

typedef struct ProxyHeader {
        uint16_t len, sent;
        char data[];
} ProxyHeader;

typedef struct TcpConn TcpConn;
struct TcpConn {
        TcpRelay *relay;
        TcpConn *prev, *next; /* on relay->conns, or (next only) on relay->closing */
        ev_io io[2]; /* io[s].fd is the socket of side s */
        ev_timer timer; /* connect timeout while connecting, then the idle timeout */
        ev_tstamp last_activity; /* CLOCK_MONOTONIC; only kept with an idle timeout */
        TcpFlow flow[2];
        ProxyHeader *proxy; /* still to be written to the guest before any client byte */
        TcpConnState state : 8;
        bool copy : 1; /* splice() refused: read/write through a buffer */
        bool closing : 1;
        bool reset : 1; /* close with a RST on both sides */
        uint8_t in_hangup_set : 2; /* bit s: side s is in relay->hangup */
};

typedef struct TcpListener {
        ev_io io;
        TcpRelay *relay;
        int family;
        bool nodelay; /* set on the listener, so accepted sockets inherit TCP_NODELAY */
} TcpListener;

struct TcpRelay {
        struct ev_loop *loop;
        RelayConfig config;
        RelayStats *stats;
        RelayCallbacks callbacks;
        void *userdata;

        TcpListener *listeners;
        size_t n_listeners;
        ev_timer retry;
        ev_prepare reaper;
        ev_io hangup; /* its fd: the epoll instance of the hangup set, or -EBADF until needed */

        TcpConn *conns;
        TcpConn *closing;

        TcpPause pause;
        bool copy;
        ev_tstamp connect_timeout;
        ev_tstamp idle_timeout; /* 0: none */
        MonotonicCache now; /* keyed by ev_iteration(): one clock read per iteration */
        Backoff early_read; /* of the read on arrival; see conn_established() */
};

/* Errors that say "this process is short of something", not "this connection is broken". */
static bool errno_is_shortage(int e) {
        return e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM;
}

static TcpPause pause_for_errno(int e) {
        return e == EMFILE || e == ENFILE ? TCP_PAUSE_NO_FDS : TCP_PAUSE_NO_MEMORY;
}

static bool pause_is_temporary(TcpPause pause) {
        return pause == TCP_PAUSE_NO_FDS || pause == TCP_PAUSE_NO_MEMORY;
}

/* ---- pools of pipes and copy buffers ------------------------------------------------------ */

typedef struct PooledPipe {
        int fd[2];
        uint32_t size;
} PooledPipe;

static PooledPipe pipe_pool[TCP_PIPE_POOL_MAX];
static size_t pipe_pool_n;
/* Freeing a 64 KiB buffer next to the heap top makes glibc trim it, and the next malloc() faults
 * its pages in again: keep a few. */
static char *buffer_pool[TCP_BUFFER_POOL_MAX];
static size_t buffer_pool_n;
static size_t tcp_relays_alive; /* the last one to go empties the pools */

static int pipe_get(int ret[2], uint32_t *ret_size) {
        int fds[2], size;

        if (pipe_pool_n > 0) {
                PooledPipe *p = &pipe_pool[--pipe_pool_n];
                ret[0] = p->fd[0];
                ret[1] = p->fd[1];
                *ret_size = p->size;
                return 0;
        }

        if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
                return -errno;
        /* Growing is best effort: past pipe-max-size, or past pipe-user-pages-soft without
         * CAP_SYS_RESOURCE, the kernel refuses and the default size has to do. */
        size = fcntl(fds[1], F_SETPIPE_SZ, (int) TCP_PIPE_SIZE);
        if (size < 0)
                size = fcntl(fds[1], F_GETPIPE_SZ);
        if (size <= 0) {
                int r = size < 0 ? -errno : -EIO;
                safe_close(fds[0]);
                safe_close(fds[1]);
                return r;
        }
        ret[0] = fds[0];
        ret[1] = fds[1];
        *ret_size = (uint32_t) size;
        return 0;
}

/* The pipe must be empty. */
static void pipe_put(int fd[2], uint32_t size) {
        if (pipe_pool_n < TCP_PIPE_POOL_MAX)
                pipe_pool[pipe_pool_n++] = (PooledPipe){ .fd = { fd[0], fd[1] }, .size = size };
        else {
                safe_close(fd[0]);
                safe_close(fd[1]);
        }
        fd[0] = fd[1] = -EBADF;
}

static char *buffer_get(void) {
        if (buffer_pool_n > 0)
                return buffer_pool[--buffer_pool_n];
        return malloc(TCP_COPY_BUFFER_SIZE);
}

static void buffer_put(char *buf) {
        if (buffer_pool_n < TCP_BUFFER_POOL_MAX)
                buffer_pool[buffer_pool_n++] = buf;
        else
                free(buf);
}

static void pools_flush(void) {
        while (pipe_pool_n > 0) {
                PooledPipe *p = &pipe_pool[--pipe_pool_n];
                safe_close(p->fd[0]);
                safe_close(p->fd[1]);
        }
        while (buffer_pool_n > 0)
                free(buffer_pool[--buffer_pool_n]);
}

/* ---- flows --------------------------------------------------------------------------------- */

static bool flow_has_storage(const TcpFlow *f) {
        return f->buf || f->pipe[0] >= 0;
}

static bool flow_can_read(const TcpConn *c, const TcpFlow *f) {
        if (f->eof || f->stalled)
                return false;
        if (f->buf)
                return f->pending < f->capacity;
        if (f->pipe[0] >= 0)
                /* After splice() was refused the pipe only drains; the buffer takes over after. */
                return !c->copy && f->pending < f->capacity;
        return true;
}

static int flow_acquire(TcpConn *c, TcpFlow *f) {
        int r;

        if (flow_has_storage(f))
                return 0;

        if (!c->copy && f->bulk) {
                r = pipe_get(f->pipe, &f->capacity);
                if (r >= 0)
                        return 0;
                log_debug_errno(r, "Cannot get a pipe, copying through a buffer instead: %m");
        }

        f->buf = buffer_get();
        if (!f->buf)
                return -ENOMEM;
        f->capacity = TCP_COPY_BUFFER_SIZE;
        f->start = 0;
        return 0;
}

/* Gives back what the flow holds once it has drained. */
static void flow_release(TcpFlow *f) {
        if (f->pipe[0] >= 0)
                pipe_put(f->pipe, f->capacity);
        if (f->buf)
                buffer_put(TAKE_PTR(f->buf));
}

static void flow_done(TcpFlow *f) {
        if (f->pipe[0] >= 0 && f->pending > 0) {
                /* Bytes left in it: not reusable. */
                f->pipe[0] = safe_close(f->pipe[0]);
                f->pipe[1] = safe_close(f->pipe[1]);
        }
        flow_release(f);
        f->pending = 0;
}

/* Reads as much as fits; *ret_room says how much that was. */
static ssize_t flow_read(TcpFlow *f, int fd, uint32_t *ret_room) {
        ssize_t n;

        if (f->buf) {
                if (f->start > 0 && f->start + f->pending == f->capacity) {
                        memmove(f->buf, f->buf + f->start, f->pending);
                        f->start = 0;
                }
                *ret_room = f->capacity - f->start - f->pending;
                n = recv(fd, f->buf + f->start + f->pending, *ret_room, 0);
        } else {
                *ret_room = f->capacity - f->pending;
                n = splice(fd, NULL, f->pipe[1], NULL, *ret_room, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        }
        return n < 0 ? -errno : n;
}

static ssize_t flow_write(TcpFlow *f, int fd) {
        ssize_t n;

        if (f->buf) {
                n = send(fd, f->buf + f->start, f->pending, MSG_NOSIGNAL);
                if (n > 0)
                        f->start += (uint32_t) n;
        } else
                n = splice(f->pipe[0], NULL, fd, NULL, f->pending, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        return n < 0 ? -errno : n;
}

/* ---- connections --------------------------------------------------------------------------- */

static void relay_set_pause(TcpRelay *r, TcpPause pause);

/* Only latency is at stake; a failure is not worth failing a connection for. */
static bool set_nodelay(int fd) {
        return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int)) >= 0;
}

static void set_reset_on_close(int fd) {
        (void) setsockopt(fd, SOL_SOCKET, SO_LINGER,
                          &(struct linger){ .l_onoff = 1, .l_linger = 0 }, sizeof(struct linger));
}

static void conn_free(TcpConn *c) {
        struct ev_loop *loop = c->relay->loop;

        for (unsigned s = 0; s < 2; s++) {
                ev_io_stop(loop, &c->io[s]);
                if (c->io[s].fd >= 0) {
                        if (c->reset)
                                set_reset_on_close(c->io[s].fd);
                        safe_close(c->io[s].fd);
                }
                flow_done(&c->flow[s]);
        }
        ev_timer_stop(loop, &c->timer);
        free(c->proxy);
        free(c);
}

static void conn_unlink(TcpConn *c) {
        TcpRelay *r = c->relay;

        if (c->prev)
                c->prev->next = c->next;
        else
                r->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        c->prev = c->next = NULL;
}

/* Stops the connection now and leaves the freeing to the reaper; safe inside its callbacks. */
static void conn_close(TcpConn *c, bool reset) {
        TcpRelay *r = c->relay;

        if (c->closing)
                return;
        c->closing = true;
        c->reset = reset;
        ev_io_stop(r->loop, &c->io[SIDE_CLIENT]);
        ev_io_stop(r->loop, &c->io[SIDE_GUEST]);
        ev_timer_stop(r->loop, &c->timer);

        conn_unlink(c);
        c->next = r->closing;
        r->closing = c;
        ev_prepare_start(r->loop, &r->reaper);
}

static ev_tstamp relay_now(TcpRelay *r) {
        return monotonic_sec_cached(&r->now, ev_iteration(r->loop));
}

/* Out of line, so that the byte path of a port without an idle timeout stays as it was: inlined
 * into conn_pump(), it made GCC inline less there, +2% instructions per connection under
 * callgrind. */
static _noinline_ void conn_stamp(TcpConn *c) {
        c->last_activity = relay_now(c->relay);
}

/* Bytes moved: the idle deadline moves with them. */
static void conn_touch(TcpConn *c) {
        if (c->relay->idle_timeout > 0)
                conn_stamp(c);
}

static void conn_fail(TcpConn *c, int error) {
        /* Per connection and possibly many per second: the FailedSessions counter is the report. */
        log_debug_errno(error, "Connection to the guest failed: %m");
        c->relay->stats->failed++;
        conn_close(c, /* reset= */ true);
}

static void io_set_events(struct ev_loop *loop, ev_io *w, int events) {
        if (!!ev_is_active(w) == (events != 0) && (w->events & (EV_READ | EV_WRITE)) == events)
                return;
        ev_io_stop(loop, w);
        ev_io_modify(w, events);
        if (events != 0)
                ev_io_start(loop, w);
}

/* Best effort: without it a reset of that side is noticed only once its flow moves again. */
static void conn_watch_hangup(TcpConn *c, unsigned s) {
        TcpRelay *r = c->relay;
        struct epoll_event ev = { .events = EPOLLET, .data.ptr = &c->io[s] };

        c->in_hangup_set |= 1u << s;
        if (r->hangup.fd < 0) {
                int fd = epoll_create1(EPOLL_CLOEXEC);

                if (fd < 0) {
                        log_debug_errno(errno, "Cannot watch for hangups, ignoring: %m");
                        return;
                }
                ev_io_set(&r->hangup, fd, EV_READ);
                ev_io_start(r->loop, &r->hangup);
        }
        if (epoll_ctl(r->hangup.fd, EPOLL_CTL_ADD, c->io[s].fd, &ev) < 0)
                log_debug_errno(errno, "Cannot watch a socket for hangups, ignoring: %m");
}

static void hangup_cb(struct ev_loop *loop, ev_io *w, int revents) {
        struct epoll_event events[TCP_HANGUP_BATCH];
        int n;

        n = epoll_wait(w->fd, events, (int) TCP_HANGUP_BATCH, 0);
        for (int i = 0; i < n; i++) {
                ev_io *io = events[i].data.ptr;
                TcpConn *c = io->data;
                int error = 0;
                socklen_t len = sizeof error;

                /* A closed socket leaves the set, and the reaper closes before it frees: c is
                 * alive, at most closing. */
                if (c->closing || !(events[i].events & EPOLLERR))
                        continue;
                if (getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0 || error == 0)
                        continue;
                log_debug_errno(error, "Resetting connection, the %s side failed: %m",
                                io == &c->io[SIDE_CLIENT] ? "client" : "guest");
                conn_close(c, /* reset= */ true);
        }
}

static void conn_update_events(TcpConn *c) {
        for (unsigned s = 0; s < 2; s++) {
                int events = 0;

                /* After EOF libev would leave the socket in epoll until its next (level-triggered)
                 * report and then spend an epoll_ctl(DEL) on it. Watching until that report
                 * instead costs nothing, and a connection that ends before it (the other side
                 * answers the FIN within one loop iteration) closes the fd while still
                 * registered, which needs no epoll_ctl at all. A socket not in epoll yet is
                 * not added for this. */
                if (flow_can_read(c, &c->flow[s]) ||
                    (c->flow[s].watch_eof && ev_is_active(&c->io[s])))
                        events |= EV_READ;
                if (c->flow[!s].pending > 0 || (s == SIDE_GUEST && c->proxy))
                        events |= EV_WRITE;
                io_set_events(c->relay->loop, &c->io[s], events);
                if (events == 0 && !c->flow[s].eof && !(c->in_hangup_set & (1u << s)))
                        conn_watch_hangup(c, s);
        }
}

/* Returns > 0 while part of the header is still unsent. */
static int conn_send_proxy_header(TcpConn *c) {
        ProxyHeader *h = c->proxy;
        ssize_t n;

        n = send(c->io[SIDE_GUEST].fd, h->data + h->sent, h->len - h->sent, MSG_NOSIGNAL);
        if (n < 0)
                return errno == EAGAIN || errno == EINTR ? 1 : -errno;
        h->sent += (uint16_t) n;
        if (h->sent < h->len)
                return 1;
        c->proxy = mfree(c->proxy);
        return 0;
}

/* The flow filled its copy buffer: from now on it splices. Toward the guest it also gets its
 * fixed send buffer (TCP_GUEST_SNDBUF), which small connections never need. */
static void flow_set_bulk(TcpFlow *f, unsigned d, int dst) {
        f->bulk = true;
        if (d == SIDE_CLIENT) /* best effort, like TCP_NODELAY */
                (void) setsockopt(dst, SOL_SOCKET, SO_SNDBUF, &(int){ TCP_GUEST_SNDBUF },
                                  sizeof(int));
}

/* Moves what side d has to offer to side !d, as far as both sockets allow; readable says whether
 * side d is worth reading right away. Returns 0, or a negative errno when the connection has to be
 * reset. */
static int conn_pump(TcpConn *c, unsigned d, bool readable) {
        TcpRelay *r = c->relay;
        TcpFlow *f = &c->flow[d];
        int src = c->io[d].fd, dst = c->io[!d].fd;
        ssize_t n;
        int k;

        for (unsigned round = 0; round < TCP_PUMP_ROUNDS; round++) {
                bool more = false;

                if ((round > 0 || readable) && flow_can_read(c, f)) {
                        uint32_t room;

                        k = flow_acquire(c, f);
                        if (k < 0)
                                return k;

                        n = flow_read(f, src, &room);
                        if (n > 0) {
                                f->pending += (uint32_t) n;
                                conn_touch(c);
                                if (!f->bulk && f->buf && f->start + f->pending == f->capacity)
                                        flow_set_bulk(f, d, dst);
                                /* Only a read that filled the pipe may have left more behind. */
                                more = (size_t) n == room;
                        } else if (n == 0)
                                f->eof = f->watch_eof = true;
                        else if (n == -EAGAIN)
                                f->stalled = f->pending > 0;
                        else if (n == -EINTR)
                                more = true;
                        else if (n == -EINVAL && !f->buf && !c->copy) {
                                log_debug("splice() refused, copying through a buffer instead.");
                                c->copy = true;
                                more = true;
                        } else
                                return (int) n;
                }

                if (d == SIDE_CLIENT && c->proxy) {
                        k = conn_send_proxy_header(c);
                        if (k < 0)
                                return k;
                        if (k > 0) {
                                /* The header goes first: wait for the guest to take it. */
                                if (f->pending == 0)
                                        flow_release(f);
                                return 0;
                        }
                }

                if (f->pending > 0) {
                        bool was_stalled = f->stalled;

                        n = flow_write(f, dst);
                        if (n > 0) {
                                f->pending -= (uint32_t) n;
                                f->stalled = false;
                                conn_touch(c);
                                if (d == SIDE_CLIENT)
                                        r->stats->bytes_to_guest += (uint64_t) n;
                                else
                                        r->stats->bytes_from_guest += (uint64_t) n;
                                /* Reading stopped for want of room: there is room now. */
                                more = more || was_stalled;
                        } else if (n == -EINTR)
                                continue;
                        else if (n != -EAGAIN)
                                return (int) n;
                        if (f->pending > 0)
                                return 0; /* destination full: wait for writability */
                }

                flow_release(f);
                if (f->eof && !f->shut) {
                        f->shut = true;
                        /* When the other flow is shut already, close() passes this FIN on. */
                        if (!c->flow[!d].shut && shutdown(dst, SHUT_WR) < 0)
                                return -errno;
                }

                if (!more)
                        break;
        }
        return 0;
}

static void conn_after_pump(TcpConn *c, int r) {
        if (r < 0) {
                log_debug_errno(r, "Resetting connection: %m");
                conn_close(c, /* reset= */ true);
        } else if (c->flow[SIDE_CLIENT].shut && c->flow[SIDE_GUEST].shut)
                conn_close(c, /* reset= */ false);
        else
                conn_update_events(c);
}

static void conn_established(TcpConn *c) {
        TcpRelay *r = c->relay;
        uint64_t before;
        bool early_read;
        int k;

        c->state = TCP_CONN_RELAYING;
        ev_timer_stop(r->loop, &c->timer);
        if (r->idle_timeout > 0) {
                conn_stamp(c);
                ev_timer_set(&c->timer, r->idle_timeout, r->idle_timeout);
                ev_timer_start(r->loop, &c->timer);
        }

        /* A lightly loaded relay accepts after the client's first bytes have arrived: moving
         * them now saves a loop iteration. A busy one accepts before them, and the read fails
         * (under tcp_connrate, 91% of these reads returned EAGAIN). So after each miss the next
         * 1, 2, 4 ... 64 connections skip it; a hit tries every time again. The pump sends the
         * PROXY header either way. */
        early_read = !backoff_skip(&r->early_read);
        before = r->stats->bytes_to_guest;
        k = conn_pump(c, SIDE_CLIENT, early_read);
        if (early_read && k >= 0) {
                if (r->stats->bytes_to_guest != before || c->flow[SIDE_CLIENT].eof ||
                    c->flow[SIDE_CLIENT].pending > 0)
                        backoff_hit(&r->early_read);
                else
                        backoff_miss(&r->early_read, TCP_EARLY_READ_MAX_SKIP);
        }
        conn_after_pump(c, k);
}

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents) {
        TcpConn *c = w->data;
        unsigned s = w == &c->io[SIDE_GUEST] ? SIDE_GUEST : SIDE_CLIENT;
        int r = 0;

        if (c->state == TCP_CONN_CONNECTING) {
                int error = 0;
                socklen_t len = sizeof error;

                if (getsockopt(w->fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0)
                        error = errno;
                if (error != 0)
                        conn_fail(c, -error);
                else
                        conn_established(c);
                return;
        }

        if (revents & EV_READ) {
                c->flow[s].watch_eof = false;
                r = conn_pump(c, s, /* readable= */ true);
        }
        if (r >= 0 && (revents & EV_WRITE))
                r = conn_pump(c, !s, /* readable= */ false);
        conn_after_pump(c, r);
}

static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
        TcpConn *c = w->data;
        ev_tstamp left;

        if (c->state == TCP_CONN_CONNECTING) {
                conn_fail(c, -ETIMEDOUT);
                return;
        }

        /* libev's lazy timer: activity only moves last_activity, the timer catches up here. */
        left = c->last_activity + c->relay->idle_timeout - relay_now(c->relay);
        if (left > 0) {
                w->repeat = left;
                ev_timer_again(loop, w);
                return;
        }
        log_debug("Closing connection idle for %.3fs.", c->relay->idle_timeout);
        conn_close(c, /* reset= */ false);
}

static int proxy_header_new(RelayProxyProtocol version, int fd, const SockaddrUnion *peer,
                            ProxyHeader **ret) {
        static const uint8_t v2_signature[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                                  0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };
        SockaddrUnion src = *peer, dst = {};
        socklen_t len = sizeof dst;
        ProxyHeader *h;
        int family;

        if (getsockname(fd, &dst.sa, &len) < 0)
                dst.sa.sa_family = AF_UNSPEC;

        /* A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; the guest wants a.b.c.d. */
        if (src.sa.sa_family == AF_INET6 && dst.sa.sa_family == AF_INET6 &&
            IN6_IS_ADDR_V4MAPPED(&src.in6.sin6_addr) && IN6_IS_ADDR_V4MAPPED(&dst.in6.sin6_addr)) {
                SockaddrUnion *both[] = { &src, &dst };
                for (size_t i = 0; i < ELEMENTSOF(both); i++) {
                        struct sockaddr_in in = {
                                .sin_family = AF_INET,
                                .sin_port = both[i]->in6.sin6_port,
                        };
                        memcpy(&in.sin_addr, &both[i]->in6.sin6_addr.s6_addr[12], 4);
                        *both[i] = (SockaddrUnion){ .in = in };
                }
        }
        family = src.sa.sa_family == dst.sa.sa_family &&
                                 (src.sa.sa_family == AF_INET || src.sa.sa_family == AF_INET6)
                         ? src.sa.sa_family
                         : AF_UNSPEC;

        h = malloc(sizeof *h + 108); /* the longest v1 line; a v2 header is at most 52 bytes */
        if (!h)
                return -ENOMEM;
        h->sent = 0;

        if (version == RELAY_PROXY_V1) {
                char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
                int n;

                if (family == AF_UNSPEC)
                        n = snprintf(h->data, 108, "PROXY UNKNOWN\r\n");
                else
                        n = snprintf(h->data, 108, "PROXY %s %s %s %u %u\r\n",
                                     family == AF_INET ? "TCP4" : "TCP6",
                                     sockaddr_format_ip(&src, s, sizeof s),
                                     sockaddr_format_ip(&dst, d, sizeof d), sockaddr_port(&src),
                                     sockaddr_port(&dst));
                h->len = (uint16_t) n;
        } else {
                uint8_t *p = (uint8_t *) h->data;
                size_t alen = family == AF_INET ? 12 : family == AF_INET6 ? 36 : 0;

                memcpy(p, v2_signature, sizeof v2_signature);
                p[12] = 0x21; /* version 2, PROXY */
                p[13] = family == AF_INET ? 0x11 : family == AF_INET6 ? 0x21 : 0x00; /* + STREAM */
                p[14] = (uint8_t) (alen >> 8);
                p[15] = (uint8_t) alen;
                p += 16;
                if (family == AF_INET) {
                        memcpy(p, &src.in.sin_addr, 4);
                        memcpy(p + 4, &dst.in.sin_addr, 4);
                        memcpy(p + 8, &src.in.sin_port, 2);
                        memcpy(p + 10, &dst.in.sin_port, 2);
                } else if (family == AF_INET6) {
                        memcpy(p, &src.in6.sin6_addr, 16);
                        memcpy(p + 16, &dst.in6.sin6_addr, 16);
                        memcpy(p + 32, &src.in6.sin6_port, 2);
                        memcpy(p + 34, &dst.in6.sin6_port, 2);
                }
                h->len = (uint16_t) (16 + alen);
        }

        *ret = h;
        return 0;
}

/* Takes over client_fd (closing it with a RST on failure). Returns true when a session was counted,
 * false when the client was turned away (counted as rejected, accepting paused as needed). */
static bool conn_new(TcpRelay *r, const TcpListener *l, int client_fd, const SockaddrUnion *peer) {
        SockaddrUnion guest;
        int guest_fd = -EBADF, guest_error = 0, k;
        TcpConn *c;

        c = calloc(1, sizeof *c);
        if (!c)
                goto no_memory;
        if (r->config.proxy_protocol != RELAY_PROXY_NONE &&
            proxy_header_new(r->config.proxy_protocol, client_fd, peer, &c->proxy) < 0)
                goto no_memory;

        if (!relay_target_pick(&r->config.target, l->family, &guest))
                guest_error = -EHOSTUNREACH;
        else {
                guest_fd = socket(guest.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                                  IPPROTO_TCP);
                if (guest_fd < 0) {
                        guest_error = -errno;
                        if (errno_is_shortage(errno)) {
                                relay_set_pause(r, pause_for_errno(errno));
                                goto reject;
                        }
                        /* Anything else is about that address, not about us: a failed session. */
                }
        }

        c->relay = r;
        for (unsigned s = 0; s < 2; s++) {
                c->flow[s].pipe[0] = c->flow[s].pipe[1] = -EBADF;
                ev_io_init(&c->io[s], conn_io_cb, s == SIDE_CLIENT ? client_fd : guest_fd, 0);
                c->io[s].data = c;
        }
        ev_init(&c->timer, conn_timer_cb);
        c->timer.data = c;
        c->copy = r->copy;
        c->state = TCP_CONN_CONNECTING;

        c->next = r->conns;
        if (r->conns)
                r->conns->prev = c;
        r->conns = c;
        r->stats->total++;
        r->stats->active++;

        if (guest_fd < 0) {
                conn_fail(c, guest_error);
                return true;
        }

        if (!l->nodelay)
                (void) set_nodelay(client_fd);
        (void) set_nodelay(guest_fd);

        k = connect(guest_fd, &guest.sa, sockaddr_len(&guest)) < 0 ? -errno : 0;
        if (k == -EINPROGRESS)
                /* On loopback the SYN-ACK has usually been processed by the time connect() returns,
                 * just too late for its return value. Asking again costs less than a readiness
                 * report, SO_ERROR and re-arming the watcher. */
                k = connect(guest_fd, &guest.sa, sockaddr_len(&guest)) < 0 ? -errno : 0;
        if (k == 0 || k == -EISCONN) {
                conn_established(c);
                return true;
        }
        if (k != -EALREADY && k != -EINPROGRESS) {
                conn_fail(c, k);
                return true;
        }

        io_set_events(r->loop, &c->io[SIDE_GUEST], EV_WRITE);
        ev_timer_set(&c->timer, r->connect_timeout, 0.);
        ev_timer_start(r->loop, &c->timer);
        return true;

no_memory:
        log_oom();
        relay_set_pause(r, TCP_PAUSE_NO_MEMORY);
reject:
        r->stats->rejected++;
        set_reset_on_close(client_fd);
        safe_close(client_fd);
        safe_close(guest_fd);
        if (c)
                free(c->proxy);
        free(c);
        return false;
}

/* ---- listeners ----------------------------------------------------------------------------- */

static bool at_max_sessions(const TcpRelay *r) {
        return r->config.max_sessions > 0 && r->stats->active >= r->config.max_sessions;
}

static void relay_notify_sessions(TcpRelay *r) {
        if (r->callbacks.sessions_changed)
                r->callbacks.sessions_changed(r->userdata);
}

static const char *pause_reason(TcpPause pause) {
        switch (pause) {
        case TCP_PAUSE_MAX_SESSIONS:
                return "MaxSessions reached";
        case TCP_PAUSE_NO_FDS:
                return "Too many open files";
        case TCP_PAUSE_NO_MEMORY:
                return "Out of memory";
        default:
                return "";
        }
}

static void relay_set_pause(TcpRelay *r, TcpPause pause) {
        for (size_t i = 0; i < r->n_listeners; i++)
                if (pause == TCP_PAUSE_NONE)
                        ev_io_start(r->loop, &r->listeners[i].io);
                else
                        ev_io_stop(r->loop, &r->listeners[i].io);

        if (pause_is_temporary(pause)) {
                if (!ev_is_active(&r->retry)) {
                        ev_timer_set(&r->retry, (ev_tstamp) TCP_RETRY_USEC / USEC_PER_SEC, 0.);
                        ev_timer_start(r->loop, &r->retry);
                }
        } else
                ev_timer_stop(r->loop, &r->retry);

        if (pause == r->pause)
                return;
        if (pause_is_temporary(pause))
                log_warning("Not accepting connections for a moment: %s.", pause_reason(pause));
        r->pause = pause;
        if (r->callbacks.state_changed)
                r->callbacks.state_changed(r->userdata,
                                           pause == TCP_PAUSE_NONE ? RELAY_LISTENING : RELAY_PAUSED,
                                           pause_reason(pause));
}

/* Accepts what the listener has queued, up to a batch. Returns false when it had to pause. */
static bool listener_accept(TcpRelay *r, TcpListener *l) {
        bool paused = false;
        unsigned sessions = 0;

        for (unsigned i = 0; i < TCP_ACCEPT_BATCH; i++) {
                SockaddrUnion peer = {};
                socklen_t len = sizeof peer;
                int fd;

                if (at_max_sessions(r)) {
                        relay_set_pause(r, TCP_PAUSE_MAX_SESSIONS);
                        paused = true;
                        break;
                }

                fd = accept4(l->io.fd, &peer.sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                        if (errno == EAGAIN)
                                break;
                        if (errno_is_shortage(errno)) {
                                relay_set_pause(r, pause_for_errno(errno));
                                paused = true;
                                break;
                        }
                        /* ECONNABORTED, EPERM (firewall), network errors: that client's problem. */
                        if (errno != EINTR)
                                log_debug_errno(errno, "accept4() failed, ignoring: %m");
                        continue;
                }

                if (!conn_new(r, l, fd, &peer)) {
                        paused = r->pause != TCP_PAUSE_NONE;
                        if (paused)
                                break;
                        continue;
                }
                sessions++;
        }

        if (sessions > 0)
                relay_notify_sessions(r);
        /* The session that reached the cap pauses right away, not at the next wakeup. */
        if (!paused && at_max_sessions(r)) {
                relay_set_pause(r, TCP_PAUSE_MAX_SESSIONS);
                paused = true;
        }
        return !paused;
}

static void listener_cb(struct ev_loop *loop, ev_io *w, int revents) {
        TcpListener *l = w->data;

        (void) listener_accept(l->relay, l);
}

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents) {
        TcpRelay *r = w->data;

        /* Accept straight away: the state only flips to listening once that works, so a lasting
         * shortage does not flap between paused and listening every TCP_RETRY_USEC. */
        for (size_t i = 0; i < r->n_listeners; i++)
                if (!listener_accept(r, &r->listeners[i]))
                        return;
        relay_set_pause(r, TCP_PAUSE_NONE);
}

static void reaper_cb(struct ev_loop *loop, ev_prepare *w, int revents) {
        TcpRelay *r = w->data;
        uint64_t n = 0;

        ev_prepare_stop(loop, w);
        while (r->closing) {
                TcpConn *c = r->closing;
                r->closing = c->next;
                conn_free(c);
                n++;
        }
        if (n == 0)
                return;

        r->stats->active -= n;
        if (r->pause == TCP_PAUSE_MAX_SESSIONS && !at_max_sessions(r))
                relay_set_pause(r, TCP_PAUSE_NONE);
        relay_notify_sessions(r);
}

/* ---- public -------------------------------------------------------------------------------- */

static bool env_splice_disabled(void) {
        const char *e = getenv("PORTPUB_TCP_SPLICE");

        return e && (strcmp(e, "0") == 0 || strcmp(e, "no") == 0 || strcmp(e, "false") == 0 ||
                     strcmp(e, "off") == 0);
}

int tcp_relay_new(TcpRelay **ret, struct ev_loop *loop, const int *fds, size_t n_fds,
                  const RelayConfig *config, RelayStats *stats, const RelayCallbacks *callbacks,
                  void *userdata) {
        _cleanup_free_ TcpListener *listeners = NULL;
        TcpRelay *r;

        if (!ret || !loop || !fds || n_fds == 0 || !config || !stats ||
            config->idle_timeout_usec > RELAY_IDLE_TIMEOUT_MAX_USEC)
                return -EINVAL;

        listeners = calloc(n_fds, sizeof *listeners);
        if (!listeners)
                return -ENOMEM;
        for (size_t i = 0; i < n_fds; i++) {
                SockaddrUnion a = {};
                socklen_t len = sizeof a;

                if (fds[i] < 0)
                        return -EBADF;
                if (getsockname(fds[i], &a.sa, &len) < 0)
                        return -errno;
                if (a.sa.sa_family != AF_INET && a.sa.sa_family != AF_INET6)
                        return -EAFNOSUPPORT;
                listeners[i].family = a.sa.sa_family;
        }

        r = calloc(1, sizeof *r);
        if (!r)
                return -ENOMEM;

        *r = (TcpRelay){
                .loop = loop,
                .config = *config,
                .stats = stats,
                .callbacks = callbacks ? *callbacks : (RelayCallbacks){},
                .userdata = userdata,
                .listeners = TAKE_PTR(listeners),
                .n_listeners = n_fds,
                .copy = env_splice_disabled(),
                .connect_timeout = (ev_tstamp) (config->connect_timeout_usec > 0
                                                        ? config->connect_timeout_usec
                                                        : RELAY_TCP_CONNECT_TIMEOUT_DEFAULT_USEC) /
                                   USEC_PER_SEC,
                .idle_timeout = (ev_tstamp) config->idle_timeout_usec / USEC_PER_SEC,
        };
        ev_init(&r->retry, retry_cb);
        r->retry.data = r;
        ev_prepare_init(&r->reaper, reaper_cb);
        r->reaper.data = r;
        ev_io_init(&r->hangup, hangup_cb, -EBADF, EV_READ);
        r->hangup.data = r;

        for (size_t i = 0; i < n_fds; i++) {
                TcpListener *l = &r->listeners[i];
                l->relay = r;
                /* Saves a setsockopt() per connection. */
                l->nodelay = set_nodelay(fds[i]);
                ev_io_init(&l->io, listener_cb, fds[i], EV_READ);
                l->io.data = l;
                /* Within one loop iteration, move the bytes of open sessions before taking new
                 * ones: lower latency for those, and a busy relay sheds load at the backlog. */
                ev_set_priority(&l->io, EV_MINPRI);
                ev_io_start(loop, &l->io);
        }

        tcp_relays_alive++;
        *ret = r;
        return 0;
}

TcpRelay *tcp_relay_free(TcpRelay *r) {
        uint64_t n = 0;

        if (!r)
                return NULL;

        for (size_t i = 0; i < r->n_listeners; i++) {
                ev_io_stop(r->loop, &r->listeners[i].io);
                safe_close(r->listeners[i].io.fd);
        }
        ev_timer_stop(r->loop, &r->retry);
        ev_prepare_stop(r->loop, &r->reaper);
        ev_io_stop(r->loop, &r->hangup);

        while (r->conns) {
                TcpConn *c = r->conns;
                r->conns = c->next;
                conn_free(c);
                n++;
        }
        while (r->closing) {
                TcpConn *c = r->closing;
                r->closing = c->next;
                conn_free(c);
                n++;
        }
        r->stats->active -= MIN(n, r->stats->active);
        /* After the sockets in it: each close() took one out. */
        safe_close(r->hangup.fd);

        free(r->listeners);
        free(r);

        if (--tcp_relays_alive == 0)
                pools_flush();
        return NULL;
}

void tcp_relay_set_target(TcpRelay *r, const RelayTarget *target) {
        r->config.target = *target;
}

RelayState tcp_relay_get_state(const TcpRelay *r, const char **ret_reason) {
        if (ret_reason)
                *ret_reason = pause_reason(r->pause);
        return r->pause == TCP_PAUSE_NONE ? RELAY_LISTENING : RELAY_PAUSED;
}
