/* The state file: the publications, kept across a restart
 *
 * JSON (json-c), written after every change and before the reply that reports it: a temporary
 * file beside the real one, fsync, rename over it, fsync of the directory, so a crash leaves the
 * old file or the new one, never half of one. Read at start: every sandbox and port is
 * published again with its serial (so its object path), owner, options and guest addresses. A
 * port that cannot be bound again stays, in State failed, and is retried. A file that cannot be
 * parsed is set aside as STATE.corrupt-<UTC time> and the daemon starts empty; an entry that is
 * invalid is skipped and logged, the rest restored. The file lives on /run (tmpfs): the write
 * costs microseconds, which is why it may happen on the loop. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "manager-internal.h"

#define STATE_VERSION 1
/* Far beyond 4096 sandboxes and 65536 ports; a larger file is not ours. */
#define STATE_SIZE_MAX (64 * 1024 * 1024)

static json_object *guest_addresses_to_json(const Sandbox *s) {
        json_object *a = json_object_new_array();
        char buf[INET6_ADDRSTRLEN];

        if (!a)
                return NULL;
        if (s->guest4.sa.sa_family != AF_UNSPEC &&
            json_object_array_add(a, json_object_new_string(
                                             sockaddr_format_ip(&s->guest4, buf, sizeof buf))) < 0)
                goto fail;
        if (s->guest6.sa.sa_family != AF_UNSPEC &&
            json_object_array_add(a, json_object_new_string(
                                             sockaddr_format_ip(&s->guest6, buf, sizeof buf))) < 0)
                goto fail;
        return a;
fail:
        json_object_put(a);
        return NULL;
}

/* json_object_object_add() takes the value also when NULL: check the value, not the add. */
static int add(json_object *o, const char *key, json_object *v) {
        if (!v)
                return -ENOMEM;
        return json_object_object_add(o, key, v) < 0 ? -ENOMEM : 0;
}

static json_object *port_to_json(const Port *p) {
        json_object *o = json_object_new_object();
        int r = o ? 0 : -ENOMEM;

        if (r >= 0)
                r = add(o, "serial", json_object_new_uint64(p->serial));
        if (r >= 0)
                r = add(o, "protocol", json_object_new_string(p->protocol));
        if (r >= 0)
                r = add(o, "host_address", json_object_new_string(p->host_address));
        if (r >= 0)
                r = add(o, "host_port", json_object_new_int(p->host_port));
        if (r >= 0)
                r = add(o, "guest_port", json_object_new_int(p->guest_port));
        if (r >= 0)
                r = add(o, "idle_timeout_usec", json_object_new_uint64(p->idle_timeout_usec));
        if (r >= 0)
                r = add(o, "max_sessions", json_object_new_uint64(p->max_sessions));
        if (r >= 0)
                r = add(o, "proxy_protocol", json_object_new_string(p->proxy_protocol));
        if (r >= 0 && p->caller)
                r = add(o, "caller",
                        json_object_new_string(p->caller->bus_name ? p->caller->bus_name
                                                                   : p->caller->label));
        if (r < 0) {
                json_object_put(o);
                return NULL;
        }
        return o;
}

static json_object *sandbox_to_json(Sandbox *s) {
        json_object *o = json_object_new_object(), *ports = json_object_new_array();
        int r = o && ports ? 0 : -ENOMEM;

        if (r >= 0)
                r = add(o, "id", json_object_new_string(s->id));
        if (r >= 0)
                r = add(o, "owner", json_object_new_uint64(s->owner));
        if (r >= 0)
                r = add(o, "machine", json_object_new_boolean(s->machine));
        if (r >= 0)
                r = add(o, "guest_addresses", guest_addresses_to_json(s));
        SANDBOX_FOREACH_PORT(p, s) {
                if (r >= 0)
                        r = json_object_array_add(ports, port_to_json(p));
        }
        if (r >= 0)
                r = add(o, "ports", TAKE_PTR(ports));
        json_object_put(ports);
        if (r < 0) {
                json_object_put(o);
                return NULL;
        }
        return o;
}

static int write_all(int fd, const char *buf, size_t n) {
        while (n > 0) {
                ssize_t k = write(fd, buf, n);

                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                buf += k;
                n -= (size_t) k;
        }
        return 0;
}

static int fsync_directory_of(const char *path) {
        _cleanup_free_ char *copy = strdup(path);
        _cleanup_close_ int fd = -EBADF;

        if (!copy)
                return -ENOMEM;
        fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        return fsync(fd) < 0 ? -errno : 0;
}

/* A write that failed (out of fds, a full /run) is tried again after 1, 2, 4 ... 60 s until one
 * works, whether or not another change writes it first: until then a restart would lose what
 * changed since the last good write. */
#define STATE_RETRY_MIN 1.0
#define STATE_RETRY_MAX 60.0

static void state_written(Manager *m, int r) {
        if (r >= 0) {
                if (m->state_retry_delay > 0)
                        log_info("Wrote the state file %s after all.", m->state_file);
                m->state_retry_delay = 0;
                ev_timer_stop(m->loop, &m->state_retry);
                return;
        }
        if (m->state_retry_delay <= 0)
                log_error_errno(r,
                                "Failed to write the state file %s, trying again in %.0f s (a restart "
                                "meanwhile loses what changed): %m",
                                m->state_file, STATE_RETRY_MIN);
        else
                log_debug_errno(r, "Failed to write the state file %s again: %m", m->state_file);
        m->state_retry_delay = m->state_retry_delay <= 0
                                       ? STATE_RETRY_MIN
                                       : MIN(m->state_retry_delay * 2, STATE_RETRY_MAX);
        ev_timer_stop(m->loop, &m->state_retry);
        ev_timer_set(&m->state_retry, m->state_retry_delay, 0.);
        ev_timer_start(m->loop, &m->state_retry);
}

void manager_state_retry_cb(struct ev_loop *loop, ev_timer *w, int revents) {
        (void) manager_save_state(w->data);
}

int manager_save_state(Manager *m) {
        json_object *root = NULL, *sandboxes;
        _cleanup_free_ char *tmp = NULL;
        _cleanup_close_ int fd = -EBADF;
        const char *text;
        int r;

        if (!m->state_file)
                return 0;
        root = json_object_new_object();
        sandboxes = json_object_new_array();
        r = root && sandboxes ? 0 : -ENOMEM;
        if (r >= 0)
                r = add(root, "version", json_object_new_int(STATE_VERSION));
        if (r >= 0)
                r = add(root, "next_serial", json_object_new_uint64(m->next_serial));
        MANAGER_FOREACH_SANDBOX(s, m) {
                json_object *o;

                if (r < 0)
                        break;
                o = sandbox_to_json(s);
                r = o ? json_object_array_add(sandboxes, o) : -ENOMEM;
        }
        if (r >= 0)
                r = add(root, "sandboxes", TAKE_PTR(sandboxes));
        json_object_put(sandboxes);
        if (r < 0)
                goto finish;
        text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY |
                                                            JSON_C_TO_STRING_NOSLASHESCAPE);
        if (!text || asprintf(&tmp, "%s.tmp", m->state_file) < 0) {
                tmp = NULL;
                r = -ENOMEM;
                goto finish;
        }
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) {
                r = -errno;
                goto finish;
        }
        r = write_all(fd, text, strlen(text));
        if (r >= 0)
                r = write_all(fd, "\n", 1);
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        if (r >= 0 && rename(tmp, m->state_file) < 0)
                r = -errno;
        if (r >= 0)
                r = fsync_directory_of(m->state_file);
        if (r < 0)
                (void) unlink(tmp);
finish:
        json_object_put(root);
        state_written(m, r);
        return r;
}

/* Reading */

static bool get(json_object *o, const char *key, json_type type, json_object **ret) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, type))
                return false;
        *ret = v;
        return true;
}

static bool get_u64(json_object *o, const char *key, uint64_t max, uint64_t *ret) {
        json_object *v;
        int64_t i;

        if (!get(o, key, json_type_int, &v))
                return false;
        /* Negative numbers are not ours; json-c keeps large unsigned ones unsigned. */
        i = json_object_get_int64(v);
        if (i < 0 && json_object_get_uint64(v) <= INT64_MAX)
                return false;
        *ret = json_object_get_uint64(v);
        return *ret <= max;
}

static const char *get_str(json_object *o, const char *key) {
        json_object *v;

        return get(o, key, json_type_string, &v) ? json_object_get_string(v) : NULL;
}

/* Callers of caller-bound ports, by bus name, while restoring: one Caller per name. */
typedef struct RestoredCaller {
        Caller *caller;
        struct RestoredCaller *next;
} RestoredCaller;

static Caller *restored_caller(RestoredCaller **list, const char *name, uid_t uid) {
        RestoredCaller *rc;

        for (rc = *list; rc; rc = rc->next)
                if (strcmp(rc->caller->bus_name, name) == 0)
                        return rc->caller;
        rc = calloc(1, sizeof *rc);
        if (!rc)
                return NULL;
        if (caller_new(&rc->caller, uid, 0, name) < 0 || caller_set_bus_name(rc->caller, name) < 0) {
                caller_unref(rc->caller);
                free(rc);
                return NULL;
        }
        rc->next = *list;
        *list = rc;
        return rc->caller;
}

static int restore_port(Manager *m, Sandbox *s, json_object *o, RestoredCaller **callers,
                        unsigned *ret_failed) {
        const char *protocol = get_str(o, "protocol"), *addr = get_str(o, "host_address");
        const char *proxy = get_str(o, "proxy_protocol"), *caller_name = get_str(o, "caller");
        uint64_t serial, host_port, guest_port, idle, max_sessions;
        PortOptions opts = { .has_idle_timeout = true, .has_max_sessions = true };
        Caller *caller = NULL;
        ManagerError e;
        PortSpec spec;
        Port *p;
        int r;

        if (!protocol || !addr || !proxy || !get_u64(o, "serial", UINT64_MAX - 1, &serial) ||
            serial == 0 || !get_u64(o, "host_port", 65535, &host_port) || host_port == 0 ||
            !get_u64(o, "guest_port", 65535, &guest_port) || guest_port == 0 ||
            !get_u64(o, "idle_timeout_usec", RELAY_IDLE_TIMEOUT_MAX_USEC, &idle) ||
            !get_u64(o, "max_sessions", MANAGER_MAX_SESSIONS_MAX, &max_sessions) ||
            max_sessions == 0 || manager_parse_proxy_protocol(proxy, &opts.proxy_protocol) < 0)
                return log_warning_errno(EINVAL,
                                         "State file: a port of sandbox '%s' is malformed, skipping it.",
                                         s->id);
        r = manager_parse_port_spec(protocol, addr, (uint16_t) host_port, (uint16_t) guest_port,
                                    true, &spec, &e);
        if (r != 0 || strcmp(spec.host_address, addr) != 0)
                return log_warning_errno(EINVAL, "State file: %s, skipping it.",
                                         r != 0 ? e.message : "a host address is not normalized");
        if ((spec.proto == IPPROTO_UDP && (idle == 0 || opts.proxy_protocol != RELAY_PROXY_NONE)))
                return log_warning_errno(
                        EINVAL,
                        "State file: udp '%s' port %u of sandbox '%s' has TCP options, skipping it.",
                        addr, spec.host_port, s->id);
        if (manager_find_port(m, spec.proto, spec.host_address, spec.host_port) ||
            manager_find_port_by_serial(m, serial))
                return log_warning_errno(EEXIST,
                                         "State file: %s '%s' port %u (serial %" PRIu64
                                         ") is listed twice, skipping it.",
                                         protocol, addr, spec.host_port, serial);
        if (m->n_ports >= MANAGER_PORTS_MAX || s->n_ports >= MANAGER_PORTS_PER_SANDBOX_MAX)
                return log_warning_errno(ENOSPC,
                                         "State file: too many ports, skipping %s '%s' port %u.",
                                         protocol, addr, spec.host_port);
        opts.idle_timeout_usec = idle;
        opts.max_sessions = (uint32_t) max_sessions;
        if (caller_name) {
                /* A varlink connection (or anything but a bus peer) does not outlive a restart:
                 * its caller is gone, and so is the port. */
                if (caller_name[0] != ':') {
                        log_info("State file: %s '%s' port %u was bound to " QUOTE_FMT
                                 ", which the restart ended; not restored.",
                                 protocol, addr, spec.host_port, QUOTE(caller_name));
                        return 1;
                }
                caller = restored_caller(callers, caller_name, s->owner);
                if (!caller)
                        return -ENOMEM;
                opts.bind_to_caller = true;
        }
        r = port_new(&p, m, s, caller, serial, &spec, NULL, &opts);
        if (r < 0)
                return r;
        port_link(m, s, p);
        r = port_bind_and_start(p, &e);
        if (r < 0 && r != -ENOMEM && r != -EIO)
                r = manager_fail(&e, MANAGER_E_FAILED, "%s", strerror(-r));
        if (r != 0) {
                log_warning("State file: %s; it stays, in State failed, and is tried again.",
                            e.message);
                port_fail(p, e.message);
                (*ret_failed)++;
        }
        return 0;
}

static int restore_sandbox(Manager *m, json_object *o, RestoredCaller **callers, unsigned *n_ports,
                           unsigned *n_failed) {
        const char *id = get_str(o, "id");
        json_object *guests, *ports, *machine;
        SockaddrUnion g4 = {}, g6 = {};
        uint64_t owner;
        ManagerError e;
        Sandbox *s;
        int r;

        if (!id || !sandbox_id_is_valid(id) || !get_u64(o, "owner", UINT32_MAX, &owner) ||
            !get(o, "machine", json_type_boolean, &machine) ||
            !get(o, "guest_addresses", json_type_array, &guests) ||
            !get(o, "ports", json_type_array, &ports))
                return log_warning_errno(EINVAL,
                                         "State file: a sandbox ('" QUOTE_FMT
                                         "') is malformed, skipping it.",
                                         QUOTE(id ? id : ""));
        if (manager_find_sandbox(m, id))
                return log_warning_errno(EEXIST,
                                         "State file: sandbox '%s' is listed twice, skipping it.",
                                         id);
        if (m->n_sandboxes >= MANAGER_SANDBOXES_MAX)
                return log_warning_errno(ENOSPC, "State file: too many sandboxes, skipping '%s'.",
                                         id);
        for (size_t i = 0; i < json_object_array_length(guests); i++) {
                json_object *a = json_object_array_get_idx(guests, i);

                if (!json_object_is_type(a, json_type_string) || i >= 2 ||
                    manager_parse_guest_address(json_object_get_string(a), &g4, &g6, &e) != 0)
                        return log_warning_errno(
                                EINVAL,
                                "State file: sandbox '%s' has invalid guest addresses, skipping it.",
                                id);
        }
        if (g4.sa.sa_family == AF_UNSPEC && g6.sa.sa_family == AF_UNSPEC)
                return log_warning_errno(EINVAL,
                                         "State file: sandbox '%s' has no guest address, skipping it.",
                                         id);
        r = sandbox_new(&s, id, (uint32_t) owner);
        if (r < 0)
                return r;
        s->guest4 = g4;
        s->guest6 = g6;
        s->machine = json_object_get_boolean(machine);
        sandbox_link(m, s);
        for (size_t i = 0; i < json_object_array_length(ports); i++) {
                json_object *p = json_object_array_get_idx(ports, i);

                if (!json_object_is_type(p, json_type_object)) {
                        log_warning("State file: a port of sandbox '%s' is malformed, skipping it.",
                                    id);
                        continue;
                }
                r = restore_port(m, s, p, callers, n_failed);
                if (r == -ENOMEM)
                        return r;
                if (r == 0)
                        (*n_ports)++;
        }
        return 0;
}

static void set_aside(const char *path, const char *why) {
        char stamp[32], aside[PATH_MAX];
        time_t now = time(NULL);
        struct tm tm;

        (void) strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", gmtime_r(&now, &tm));
        /* Never over an earlier one: a second bad file in the same second gets a number. */
        for (unsigned i = 0; i < 100; i++) {
                int n = i == 0 ? snprintf(aside, sizeof aside, "%s.corrupt-%s", path, stamp)
                               : snprintf(aside, sizeof aside, "%s.corrupt-%s-%u", path, stamp, i);

                if (n < 0 || (size_t) n >= sizeof aside)
                        break;
                if (renameat2(AT_FDCWD, path, AT_FDCWD, aside, RENAME_NOREPLACE) >= 0) {
                        log_error("The state file %s is unusable (%s): set aside as %s, starting without it.",
                                  path, why, aside);
                        return;
                }
                if (errno != EEXIST)
                        break;
        }
        log_error_errno(errno, "The state file %s is unusable (%s) and could not be set aside: %m",
                        path, why);
}

/* Reads at most STATE_SIZE_MAX bytes; -EFBIG past that. */
static int read_file(const char *path, char **ret, size_t *ret_size) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *buf = NULL;
        size_t n = 0, allocated = 0;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        for (;;) {
                ssize_t k;

                if (n + 1 >= allocated) {
                        size_t na = allocated ? allocated * 2 : 65536;
                        char *t;

                        if (allocated >= STATE_SIZE_MAX)
                                return -EFBIG;
                        t = realloc(buf, na);
                        if (!t)
                                return -ENOMEM;
                        buf = t;
                        allocated = na;
                }
                k = read(fd, buf + n, allocated - n - 1);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                if (k == 0)
                        break;
                n += (size_t) k;
        }
        buf[n] = 0;
        *ret = TAKE_PTR(buf);
        *ret_size = n;
        return 0;
}

int manager_restore_state_text(Manager *m, const char *text, size_t size, char *why, size_t why_size) {
        json_tokener *tok;
        json_object *root, *sandboxes;
        RestoredCaller *callers = NULL;
        unsigned n_ports = 0, n_failed = 0;
        uint64_t next_serial, version;
        int r = 0;

        tok = json_tokener_new_ex(32);
        if (!tok)
                return -ENOMEM;
        root = json_tokener_parse_ex(tok, text, (int) MIN(size, (size_t) INT32_MAX));
        if (!root || json_tokener_get_error(tok) != json_tokener_success ||
            json_tokener_get_parse_end(tok) != size) {
                /* Trailing white space is fine; anything else after the object is not. */
                bool rest_blank = root && json_tokener_get_error(tok) == json_tokener_success;

                for (size_t i = root ? json_tokener_get_parse_end(tok) : size;
                     rest_blank && i < size; i++)
                        rest_blank = text[i] == ' ' || text[i] == '\n' || text[i] == '\t' ||
                                     text[i] == '\r';
                if (!rest_blank) {
                        (void) snprintf(why, why_size, "not JSON: %s",
                                        root ? "data after the object"
                                             : json_tokener_error_desc(json_tokener_get_error(tok)));
                        json_object_put(root);
                        json_tokener_free(tok);
                        return 1;
                }
        }
        json_tokener_free(tok);
        if (!json_object_is_type(root, json_type_object) ||
            !get_u64(root, "version", UINT32_MAX, &version) || version != STATE_VERSION ||
            !get_u64(root, "next_serial", UINT64_MAX - 1, &next_serial) ||
            !get(root, "sandboxes", json_type_array, &sandboxes)) {
                (void) snprintf(why, why_size, "not a version %d portpubd state", STATE_VERSION);
                json_object_put(root);
                return 1;
        }
        m->next_serial = MAX(m->next_serial, next_serial);
        for (size_t i = 0; i < json_object_array_length(sandboxes); i++) {
                json_object *o = json_object_array_get_idx(sandboxes, i);

                if (!json_object_is_type(o, json_type_object)) {
                        log_warning("State file: a sandbox is malformed, skipping it.");
                        continue;
                }
                r = restore_sandbox(m, o, &callers, &n_ports, &n_failed);
                if (r == -ENOMEM)
                        break;
                r = 0;
        }
        while (callers) {
                RestoredCaller *next = callers->next;

                caller_unref(callers->caller);
                free(callers);
                callers = next;
        }
        json_object_put(root);
        if (r < 0)
                return r;
        log_info("Restored %u sandboxes and %u ports from the state file%s.", m->n_sandboxes,
                 n_ports, n_failed > 0 ? " (some could not be bound again: State failed)" : "");
        return 0;
}

int manager_restore_state(Manager *m) {
        _cleanup_free_ char *text = NULL;
        char why[256];
        size_t size = 0;
        int r;

        if (!m->state_file)
                return 0;
        r = read_file(m->state_file, &text, &size);
        if (r == -ENOENT)
                return 0;
        if (r == -EFBIG) {
                set_aside(m->state_file, "larger than 64 MiB");
                return 0;
        }
        if (r == -ENOMEM)
                return log_oom();
        if (r < 0) {
                /* A directory, a symlink, a file we may not read: not ours to use. */
                set_aside(m->state_file, strerror(-r));
                return 0;
        }
        r = manager_restore_state_text(m, text, size, why, sizeof why);
        if (r > 0) {
                set_aside(m->state_file, why);
                return 0;
        }
        return r;
}
