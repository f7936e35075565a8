/* relay-standalone: one relay on its own libev loop, for relaybench and by-hand measurements */

/*
 * Usage: relay-standalone tcp|udp LISTEN_ADDR TARGET_ADDR
 *   addresses as "a.b.c.d:port" or "[v6]:port". Runs in the foreground until SIGTERM or SIGINT.
 *
 * Environment knobs (for experiments; the daemon takes these from its published ports):
 *   RELAY_MAX_SESSIONS, RELAY_IDLE_TIMEOUT_MS, RELAY_PROXY_PROTOCOL (1 or 2), RELAY_LOG_LEVEL,
 *   PORTPUB_TCP_SPLICE=0 (TCP relay: copy through buffers instead of splice()),
 *   RELAY_BUSY_POLL_USEC (the busy-poll window, as portpubd's --busy-poll=; 0: none).
 *
 * Build by hand, optimized, from the top of the tree:
 *   gcc -std=gnu11 -O2 -D_GNU_SOURCE -Isrc/shared -Isrc/relay src/shared/log.c \
 *       src/shared/sockaddr-util.c src/relay/relay.c src/relay/busy-poll.c src/relay/relay-tcp.c \
 *       src/relay/relay-udp.c bench/relay-standalone.c -lev -o relay-standalone
 * (or: meson setup build-rel -Dbuildtype=release -Dtests=false, build-rel/bench/relay-standalone)
 */

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "busy-poll.h"
#include "log.h"
#include "macro.h"
#include "relay-tcp.h"
#include "relay-udp.h"

static uint64_t env_u64(const char *name) {
        const char *e = getenv(name);

        return e ? strtoull(e, NULL, 10) : 0;
}

static int open_socket(bool tcp, const SockaddrUnion *addr) {
        _cleanup_close_ int fd = -EBADF;

        fd = socket(addr->sa.sa_family,
                    (tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &(int){ 1 }, sizeof(int)) < 0)
                return -errno;
        if (bind(fd, &addr->sa, sockaddr_len(addr)) < 0)
                return -errno;
        if (tcp && listen(fd, 4096) < 0)
                return -errno;
        return TAKE_FD(fd);
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents) {
        ev_break(loop, EVBREAK_ALL);
}

static void on_sessions_changed(void *userdata) {
}

static void on_state_changed(void *userdata, RelayState state, const char *reason) {
        log_info("Relay %s%s%s.", state == RELAY_LISTENING ? "listening" : "paused",
                 *reason ? ": " : "", reason);
}

int main(int argc, char *argv[]) {
        static const RelayCallbacks callbacks = {
                .sessions_changed = on_sessions_changed,
                .state_changed = on_state_changed,
        };
        SockaddrUnion listen_addr, target_addr;
        RelayConfig config = {};
        RelayStats stats = {};
        struct ev_loop *loop;
        ev_signal sigterm, sigint;
        BusyPoll busy_poll;
        struct rlimit rl;
        TcpRelay *tcp_relay = NULL;
        UdpRelay *udp_relay = NULL;
        _cleanup_close_ int fd = -EBADF;
        bool tcp;
        int r;

        log_setup();
        if (argc != 4 || (strcmp(argv[1], "tcp") != 0 && strcmp(argv[1], "udp") != 0)) {
                fprintf(stderr, "Usage: %s tcp|udp LISTEN_ADDR TARGET_ADDR\n", argv[0]);
                return EXIT_FAILURE;
        }
        tcp = strcmp(argv[1], "tcp") == 0;
        if (sockaddr_parse_hostport(argv[2], &listen_addr) < 0 ||
            sockaddr_parse_hostport(argv[3], &target_addr) < 0) {
                log_error("Invalid address '%s' or '%s'.", argv[2], argv[3]);
                return EXIT_FAILURE;
        }
        if (getenv("RELAY_LOG_LEVEL")) {
                r = log_level_from_string(getenv("RELAY_LOG_LEVEL"));
                if (r < 0) {
                        log_error("Invalid RELAY_LOG_LEVEL '%s'.", getenv("RELAY_LOG_LEVEL"));
                        return EXIT_FAILURE;
                }
                log_set_max_level(r);
        }

        /* Many sessions, many fds: as the daemon does. */
        if (getrlimit(RLIMIT_NOFILE, &rl) >= 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
        (void) signal(SIGPIPE, SIG_IGN);

        if (target_addr.sa.sa_family == AF_INET6)
                config.target.guest6 = target_addr;
        else
                config.target.guest4 = target_addr;
        config.target.port = sockaddr_port(&target_addr);
        config.max_sessions = (uint32_t) env_u64("RELAY_MAX_SESSIONS");
        config.idle_timeout_usec = env_u64("RELAY_IDLE_TIMEOUT_MS") * USEC_PER_MSEC;
        config.proxy_protocol = (RelayProxyProtocol) env_u64("RELAY_PROXY_PROTOCOL");

        fd = open_socket(tcp, &listen_addr);
        if (fd < 0) {
                log_error_errno(fd, "Failed to listen on %s: %m", argv[2]);
                return EXIT_FAILURE;
        }

        loop = ev_default_loop(0);
        if (!loop) {
                log_error("Failed to create the event loop.");
                return EXIT_FAILURE;
        }
        ev_signal_init(&sigterm, on_signal, SIGTERM);
        ev_signal_start(loop, &sigterm);
        ev_signal_init(&sigint, on_signal, SIGINT);
        ev_signal_start(loop, &sigint);

        if (tcp)
                r = tcp_relay_new(&tcp_relay, loop, &fd, 1, &config, &stats, &callbacks, NULL);
        else
                r = udp_relay_new(&udp_relay, loop, &fd, 1, &config, &stats, &callbacks, NULL);
        if (r < 0) {
                log_error_errno(r, "Failed to start the relay: %m");
                return EXIT_FAILURE;
        }
        TAKE_FD(fd); /* the relay owns it now */

        busy_poll_start(&busy_poll, loop,
                        getenv("RELAY_BUSY_POLL_USEC")
                                ? (ev_tstamp) env_u64("RELAY_BUSY_POLL_USEC") / 1e6
                                : BUSY_POLL_DEFAULT_USEC / 1e6);
        ev_run(loop, 0);
        busy_poll_stop(&busy_poll);

        tcp_relay_free(tcp_relay);
        udp_relay_free(udp_relay);
        ev_signal_stop(loop, &sigterm);
        ev_signal_stop(loop, &sigint);
        ev_loop_destroy(loop);
        log_info("Relayed %" PRIu64 " sessions (%" PRIu64 " failed, %" PRIu64 " rejected), %" PRIu64
                 " bytes to the target, %" PRIu64 " bytes back.",
                 stats.total, stats.failed, stats.rejected, stats.bytes_to_guest,
                 stats.bytes_from_guest);
        return EXIT_SUCCESS;
}
