/* What the fuzz targets of the daemon's faces share: a network namespace of their own, quiet logs */
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz-util.h"
#include "log.h"

static int loopback_up(void) {
        struct ifreq ifr = {};
        int fd, r = 0;

        fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        (void) snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
        if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
                r = -errno;
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        if (r == 0 && ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
                r = -errno;
        close(fd);
        return r;
}

void fuzz_enter_network_namespace(void) {
        int r;

        if (unshare(CLONE_NEWNET) < 0 && unshare(CLONE_NEWUSER | CLONE_NEWNET) < 0) {
                fprintf(stderr,
                        "Cannot make a network namespace (%s): not fuzzing binds on the host's network, skipping.\n",
                        strerror(errno));
                exit(77);
        }
        r = loopback_up();
        if (r < 0) {
                fprintf(stderr, "Cannot bring lo up in the new network namespace: %s\n",
                        strerror(-r));
                exit(EXIT_FAILURE);
        }
}

void fuzz_quiet_logs(void) {
        const char *level = getenv("FUZZ_LOG_LEVEL");
        int l = level ? log_level_from_string(level) : -1;

        log_set_max_level(l >= 0 ? l : LOG_CRIT);
}

uint8_t fuzz_u8(FuzzInput *in) {
        return in->pos < in->size ? in->data[in->pos++] : 0;
}

uint16_t fuzz_u16(FuzzInput *in) {
        return (uint16_t) (fuzz_u8(in) | (unsigned) fuzz_u8(in) << 8);
}

uint32_t fuzz_u32(FuzzInput *in) {
        return fuzz_u16(in) | (uint32_t) fuzz_u16(in) << 16;
}

uint64_t fuzz_u64(FuzzInput *in) {
        return fuzz_u32(in) | (uint64_t) fuzz_u32(in) << 32;
}

const char *fuzz_string(FuzzInput *in, char *buf, size_t max) {
        size_t n = fuzz_u8(in);

        n = n > max ? max : n;
        if (n > in->size - in->pos)
                n = in->size - in->pos;
        memcpy(buf, in->data + in->pos, n);
        buf[n] = 0;
        in->pos += n;
        return buf;
}

uint32_t fuzz_check_manager(Manager *m) {
        uint32_t n_sandboxes = 0, n_ports = 0, n_sandbox_ports = 0;

        MANAGER_FOREACH_SANDBOX(s, m) {
                uint32_t n = 0;

                fuzz_require(sandbox_id_is_valid(s->id));
                fuzz_require(strlen(s->id) <= SANDBOX_ID_MAX);
                fuzz_require(manager_find_sandbox(m, s->id) == s);
                fuzz_require(s->guest4.sa.sa_family == AF_INET ||
                             s->guest4.sa.sa_family == AF_UNSPEC);
                fuzz_require(s->guest6.sa.sa_family == AF_INET6 ||
                             s->guest6.sa.sa_family == AF_UNSPEC);
                fuzz_require(s->guest4.sa.sa_family != AF_UNSPEC ||
                             s->guest6.sa.sa_family != AF_UNSPEC);
                SANDBOX_FOREACH_PORT(p, s) {
                        fuzz_require(p->sandbox == s);
                        n++;
                }
                fuzz_require(n == s->n_ports);
                fuzz_require(n <= MANAGER_PORTS_PER_SANDBOX_MAX);
                n_sandbox_ports += n;
                n_sandboxes++;
        }
        MANAGER_FOREACH_PORT(p, m) {
                fuzz_require(p->serial != 0);
                fuzz_require(manager_find_port_by_serial(m, p->serial) == p);
                fuzz_require(manager_find_port(m, p->proto, p->host_address, p->host_port) == p);
                fuzz_require(p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP);
                fuzz_require(p->host_port >= 1 && p->guest_port >= 1);
                fuzz_require(p->max_sessions >= 1 && p->max_sessions <= MANAGER_MAX_SESSIONS_MAX);
                fuzz_require(p->idle_timeout_usec <= RELAY_IDLE_TIMEOUT_MAX_USEC);
                fuzz_require(p->proto == IPPROTO_TCP || p->idle_timeout_usec > 0);
                fuzz_require(manager_find_sandbox(m, p->sandbox->id) == p->sandbox);
                n_ports++;
        }
        fuzz_require(n_sandboxes == manager_n_sandboxes(m));
        fuzz_require(n_ports == manager_n_ports(m));
        fuzz_require(n_sandbox_ports == n_ports);
        fuzz_require(n_sandboxes <= MANAGER_SANDBOXES_MAX && n_ports <= MANAGER_PORTS_MAX);
        return n_ports;
}

/* A check or a lookup answered from the loop: an ev_timer of 0 s, fired at the next iteration. */
typedef struct FuzzPending {
        ev_timer timer;
        struct FuzzPending **list, *next;
        auth_done_t auth_done;
        guest_resolve_done_t resolve_done;
        void *userdata;
        FuzzResolver *resolver;
        char sandbox_id[SANDBOX_ID_MAX + 1];
} FuzzPending;

static void pending_free(FuzzPending *p, struct ev_loop *loop) {
        for (FuzzPending **i = p->list; *i; i = &(*i)->next)
                if (*i == p) {
                        *i = p->next;
                        break;
                }
        ev_timer_stop(loop, &p->timer);
        free(p);
}

static void pending_fire(struct ev_loop *loop, ev_timer *w, int revents) {
        FuzzPending *p = w->data;
        auth_done_t auth_done = p->auth_done;
        guest_resolve_done_t resolve_done = p->resolve_done;
        void *userdata = p->userdata;
        SockaddrUnion g4 = {}, g6 = {};
        int r = 0;

        if (resolve_done) {
                r = p->resolver->answer(p->resolver->userdata, p->sandbox_id, &g4, &g6);
                if (r == 0 && g4.sa.sa_family == AF_UNSPEC && g6.sa.sa_family == AF_UNSPEC)
                        r = GUEST_RESOLVE_UNKNOWN;
        }
        /* Gone before the answer: done may start new checks. */
        pending_free(p, loop);
        if (auth_done)
                auth_done(userdata, true, "");
        else
                resolve_done(userdata, r, &g4, &g6,
                             r == GUEST_RESOLVE_UNKNOWN ? "No such machine (fuzz resolver)"
                             : r != 0 ? "Machine registry unavailable (fuzz resolver)"
                                      : "");
}

static FuzzPending *pending_new(struct ev_loop *loop, FuzzPending **list, void *userdata) {
        FuzzPending *p = calloc(1, sizeof *p);

        if (!p)
                return NULL;
        p->list = list;
        p->next = *list;
        *list = p;
        p->userdata = userdata;
        ev_timer_init(&p->timer, pending_fire, 0., 0.);
        p->timer.data = p;
        ev_timer_start(loop, &p->timer);
        return p;
}

static int fuzz_check(Authorizer *a, const AuthQuery *q, auth_done_t done, void *userdata,
                      char *reason, size_t size, void **ret_pending) {
        FuzzAuthorizer *f = (FuzzAuthorizer *) a;
        FuzzPending *p;

        if (!f->pending)
                return AUTH_ALLOW;
        p = pending_new(f->loop, &f->checks, userdata);
        if (!p)
                return -ENOMEM;
        p->auth_done = done;
        *ret_pending = p;
        return AUTH_PENDING;
}

static void fuzz_check_cancel(Authorizer *a, void *pending) {
        pending_free(pending, ((FuzzAuthorizer *) a)->loop);
}

static const AuthorizerOps fuzz_authorizer_ops = { .check = fuzz_check, .cancel = fuzz_check_cancel };

void fuzz_authorizer_init(FuzzAuthorizer *a, struct ev_loop *loop) {
        *a = (FuzzAuthorizer){ .authorizer.ops = &fuzz_authorizer_ops, .loop = loop };
}

static int fuzz_resolve(GuestResolver *g, const char *sandbox_id, guest_resolve_done_t done,
                        void *userdata, void **ret_pending) {
        FuzzResolver *f = (FuzzResolver *) g;
        FuzzPending *p;

        /* The core asks only about valid ids. */
        fuzz_require(sandbox_id_is_valid(sandbox_id));
        p = pending_new(f->loop, &f->lookups, userdata);
        if (!p)
                return -ENOMEM;
        p->resolve_done = done;
        p->resolver = f;
        (void) snprintf(p->sandbox_id, sizeof p->sandbox_id, "%s", sandbox_id);
        *ret_pending = p;
        return 1;
}

static void fuzz_resolve_cancel(GuestResolver *g, void *pending) {
        pending_free(pending, ((FuzzResolver *) g)->loop);
}

static const GuestResolverOps fuzz_resolver_ops = { .resolve = fuzz_resolve,
                                                    .cancel = fuzz_resolve_cancel };

void fuzz_resolver_init(FuzzResolver *g, struct ev_loop *loop) {
        *g = (FuzzResolver){ .resolver.ops = &fuzz_resolver_ops, .loop = loop };
}

int fuzz_guest_answer(uint8_t choice, SockaddrUnion *guest4, SockaddrUnion *guest6) {
        switch (choice % 5) {
        case 0:
                return GUEST_RESOLVE_UNKNOWN;
        case 1:
                return GUEST_RESOLVE_UNAVAILABLE;
        case 2:
                return sockaddr_parse_ip("127.0.0.2", guest4);
        case 3:
                return sockaddr_parse_ip("::1", guest6);
        default:
                (void) sockaddr_parse_ip("127.0.0.3", guest4);
                return sockaddr_parse_ip("fd00::3", guest6);
        }
}

unsigned fuzz_pending(const FuzzAuthorizer *a, const FuzzResolver *g) {
        unsigned n = 0;

        for (const FuzzPending *p = a ? a->checks : NULL; p; p = p->next)
                n++;
        for (const FuzzPending *p = g ? g->lookups : NULL; p; p = p->next)
                n++;
        return n;
}

struct ev_loop *fuzz_setup(FuzzAuthorizer *a, FuzzResolver *g,
                           int (*answer)(void *userdata, const char *sandbox_id,
                                         SockaddrUnion *guest4, SockaddrUnion *guest6)) {
        struct ev_loop *loop;

        fuzz_enter_network_namespace();
        fuzz_quiet_logs();
        loop = ev_default_loop(EVFLAG_AUTO);
        fuzz_require(loop);
        fuzz_authorizer_init(a, loop);
        fuzz_resolver_init(g, loop);
        g->answer = answer;
        return loop;
}

void fuzz_require_failed(const char *expr, const char *file, int line) {
        fprintf(stderr, "%s:%d: check failed: %s\n", file, line, expr);
        abort();
}
