/* io.portpub.publisher1 against the real daemon: methods, errors, protocol, both faces, hostile
 * clients, authorization, --no-bus and a socket systemd passes */

/*
 * The client is our own: AF_UNIX, NUL-framed JSON, json-c to read the replies. Calls are written
 * with single quotes for readability ("{'sandbox':'web'}") and sent with double ones.
 *
 * Clients of another uid are this binary run again ("--varlink-client", below), switched to uid
 * 65534 between fork and exec, one connection per call, printing each reply on a line. Daemons
 * that cannot go through testlib (no bus, another uid, systemd-socket-activate in front) are
 * spawned here and handed to testlib's TestDaemon for stopping and cleaning up.
 *
 * The hostile-client tests keep a well-behaved client (a thread with a connection of its own)
 * calling GetStatus the whole time and report its worst round trip and the daemon's RSS.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"
#include "varlink.h" /* the server's limits, VARLINK_MESSAGE_MAX and the connection limits */

#define IFACE "io.portpub.publisher1"
#define VL_ERROR(name) IFACE "." name
#define INVALID_PARAMETER "org.varlink.service.InvalidParameter"
#define TIMEOUT_MS 10000
#define STRANGER 65534
#define PORTS_PER_CALL_MAX 1024 /* MANAGER_PORTS_PER_CALL_MAX */
#define SETUP_FAILED 126 /* a child's exit status when it could not become the stranger */

G_DEFINE_AUTOPTR_CLEANUP_FUNC(json_object, json_object_put)

/* ---- JSON ------------------------------------------------------------------------------------ */

/* "a.b[2].c": NULL when any step is missing. */
static json_object *jget(json_object *o, const char *path) {
        const char *p = path;

        while (o && *p) {
                size_t n = strcspn(p, ".[");

                if (n > 0) {
                        g_autofree char *key = g_strndup(p, n);
                        json_object *v = NULL;

                        if (!json_object_is_type(o, json_type_object) ||
                            !json_object_object_get_ex(o, key, &v))
                                return NULL;
                        o = v;
                        p += n;
                }
                while (o && *p == '[') {
                        char *end;
                        unsigned long i = strtoul(p + 1, &end, 10);

                        g_assert_true(*end == ']');
                        if (!json_object_is_type(o, json_type_array) ||
                            i >= json_object_array_length(o))
                                return NULL;
                        o = json_object_array_get_idx(o, i);
                        p = end + 1;
                }
                if (*p == '.')
                        p++;
        }
        return o;
}

static json_object *jneed(json_object *o, const char *path, json_type type) {
        json_object *v = jget(o, path);

        if (!v || !json_object_is_type(v, type))
                g_error("%s: missing or not a %s in %s", path, json_type_to_name(type),
                        json_object_to_json_string(o));
        return v;
}

static const char *jstr(json_object *o, const char *path) {
        return json_object_get_string(jneed(o, path, json_type_string));
}

static gint64 jint(json_object *o, const char *path) {
        return json_object_get_int64(jneed(o, path, json_type_int));
}

static gboolean jbool(json_object *o, const char *path) {
        return json_object_get_boolean(jneed(o, path, json_type_boolean));
}

static size_t jlen(json_object *o, const char *path) {
        return json_object_array_length(jneed(o, path, json_type_array));
}

/* The object has exactly these keys (NULL-terminated). */
static void assert_keys(json_object *o, ...) {
        va_list ap;
        int n = 0;

        g_assert_true(json_object_is_type(o, json_type_object));
        va_start(ap, o);
        for (const char *k; (k = va_arg(ap, const char *));) {
                if (!json_object_object_get_ex(o, k, NULL))
                        g_error("no '%s' in %s", k, json_object_to_json_string(o));
                n++;
        }
        va_end(ap);
        if (json_object_object_length(o) != n)
                g_error("expected %d keys, got %s", n, json_object_to_json_string(o));
}

static void assert_port_key(json_object *key, const char *proto, const char *addr, gint64 port) {
        assert_keys(key, "protocol", "hostAddress", "hostPort", NULL);
        g_assert_cmpstr(jstr(key, "protocol"), ==, proto);
        g_assert_cmpstr(jstr(key, "hostAddress"), ==, addr);
        g_assert_cmpint(jint(key, "hostPort"), ==, port);
}

/* ---- a raw varlink client -------------------------------------------------------------------- */

typedef struct VClient {
        int fd;
        GByteArray *in; /* read, not yet split at a NUL */
} VClient;

/* Blocking, with 10 s send/receive timeouts (a connect waits that long for room in the backlog). */
static int vl_socket_connect(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct timeval tv = { .tv_sec = TIMEOUT_MS / 1000 };
        int fd, e;

        if (strlen(path) >= sizeof sa.sun_path)
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        (void) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        (void) setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (connect(fd, (struct sockaddr *) &sa, sizeof sa) < 0) {
                e = errno;
                close(fd);
                return -e;
        }
        return fd;
}

static VClient *vc_new_fd(int fd) {
        VClient *c = g_new0(VClient, 1);

        c->fd = fd;
        c->in = g_byte_array_new();
        return c;
}

static VClient *vc_new(const char *path) {
        int fd = vl_socket_connect(path);

        if (fd < 0)
                g_error("cannot connect to %s: %s", path, g_strerror(-fd));
        return vc_new_fd(fd);
}

static void vc_free(VClient *c) {
        if (!c)
                return;
        if (c->fd >= 0)
                close(c->fd);
        g_byte_array_unref(c->in);
        g_free(c);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(VClient, vc_free)

/* 0, or -errno (EPIPE, ECONNRESET once the daemon closed). No asserts: threads use it. */
static int vc_write_raw(VClient *c, const void *data, size_t len) {
        const char *p = data;

        while (len > 0) {
                ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                p += n;
                len -= (size_t) n;
        }
        return 0;
}

/* The message as a string (NUL not included); 0 on timeout, -1 on EOF or error. */
static int vc_read_raw(VClient *c, guint timeout_ms, char **ret) {
        gint64 deadline = g_get_monotonic_time() + (gint64) timeout_ms * 1000;

        for (;;) {
                /* An empty GByteArray may have no data at all. */
                guint8 *nul = c->in->len ? memchr(c->in->data, 0, c->in->len) : NULL;
                struct pollfd p = { .fd = c->fd, .events = POLLIN };
                gint64 left = deadline - g_get_monotonic_time();
                char buf[65536];
                ssize_t n;

                if (nul) {
                        size_t len = (size_t) (nul - c->in->data);

                        *ret = g_strndup((const char *) c->in->data, len);
                        g_byte_array_remove_range(c->in, 0, (guint) len + 1);
                        return 1;
                }
                if (left <= 0)
                        return 0;
                if (poll(&p, 1, (int) (left / 1000) + 1) < 0 && errno != EINTR)
                        return -1;
                if (!(p.revents & (POLLIN | POLLHUP | POLLERR)))
                        continue;
                n = recv(c->fd, buf, sizeof buf, MSG_DONTWAIT);
                if (n < 0 && (errno == EINTR || errno == EAGAIN))
                        continue;
                if (n <= 0)
                        return -1;
                g_byte_array_append(c->in, (const guint8 *) buf, (guint) n);
        }
}

static void vc_write(VClient *c, const void *data, size_t len) {
        int r = vc_write_raw(c, data, len);

        if (r < 0)
                g_error("writing to the daemon: %s", g_strerror(-r));
}

/* Our calls use ' for "; none needs a literal '. */
static char *dequote(const char *text) {
        char *s = g_strdup(text);

        g_strdelimit(s, "'", '"');
        return s;
}

/* Sends one message, its NUL added. */
static void vc_send(VClient *c, const char *text) {
        g_autofree char *s = dequote(text);

        vc_write(c, s, strlen(s) + 1);
}

static json_object *parse(const char *text) {
        enum json_tokener_error e;
        json_object *o = json_tokener_parse_verbose(text, &e);

        if (!o || !json_object_is_type(o, json_type_object))
                g_error("not a JSON object (%s): %s", json_tokener_error_desc(e), text);
        return o;
}

static json_object *vc_recv(VClient *c) {
        g_autofree char *text = NULL;
        int r = vc_read_raw(c, TIMEOUT_MS, &text);

        if (r <= 0)
                g_error("no reply from the daemon within %u ms (%s)", TIMEOUT_MS,
                        r == 0 ? "timeout" : "connection closed");
        return parse(text);
}

/* The connection is closed by the daemon within the timeout; what came before is discarded. */
static void vc_expect_eof(VClient *c) {
        for (unsigned i = 0; i < 100000; i++) {
                g_autofree char *text = NULL;
                int r = vc_read_raw(c, TIMEOUT_MS, &text);

                if (r < 0)
                        return;
                if (r == 0)
                        g_error("the daemon did not close the connection within %u ms", TIMEOUT_MS);
        }
        g_error("the daemon kept sending instead of closing the connection");
}

/* {"method": IFACE.method, "parameters": params, extra}; method may name its interface. */
static char *call_text(const char *method, const char *params, const char *extra) {
        return g_strdup_printf("{'method':'%s%s','parameters':%s%s}",
                               strchr(method, '.') ? "" : IFACE ".", method, params ? params : "{}",
                               extra ? extra : "");
}

static json_object *vcall(VClient *c, const char *method, const char *params_format, ...)
        G_GNUC_PRINTF(3, 4);

static json_object *vcall(VClient *c, const char *method, const char *params_format, ...) {
        g_autofree char *params = NULL, *text = NULL;
        va_list ap;

        va_start(ap, params_format);
        params = g_strdup_vprintf(params_format, ap);
        va_end(ap);
        text = call_text(method, params, NULL);
        vc_send(c, text);
        return vc_recv(c);
}

/* The reply's parameters, asserting it is no error. */
static json_object *reply_params(json_object *m) {
        if (jget(m, "error"))
                g_error("expected a reply, got %s", json_object_to_json_string(m));
        return jneed(m, "parameters", json_type_object);
}

/* The error's parameters, asserting its name. */
static json_object *error_params(json_object *m, const char *error) {
        json_object *e = jget(m, "error");

        if (!e || g_strcmp0(json_object_get_string(e), error) != 0)
                g_error("expected %s, got %s", error, json_object_to_json_string(m));
        return jneed(m, "parameters", json_type_object);
}

static char *port_spec(const char *proto, const char *addr, guint port, guint guest_port) {
        return g_strdup_printf("{'protocol':'%s','hostAddress':'%s','hostPort':%u,'guestPort':%u}",
                               proto, addr, port, guest_port);
}

static char *port_key(const char *proto, const char *addr, guint port) {
        return g_strdup_printf("{'protocol':'%s','hostAddress':'%s','hostPort':%u}", proto, addr,
                               port);
}

/* One TCP port on 127.0.0.1 (the kernel picks it) to guest_port on 127.0.0.1; its host port. */
static guint16 publish_one(VClient *c, const char *sandbox, guint guest_port, const char *options) {
        g_autofree char *spec = port_spec("tcp", "127.0.0.1", 0, guest_port);
        g_autoptr(json_object) m = NULL;
        json_object *p;

        m = vcall(c, "PublishPorts", "{'sandbox':'%s','guestAddresses':['127.0.0.1'],'ports':[%s]%s}",
                  sandbox, spec, options ? options : "");
        p = reply_params(m);
        g_assert_cmpuint(jlen(p, "ports"), ==, 1);
        g_assert_cmpint(jint(p, "ports[0].hostPort"), >, 0);
        return (guint16) jint(p, "ports[0].hostPort");
}

static gint64 status_field(VClient *c, const char *field) {
        g_autoptr(json_object) m = vcall(c, "GetStatus", "{}");

        return jint(reply_params(m), field);
}

/* Bytes sent to addr:port come back from the echo guest tagged "guest:". */
static void assert_relays(const char *addr, guint16 port) {
        int fd = test_tcp_connect(addr, port, 5000);

        if (fd < 0)
                g_error("cannot connect to [%s]:%u: %s", addr, port, g_strerror(-fd));
        test_roundtrip(fd, "ping", "guest:ping");
        close(fd);
}

static gboolean host_has_ipv6(void) {
        struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
        int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
        gboolean ok;

        if (fd < 0)
                return FALSE;
        ok = bind(fd, (struct sockaddr *) &sa, sizeof sa) == 0;
        close(fd);
        return ok;
}

/* VmRSS of a process, in kB; 0 when it cannot be read. */
static gsize rss_kb(pid_t pid) {
        g_autofree char *path = g_strdup_printf("/proc/%d/status", (int) pid), *text = NULL;
        const char *line;

        if (!g_file_get_contents(path, &text, NULL, NULL))
                return 0;
        line = strstr(text, "\nVmRSS:");
        return line ? (gsize) g_ascii_strtoull(line + strlen("\nVmRSS:"), NULL, 10) : 0;
}

static gboolean daemon_alive(TestDaemon *d) {
        return d->pid > 0 && !test_daemon_wait(d, 0);
}

/* ---- clients of another uid ----------------------------------------------------------------- */

/* argv: PROGRAM --varlink-client SOCKET CALL...: each CALL on a connection of its own; prints
 * "I JSON" for each reply to call I, reading a "more" call's replies up to "initialized". */
static int client_main(int argc, char *argv[]) {
        printf("whoami %u %u %d\n", (unsigned) getuid(), (unsigned) getgid(), getgroups(0, NULL));
        for (int i = 3; i < argc; i++) {
                int fd = vl_socket_connect(argv[2]);
                VClient *c;

                if (fd < 0) {
                        fprintf(stderr, "client: cannot connect to %s: %s\n", argv[2], strerror(-fd));
                        return 1;
                }
                c = vc_new_fd(fd);
                if (vc_write_raw(c, argv[i], strlen(argv[i]) + 1) < 0)
                        return 1;
                for (unsigned k = 0; k < 10000; k++) {
                        g_autofree char *text = NULL;
                        g_autoptr(json_object) m = NULL;
                        json_object *more, *event;

                        if (vc_read_raw(c, TIMEOUT_MS, &text) <= 0) {
                                fprintf(stderr, "client: no reply to %s\n", argv[i]);
                                return 1;
                        }
                        printf("%d %s\n", i - 3, text);
                        m = json_tokener_parse(text);
                        more = jget(m, "continues");
                        event = jget(m, "parameters.event");
                        if (!more || !json_object_get_boolean(more) ||
                            (event && strcmp(json_object_get_string(event), "initialized") == 0))
                                break;
                }
                vc_free(c);
        }
        return fflush(stdout) == 0 ? 0 : 1;
}

/* Between fork and exec, in the child: only async-signal-safe calls. */
static void become_stranger(gpointer data) {
        const gid_t gid = STRANGER;
        const uid_t uid = STRANGER;

        if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0)
                _exit(SETUP_FAILED);
        /* After the switch: changing credentials clears the parent-death signal. */
        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
}

static void die_with_parent(gpointer data) {
        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
}

typedef struct ClientRun {
        unsigned uid;
        GPtrArray *replies; /* per call: a GPtrArray of json_object */
} ClientRun;

static void client_run_clear(ClientRun *run) {
        g_clear_pointer(&run->replies, g_ptr_array_unref);
}

static void json_put(gpointer p) {
        json_object_put(p);
}

static void json_array_free(gpointer p) {
        g_ptr_array_unref(p);
}

/* Runs the calls (whole messages, ' for ") as uid 65534 on socket; FALSE when this host cannot
 * switch a child to that uid (the test skips). */
static gboolean run_stranger(const char *socket_path, const char *const *calls, ClientRun *ret) {
        g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GString) out = g_string_new(NULL);
        g_autoptr(GError) error = NULL;
        g_auto(GStrv) lines = NULL;
        gint64 deadline = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;
        guint n_calls = 0;
        GPid pid;
        int fd, status;

        g_ptr_array_add(argv, g_file_read_link("/proc/self/exe", &error));
        g_assert_no_error(error);
        g_ptr_array_add(argv, g_strdup("--varlink-client"));
        g_ptr_array_add(argv, g_strdup(socket_path));
        for (const char *const *c = calls; *c; c++, n_calls++)
                g_ptr_array_add(argv, dequote(*c));
        g_ptr_array_add(argv, NULL);
        g_spawn_async_with_pipes(NULL, (char **) argv->pdata, NULL, G_SPAWN_DO_NOT_REAP_CHILD,
                                 become_stranger, NULL, &pid, NULL, &fd, NULL, &error);
        g_assert_no_error(error);
        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                gint64 left = deadline - g_get_monotonic_time();
                char buf[65536];
                ssize_t n;

                if (left <= 0 || poll(&p, 1, (int) (left / 1000) + 1) <= 0) {
                        kill(pid, SIGKILL);
                        (void) test_wait_pid(pid, 5000, &status);
                        g_error("the client did not finish in time; it said: %s", out->str);
                }
                n = read(fd, buf, sizeof buf);
                if (n < 0 && errno == EINTR)
                        continue;
                g_assert_cmpint(n, >=, 0);
                if (n == 0)
                        break;
                g_string_append_len(out, buf, n);
        }
        close(fd);
        g_assert_true(test_wait_pid(pid, 10000, &status));
        g_spawn_close_pid(pid);
        if (WIFEXITED(status) && WEXITSTATUS(status) == SETUP_FAILED)
                return FALSE;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                g_error("the client failed (status 0x%x); it said: %s", status, out->str);

        *ret = (ClientRun){ .replies = g_ptr_array_new_with_free_func(json_array_free) };
        for (guint i = 0; i < n_calls; i++)
                g_ptr_array_add(ret->replies, g_ptr_array_new_with_free_func(json_put));
        lines = g_strsplit(out->str, "\n", -1);
        for (char **l = lines; *l; l++) {
                char *end;
                guint64 i;

                if (g_str_has_prefix(*l, "whoami ")) {
                        ret->uid = (unsigned) g_ascii_strtoull(*l + strlen("whoami "), NULL, 10);
                        continue;
                }
                if (!**l)
                        continue;
                i = g_ascii_strtoull(*l, &end, 10);
                g_assert_true(*end == ' ' && i < n_calls);
                g_ptr_array_add(ret->replies->pdata[i], parse(end + 1));
        }
        g_assert_cmpuint(ret->uid, ==, STRANGER);
        for (guint i = 0; i < n_calls; i++)
                if (((GPtrArray *) ret->replies->pdata[i])->len == 0)
                        g_error("no reply to call %u: %s", i, calls[i]);
        return TRUE;
}

/* The first reply to call i. */
static json_object *run_reply(const ClientRun *run, guint i) {
        return ((GPtrArray *) run->replies->pdata[i])->pdata[0];
}

/* ---- daemons spawned here -------------------------------------------------------------------- */

/* Starts argv with env added, as testlib would; the TestDaemon is testlib's, for stopping and
 * freeing (varlink is unlinked then). stderr_fd, when given, gets the daemon's stderr. */
static TestDaemon *spawn_daemon(const char *const *args, const char *const *env,
                                GSpawnChildSetupFunc setup, const char *varlink, int *stderr_fd) {
        g_auto(GStrv) envp = g_get_environ();
        g_autoptr(GError) error = NULL;
        TestDaemon *d = g_new0(TestDaemon, 1);

        d->notify_fd = -1;
        d->exit_status = -1;
        d->varlink = g_strdup(varlink);
        envp = g_environ_unsetenv(envp, "NOTIFY_SOCKET");
        for (const char *const *e = env; e && *e; e++) {
                const char *eq = strchr(*e, '=');
                g_autofree char *name = g_strndup(*e, (gsize) (eq - *e));

                envp = g_environ_setenv(envp, name, eq + 1, TRUE);
        }
        g_spawn_async_with_pipes(NULL, (char **) args, envp, G_SPAWN_DO_NOT_REAP_CHILD,
                                 setup ? setup : die_with_parent, NULL, &d->pid, NULL, NULL,
                                 stderr_fd, &error);
        g_assert_no_error(error);
        return d;
}

typedef struct Serving {
        TestDaemon *daemon;
        const char *path;
        gboolean serving, exited;
} Serving;

/* One attempt: a GetStatus on path answered, or the daemon gone. */
static gboolean cond_serving(gpointer data) {
        Serving *w = data;
        int fd = vl_socket_connect(w->path);

        if (fd >= 0) {
                g_autoptr(VClient) c = vc_new_fd(fd);
                g_autofree char *text = call_text("GetStatus", NULL, NULL), *reply = NULL;
                g_autofree char *msg = dequote(text);

                w->serving = vc_write_raw(c, msg, strlen(msg) + 1) == 0 &&
                             vc_read_raw(c, TIMEOUT_MS, &reply) > 0;
        }
        w->exited = !w->serving && !daemon_alive(w->daemon);
        return w->serving || w->exited;
}

/* A daemon serves path once a call there is answered; FALSE when it exited or the time ran out.
 * Its socket appears when it is ready: there is nothing else to wait on. */
static gboolean wait_serving(TestDaemon *d, const char *path, guint timeout_ms) {
        Serving w = { d, path };

        return test_wait_until(cond_serving, &w, timeout_ms) && w.serving;
}

static const char *portpubd(void) {
        const char *p = g_getenv("PORTPUBD");

        g_assert_nonnull(p);
        return p;
}

/* Reads what fd gives until EOF (the process exited) or the timeout. */
static char *read_all(int fd, guint timeout_ms) {
        gint64 deadline = g_get_monotonic_time() + (gint64) timeout_ms * 1000;
        GString *s = g_string_new(NULL);

        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                gint64 left = deadline - g_get_monotonic_time();
                char buf[4096];
                ssize_t n;

                if (left <= 0 || poll(&p, 1, (int) (left / 1000) + 1) <= 0)
                        break;
                n = read(fd, buf, sizeof buf);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                g_string_append_len(s, buf, n);
        }
        return g_string_free(s, FALSE);
}

/* ---- the fixture: a bus, the daemon on it, guests, the daemon's signals ---------------------- */

typedef struct Signal {
        char *member;
        GVariant *params;
} Signal;

static void signal_free(gpointer p) {
        Signal *s = p;

        g_free(s->member);
        g_variant_unref(s->params);
        g_free(s);
}

typedef struct Fixture {
        TestBus *bus;
        TestDaemon *daemon;
        const char *varlink;
        TestEcho *echo; /* TCP on 127.0.0.1, tag "guest:" */
        TestEcho *echo_udp;
        GPtrArray *signals;
        guint subscription;
} Fixture;

static void on_signal(GDBusConnection *conn, const char *sender, const char *path,
                      const char *iface, const char *member, GVariant *params, gpointer data) {
        Fixture *f = data;
        Signal *s = g_new0(Signal, 1);

        s->member = g_strdup(member);
        s->params = g_variant_ref(params);
        g_ptr_array_add(f->signals, s);
}

static void fixture_setup(Fixture *f, gconstpointer data) {
        const TestDaemonOptions *o = data;

        f->bus = test_bus_new();
        f->signals = g_ptr_array_new_with_free_func(signal_free);
        f->subscription =
                g_dbus_connection_signal_subscribe(f->bus->conn, NULL, TEST_MANAGER_IFACE, NULL,
                                                   TEST_MANAGER_PATH, NULL,
                                                   G_DBUS_SIGNAL_FLAGS_NONE, on_signal, f, NULL);
        f->daemon = test_daemon_start_full(f->bus, o);
        f->varlink = f->daemon->varlink;
        g_assert_nonnull(f->varlink);
        f->echo = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, "guest:");
        f->echo_udp = test_echo_new(IPPROTO_UDP, "127.0.0.1", 0, "guest:");
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
        g_dbus_connection_signal_unsubscribe(f->bus->conn, f->subscription);
        g_assert_true(daemon_alive(f->daemon));
        g_assert_cmpint(test_daemon_stop(f->daemon), ==, 0);
        test_daemon_free(f->daemon);
        test_echo_free(f->echo);
        test_echo_free(f->echo_udp);
        g_ptr_array_free(f->signals, TRUE);
        test_bus_free(f->bus);
}

typedef struct SignalMatch {
        Fixture *f;
        const char *member;
        const char *sandbox;
        guint16 host_port; /* 0: any */
        const char *reason; /* PortUnpublished only; NULL: any */
        const char *path; /* the port's object path, when found */
        guint count;
} SignalMatch;

static gboolean signal_matches(SignalMatch *m) {
        m->count = 0;
        for (guint i = 0; i < m->f->signals->len; i++) {
                Signal *s = m->f->signals->pdata[i];
                const char *sandbox, *path, *reason = NULL;
                guint16 port = 0;

                if (strcmp(s->member, m->member) != 0)
                        continue;
                if (g_variant_is_of_type(s->params, G_VARIANT_TYPE("(sssqo)")))
                        g_variant_get(s->params, "(&s&s&sq&o)", &sandbox, NULL, NULL, &port, &path);
                else if (g_variant_is_of_type(s->params, G_VARIANT_TYPE("(sssqos)")))
                        g_variant_get(s->params, "(&s&s&sq&o&s)", &sandbox, NULL, NULL, &port,
                                      &path, &reason);
                else
                        g_variant_get(s->params, "(&s&o)", &sandbox, &path);
                if (strcmp(sandbox, m->sandbox) != 0 || (m->host_port && port != m->host_port) ||
                    (m->reason && g_strcmp0(reason, m->reason) != 0))
                        continue;
                m->path = path;
                m->count++;
        }
        return m->count > 0;
}

static gboolean cond_signal(gpointer data) {
        return signal_matches(data);
}

/* Waits for the daemon's signal; the port's object path (borrowed from the recorded signal). */
static const char *wait_signal(Fixture *f, const char *member, const char *sandbox,
                               guint16 host_port, const char *reason) {
        SignalMatch m = { f, member, sandbox, host_port, reason };

        if (!test_wait_until(cond_signal, &m, TIMEOUT_MS))
                g_error("no %s signal for sandbox '%s' port %u reason %s", member, sandbox,
                        host_port, reason ? reason : "(any)");
        return m.path;
}

/* ---- the well-behaved client ----------------------------------------------------------------- */

#define PROBER_CALLS_MAX 1000000
#define PROBER_RUN_MAX_S 120
#define PROBER_PAUSE_US 1000 /* between calls: a steady client, not a flood */

typedef struct Prober {
        char *path;
        pid_t daemon;
        GThread *thread;
        GMutex lock;
        GCond cond;
        gboolean ready, stop;
        /* read after the join */
        guint64 calls;
        gint64 worst_us, total_us;
        gsize rss_max_kb;
        char *error;
} Prober;

static void prober_sample_rss(Prober *p) {
        gsize kb = rss_kb(p->daemon);

        if (kb > p->rss_max_kb)
                p->rss_max_kb = kb;
}

static gpointer prober_thread(gpointer data) {
        Prober *p = data;
        gint64 deadline = g_get_monotonic_time() + PROBER_RUN_MAX_S * G_USEC_PER_SEC;
        g_autofree char *call = dequote("{'method':'" IFACE ".GetStatus'}");
        int fd = vl_socket_connect(p->path);
        VClient *c = NULL;

        if (fd < 0)
                p->error = g_strdup_printf("cannot connect: %s", g_strerror(-fd));
        else
                c = vc_new_fd(fd);
        for (guint64 i = 0; c && i < PROBER_CALLS_MAX; i++) {
                g_autofree char *reply = NULL;
                gint64 t0 = g_get_monotonic_time(), dt;
                gboolean stop;
                int r;

                if (t0 > deadline) {
                        p->error = g_strdup("ran out of time without being stopped");
                        break;
                }
                if (vc_write_raw(c, call, strlen(call) + 1) < 0) {
                        p->error = g_strdup_printf("call %" G_GUINT64_FORMAT ": write failed", i);
                        break;
                }
                r = vc_read_raw(c, TIMEOUT_MS, &reply);
                if (r <= 0 || !strstr(reply, "\"version\"") || strstr(reply, "\"error\"")) {
                        p->error = g_strdup_printf("call %" G_GUINT64_FORMAT ": %s", i,
                                                   r == 0  ? "no reply within 10 s"
                                                   : r < 0 ? "connection closed"
                                                           : reply);
                        break;
                }
                dt = g_get_monotonic_time() - t0;
                p->worst_us = MAX(p->worst_us, dt);
                p->total_us += dt;
                p->calls++;
                prober_sample_rss(p);

                g_mutex_lock(&p->lock);
                if (!p->ready) {
                        p->ready = TRUE;
                        g_cond_broadcast(&p->cond);
                }
                if (!p->stop)
                        (void) g_cond_wait_until(&p->cond, &p->lock,
                                                 g_get_monotonic_time() + PROBER_PAUSE_US);
                stop = p->stop;
                g_mutex_unlock(&p->lock);
                if (stop)
                        break;
        }
        vc_free(c);
        g_mutex_lock(&p->lock);
        p->ready = TRUE; /* also when it failed: the starter must not wait for nothing */
        g_cond_broadcast(&p->cond);
        g_mutex_unlock(&p->lock);
        return NULL;
}

/* Connected and answered once when this returns. */
static Prober *prober_start(const char *path, pid_t daemon) {
        Prober *p = g_new0(Prober, 1);
        gint64 deadline = g_get_monotonic_time() + TIMEOUT_MS * 1000;

        p->path = g_strdup(path);
        p->daemon = daemon;
        g_mutex_init(&p->lock);
        g_cond_init(&p->cond);
        p->thread = g_thread_new("prober", prober_thread, p);
        g_mutex_lock(&p->lock);
        while (!p->ready)
                if (!g_cond_wait_until(&p->cond, &p->lock, deadline))
                        break;
        g_mutex_unlock(&p->lock);
        g_assert_true(p->ready);
        g_assert_null(p->error);
        return p;
}

/* Stops it, asserts it was answered every time, reports; returns its worst round trip in µs
 * and the daemon's largest VmRSS it saw. */
static gint64 prober_stop(Prober *p, const char *what, gsize rss_before_kb, gsize *ret_rss_max_kb) {
        gint64 worst;

        g_mutex_lock(&p->lock);
        p->stop = TRUE;
        g_cond_broadcast(&p->cond);
        g_mutex_unlock(&p->lock);
        g_thread_join(p->thread);
        prober_sample_rss(p);
        if (p->error)
                g_error("the well-behaved client, during %s: %s", what, p->error);
        g_assert_cmpuint(p->calls, >, 0);
        g_test_message("FIGURES %s: well-behaved client: %" G_GUINT64_FORMAT
                       " calls, worst round trip %.2f ms, mean %.3f ms; daemon VmRSS %zu kB "
                       "before, at most %zu kB during (growth %zd kB)",
                       what, p->calls, p->worst_us / 1000.0,
                       p->total_us / 1000.0 / (double) p->calls, rss_before_kb, p->rss_max_kb,
                       (gssize) p->rss_max_kb - (gssize) rss_before_kb);
        worst = p->worst_us;
        *ret_rss_max_kb = p->rss_max_kb;
        g_mutex_clear(&p->lock);
        g_cond_clear(&p->cond);
        g_free(p->path);
        g_free(p);
        return worst;
}

/* Every round trip of the well-behaved client stays well under the call timeout: it was served
 * throughout, not merely at the end. Far above what it sees (milliseconds; see the FIGURES
 * lines), so that a loaded machine or a sanitizer build does not make it fail. */
#define PROBER_WORST_MAX_US ((gint64) test_scaled_ms(5000) * 1000)
/* The daemon's memory is bounded while a hostile client pushes. (Its AddressSanitizer, in a
 * sanitizer build, keeps no quarantine of freed memory here: see main().) */
#define RSS_GROWTH_MAX_KB (test_under_valgrind() ? RSS_GROWTH_MAX_KB_MEMCHECK : 64 * 1024)
/* memcheck's shadow memory and its queue of freed blocks (20 MB) grow with what is allocated. */
#define RSS_GROWTH_MAX_KB_MEMCHECK (4 * 64 * 1024)

/* ==== tests ==================================================================================== */

/* Every method of the contract on its success path, the reply fields checked. */
static void test_methods(Fixture *f, gconstpointer data) {
        g_autoptr(VClient) c = vc_new(f->varlink);
        g_autofree char *tcp = port_spec("tcp", "127.0.0.1", 0, test_echo_port(f->echo));
        g_autofree char *udp = port_spec("udp", "127.0.0.1", 0, test_echo_port(f->echo_udp));
        g_autofree char *db = port_spec("tcp", "127.0.0.1", 0, 5432);
        g_autoptr(json_object) m = NULL;
        json_object *p, *port;
        gint64 tcp_port, udp_port;
        gboolean seen_web = FALSE, seen_db = FALSE;

        m = vcall(c, "GetStatus", "{}");
        p = reply_params(m);
        assert_keys(p, "version", "sandboxes", "ports", "activeSessions", "totalSessions",
                    "defaultMaxSessions", "defaultUDPIdleTimeoutUSec", NULL);
        g_assert_cmpstr(jstr(p, "version"), !=, "");
        g_assert_cmpint(jint(p, "sandboxes"), ==, 0);
        g_assert_cmpint(jint(p, "ports"), ==, 0);
        g_assert_cmpint(jint(p, "defaultMaxSessions"), >, 0);
        g_assert_cmpint(jint(p, "defaultUDPIdleTimeoutUSec"), >, 0);
        g_clear_pointer(&m, json_object_put);

        /* A new sandbox with its guest address, two ports, options: the reply lists them in the
         * order asked with the host ports the kernel picked. */
        m = vcall(c, "PublishPorts",
                  "{'sandbox':'web','guestAddresses':['127.0.0.1'],'ports':[%s,%s],"
                  "'options':{'maxSessions':7,'idleTimeoutUSec':5000000}}",
                  tcp, udp);
        p = reply_params(m);
        assert_keys(p, "ports", NULL);
        g_assert_cmpuint(jlen(p, "ports"), ==, 2);
        port = jget(p, "ports[0]");
        assert_keys(port, "sandbox", "protocol", "hostAddress", "hostPort", "guestAddress",
                    "guestPort", "listenAddresses", "state", "lastError", "activeSessions",
                    "totalSessions", "rejectedSessions", "failedSessions", "bytesToGuest",
                    "bytesFromGuest", "idleTimeoutUSec", "maxSessions", "proxyProtocol",
                    "bindToCaller", "objectPath", NULL);
        g_assert_cmpstr(jstr(port, "sandbox"), ==, "web");
        g_assert_cmpstr(jstr(port, "protocol"), ==, "tcp");
        g_assert_cmpstr(jstr(port, "hostAddress"), ==, "127.0.0.1");
        tcp_port = jint(port, "hostPort");
        g_assert_cmpint(tcp_port, >, 0);
        g_assert_cmpint(tcp_port, <=, 65535);
        g_assert_cmpstr(jstr(port, "guestAddress"), ==, "127.0.0.1");
        g_assert_cmpint(jint(port, "guestPort"), ==, test_echo_port(f->echo));
        g_assert_cmpuint(jlen(port, "listenAddresses"), ==, 1);
        g_assert_cmpstr(jstr(port, "state"), ==, "listening");
        g_assert_cmpint(jint(port, "maxSessions"), ==, 7);
        g_assert_cmpint(jint(port, "idleTimeoutUSec"), ==, 5000000);
        g_assert_false(jbool(port, "bindToCaller"));
        g_assert_true(g_str_has_prefix(jstr(port, "objectPath"), TEST_MANAGER_PATH "/port/"));
        g_assert_cmpstr(jstr(p, "ports[1].protocol"), ==, "udp");
        g_assert_cmpstr(jstr(p, "ports[1].sandbox"), ==, "web");
        udp_port = jint(p, "ports[1].hostPort");
        g_assert_cmpint(udp_port, >, 0);
        g_assert_cmpint(jint(p, "ports[1].guestPort"), ==, test_echo_port(f->echo_udp));
        g_clear_pointer(&m, json_object_put);
        assert_relays("127.0.0.1", (guint16) tcp_port);
        {
                int fd = test_udp_socket("127.0.0.1");

                test_udp_roundtrip(fd, "127.0.0.1", (guint16) udp_port, "dgram", "guest:dgram");
                close(fd);
        }

        m = vcall(c, "GetSandbox", "{'sandbox':'web'}");
        p = jneed(reply_params(m), "sandbox", json_type_object);
        assert_keys(p, "id", "guestAddresses", "owner", "machine", "ports", "activeSessions",
                    "objectPath", NULL);
        g_assert_cmpstr(jstr(p, "id"), ==, "web");
        g_assert_cmpuint(jlen(p, "guestAddresses"), ==, 1);
        g_assert_cmpstr(jstr(p, "guestAddresses[0]"), ==, "127.0.0.1");
        g_assert_cmpint(jint(p, "owner"), ==, 0);
        g_assert_false(jbool(p, "machine"));
        g_assert_cmpuint(jlen(p, "ports"), ==, 2);
        /* In no particular order. */
        {
                int tcp_at = strcmp(jstr(p, "ports[0].protocol"), "tcp") == 0 ? 0 : 1;
                g_autofree char *tcp_key = g_strdup_printf("ports[%d]", tcp_at);
                g_autofree char *udp_key = g_strdup_printf("ports[%d]", 1 - tcp_at);

                assert_port_key(jget(p, tcp_key), "tcp", "127.0.0.1", tcp_port);
                assert_port_key(jget(p, udp_key), "udp", "127.0.0.1", udp_port);
        }
        g_assert_cmpstr(jstr(p, "objectPath"), ==, TEST_MANAGER_PATH "/sandbox/web");
        g_clear_pointer(&m, json_object_put);

        m = vcall(c, "GetPort", "{'port':{'protocol':'udp','hostAddress':'127.0.0.1','hostPort':%d}}",
                  (int) udp_port);
        p = jneed(reply_params(m), "port", json_type_object);
        g_assert_cmpstr(jstr(p, "protocol"), ==, "udp");
        g_assert_cmpint(jint(p, "hostPort"), ==, udp_port);
        g_assert_cmpint(jint(p, "bytesToGuest"), ==, strlen("dgram"));
        g_clear_pointer(&m, json_object_put);

        m = vcall(c, "PublishPorts", "{'sandbox':'db','guestAddresses':['127.0.0.2'],'ports':[%s]}",
                  db);
        reply_params(m);
        g_clear_pointer(&m, json_object_put);

        m = vcall(c, "ListSandboxes", "{}");
        p = reply_params(m);
        assert_keys(p, "sandboxes", NULL);
        g_assert_cmpuint(jlen(p, "sandboxes"), ==, 2);
        for (size_t i = 0; i < 2; i++) {
                g_autofree char *path = g_strdup_printf("sandboxes[%zu].id", i);

                seen_web |= strcmp(jstr(p, path), "web") == 0;
                seen_db |= strcmp(jstr(p, path), "db") == 0;
        }
        g_assert_true(seen_web && seen_db);
        g_clear_pointer(&m, json_object_put);

        m = vcall(c, "ListPorts", "{}");
        g_assert_cmpuint(jlen(reply_params(m), "ports"), ==, 3);
        g_clear_pointer(&m, json_object_put);
        m = vcall(c, "ListPorts", "{'sandbox':'db'}");
        p = reply_params(m);
        g_assert_cmpuint(jlen(p, "ports"), ==, 1);
        g_assert_cmpstr(jstr(p, "ports[0].sandbox"), ==, "db");
        g_assert_cmpstr(jstr(p, "ports[0].guestAddress"), ==, "127.0.0.2");
        g_assert_cmpint(jint(p, "ports[0].guestPort"), ==, 5432);
        g_clear_pointer(&m, json_object_put);
        g_assert_cmpint(status_field(c, "sandboxes"), ==, 2);
        g_assert_cmpint(status_field(c, "ports"), ==, 3);
        g_assert_cmpint(status_field(c, "totalSessions"), >=, 1);

        /* New addresses: the ports follow. */
        m = vcall(c, "SetGuestAddresses", "{'sandbox':'web','addresses':['127.0.0.3','::1']}");
        assert_keys(reply_params(m), NULL);
        g_clear_pointer(&m, json_object_put);
        m = vcall(c, "GetSandbox", "{'sandbox':'web'}");
        p = reply_params(m);
        g_assert_cmpuint(jlen(p, "sandbox.guestAddresses"), ==, 2);
        g_assert_cmpstr(jstr(p, "sandbox.guestAddresses[0]"), ==, "127.0.0.3");
        g_assert_cmpstr(jstr(p, "sandbox.guestAddresses[1]"), ==, "::1");
        g_clear_pointer(&m, json_object_put);
        m = vcall(c, "GetPort", "{'port':{'protocol':'tcp','hostAddress':'127.0.0.1','hostPort':%d}}",
                  (int) tcp_port);
        g_assert_cmpstr(jstr(reply_params(m), "port.guestAddress"), ==, "127.0.0.3");
        g_clear_pointer(&m, json_object_put);

        m = vcall(c, "UnpublishPorts",
                  "{'sandbox':'web','ports':[{'protocol':'udp','hostAddress':'127.0.0.1','hostPort':%d}]}",
                  (int) udp_port);
        assert_keys(reply_params(m), NULL);
        g_clear_pointer(&m, json_object_put);
        m = vcall(c, "GetPort", "{'port':{'protocol':'udp','hostAddress':'127.0.0.1','hostPort':%d}}",
                  (int) udp_port);
        error_params(m, VL_ERROR("NoSuchPort"));
        g_clear_pointer(&m, json_object_put);
        m = vcall(c, "GetSandbox", "{'sandbox':'web'}");
        g_assert_cmpuint(jlen(reply_params(m), "sandbox.ports"), ==, 1);
        g_clear_pointer(&m, json_object_put);

        m = vcall(c, "RemoveSandbox", "{'sandbox':'db'}");
        assert_keys(reply_params(m), NULL);
        g_clear_pointer(&m, json_object_put);
        m = vcall(c, "GetSandbox", "{'sandbox':'db'}");
        error_params(m, VL_ERROR("NoSuchSandbox"));
        g_clear_pointer(&m, json_object_put);
        g_assert_cmpint(status_field(c, "sandboxes"), ==, 1);
        g_assert_cmpint(status_field(c, "ports"), ==, 1);
}

/* Each error of the contract a daemon on a bus can give, with exactly its parameters; a call
 * that fails publishes nothing. */
static void test_errors(Fixture *f, gconstpointer data) {
        g_autoptr(VClient) c = vc_new(f->varlink);
        g_autoptr(json_object) m = NULL;
        g_autoptr(GString) many = g_string_new(NULL);
        g_autofree char *ok_spec = port_spec("tcp", "127.0.0.1", 0, 80);
        g_autofree char *missing = port_key("tcp", "127.0.0.1", 1);
        g_autofree char *held_spec = NULL, *foreign_spec = NULL, *tnet_spec = NULL;
        const char *no_such_sandbox[] = {
                "GetSandbox",        "{'sandbox':'ghost'}",
                "RemoveSandbox",     "{'sandbox':'ghost'}",
                "SetGuestAddresses", "{'sandbox':'ghost','addresses':['127.0.0.1']}",
                "UnpublishPorts",    "{'sandbox':'ghost','ports':[]}",
                "ListPorts",         "{'sandbox':'ghost'}",
        };
        json_object *p;
        guint16 held, foreign;
        int listener;

        for (size_t i = 0; i < G_N_ELEMENTS(no_such_sandbox); i += 2) {
                m = vcall(c, no_such_sandbox[i], "%s", no_such_sandbox[i + 1]);
                p = error_params(m, VL_ERROR("NoSuchSandbox"));
                assert_keys(p, "sandbox", NULL);
                g_assert_cmpstr(jstr(p, "sandbox"), ==, "ghost");
                g_clear_pointer(&m, json_object_put);
        }

        held = publish_one(c, "holder", 80, NULL);
        m = vcall(c, "GetPort", "{'port':%s}", missing);
        p = error_params(m, VL_ERROR("NoSuchPort"));
        assert_keys(p, "port", NULL);
        assert_port_key(jget(p, "port"), "tcp", "127.0.0.1", 1);
        g_clear_pointer(&m, json_object_put);
        m = vcall(c, "UnpublishPorts", "{'sandbox':'holder','ports':[%s]}", missing);
        p = error_params(m, VL_ERROR("NoSuchPort"));
        assert_keys(p, "port", NULL);
        assert_port_key(jget(p, "port"), "tcp", "127.0.0.1", 1);
        g_clear_pointer(&m, json_object_put);

        /* Held by another sandbox: heldBy names it. The first port of the call is fine, and is
         * not published either. */
        held_spec = port_spec("tcp", "127.0.0.1", held, 80);
        m = vcall(c, "PublishPorts",
                  "{'sandbox':'taker','guestAddresses':['127.0.0.1'],'ports':[%s,%s]}", ok_spec,
                  held_spec);
        p = error_params(m, VL_ERROR("PortInUse"));
        assert_keys(p, "port", "heldBy", "message", NULL);
        assert_port_key(jget(p, "port"), "tcp", "127.0.0.1", held);
        g_assert_cmpstr(jstr(p, "heldBy"), ==, "holder");
        g_assert_cmpstr(jstr(p, "message"), !=, "");
        g_clear_pointer(&m, json_object_put);
        m = vcall(c, "GetSandbox", "{'sandbox':'taker'}");
        error_params(m, VL_ERROR("NoSuchSandbox"));
        g_clear_pointer(&m, json_object_put);
        g_assert_cmpint(status_field(c, "ports"), ==, 1);

        /* Held by another program: no heldBy. */
        listener = test_tcp_listen("127.0.0.1", &foreign);
        foreign_spec = port_spec("tcp", "127.0.0.1", foreign, 80);
        m = vcall(c, "PublishPorts", "{'sandbox':'holder','ports':[%s]}", foreign_spec);
        p = error_params(m, VL_ERROR("PortInUse"));
        assert_keys(p, "port", "message", NULL);
        assert_port_key(jget(p, "port"), "tcp", "127.0.0.1", foreign);
        g_assert_cmpstr(jstr(p, "message"), !=, "");
        g_clear_pointer(&m, json_object_put);
        close(listener);

        /* 192.0.2.1 (TEST-NET-1) is on no host: only bound, never sent to. */
        tnet_spec = port_spec("tcp", "192.0.2.1", 0, 80);
        m = vcall(c, "PublishPorts", "{'sandbox':'holder','ports':[%s]}", tnet_spec);
        p = error_params(m, VL_ERROR("AddressNotAvailable"));
        assert_keys(p, "port", "message", NULL);
        assert_port_key(jget(p, "port"), "tcp", "192.0.2.1", 0);
        g_assert_cmpstr(jstr(p, "message"), !=, "");
        g_clear_pointer(&m, json_object_put);

        /* One port more than a call may have. */
        for (int i = 0; i < PORTS_PER_CALL_MAX + 1; i++)
                g_string_append_printf(many, "%s%s", i ? "," : "", ok_spec);
        m = vcall(c, "PublishPorts",
                  "{'sandbox':'big','guestAddresses':['127.0.0.1'],'ports':[%s]}", many->str);
        p = error_params(m, VL_ERROR("LimitExceeded"));
        assert_keys(p, "message", NULL);
        g_assert_nonnull(strstr(jstr(p, "message"), "1024"));
        g_clear_pointer(&m, json_object_put);

        /* A new sandbox without addresses, and no systemd-machined on this bus to ask. */
        m = vcall(c, "PublishPorts", "{'sandbox':'nowhere','ports':[%s]}", ok_spec);
        p = error_params(m, VL_ERROR("NoGuestAddress"));
        assert_keys(p, "sandbox", "message", NULL);
        g_assert_cmpstr(jstr(p, "sandbox"), ==, "nowhere");
        g_assert_cmpstr(jstr(p, "message"), !=, "");
        g_clear_pointer(&m, json_object_put);

        /* Unknown methods are the server's. */
        m = vcall(c, "Nope", "{}");
        p = error_params(m, "org.varlink.service.MethodNotFound");
        g_assert_cmpstr(jstr(p, "method"), ==, IFACE ".Nope");
        g_clear_pointer(&m, json_object_put);

        m = vcall(c, "ListPorts", "{}");
        p = reply_params(m);
        g_assert_cmpuint(jlen(p, "ports"), ==, 1);
        g_assert_cmpint(jint(p, "ports[0].hostPort"), ==, held);
        g_clear_pointer(&m, json_object_put);
        g_assert_cmpint(status_field(c, "sandboxes"), ==, 1);
}

typedef struct InvalidCase {
        const char *method;
        const char *params;
        const char *parameter;
} InvalidCase;

#define SPEC_OK "{'protocol':'tcp','hostAddress':'127.0.0.1','hostPort':0,'guestPort':80}"
#define KEY_OK "{'protocol':'tcp','hostAddress':'127.0.0.1','hostPort':1}"
#define WITH_SPEC(spec) "{'sandbox':'s','guestAddresses':['127.0.0.1'],'ports':[" spec "]}"

static const InvalidCase invalid_cases[] = {
        /* missing */
        { "PublishPorts", "{'ports':[]}", "sandbox" },
        { "PublishPorts", "{'sandbox':'s'}", "ports" },
        { "PublishPorts", WITH_SPEC("{'protocol':'tcp','hostPort':0,'guestPort':80}"),
          "ports[0].hostAddress" },
        { "PublishPorts", WITH_SPEC("{'protocol':'tcp','hostAddress':'127.0.0.1','hostPort':0}"),
          "ports[0].guestPort" },
        { "UnpublishPorts", "{'sandbox':'s'}", "ports" },
        { "RemoveSandbox", "{}", "sandbox" },
        { "SetGuestAddresses", "{'sandbox':'s'}", "addresses" },
        { "GetSandbox", "{}", "sandbox" },
        { "GetPort", "{}", "port" },
        { "GetPort", "{'port':{'protocol':'tcp','hostAddress':'127.0.0.1'}}", "port.hostPort" },
        /* mistyped */
        { "PublishPorts", "{'sandbox':5,'ports':[]}", "sandbox" },
        { "PublishPorts", "{'sandbox':'s','ports':{}}", "ports" },
        { "PublishPorts",
          WITH_SPEC("{'protocol':'tcp','hostAddress':'127.0.0.1','hostPort':'80',"
                    "'guestPort':80}"),
          "ports[0].hostPort" },
        { "PublishPorts",
          WITH_SPEC("{'protocol':'tcp','hostAddress':'127.0.0.1','hostPort':70000,"
                    "'guestPort':80}"),
          "ports[0].hostPort" },
        { "PublishPorts",
          WITH_SPEC("{'protocol':'tcp','hostAddress':'127.0.0.1','hostPort':0,"
                    "'guestPort':0}"),
          "ports[0].guestPort" },
        { "PublishPorts",
          WITH_SPEC("{'protocol':'sctp','hostAddress':'127.0.0.1','hostPort':0,"
                    "'guestPort':80}"),
          "ports[0].protocol" },
        { "PublishPorts", WITH_SPEC("7"), "ports[0]" },
        { "PublishPorts", "{'sandbox':'s','guestAddresses':'127.0.0.1','ports':[]}",
          "guestAddresses" },
        { "PublishPorts", "{'sandbox':'s','guestAddresses':[5],'ports':[]}", "guestAddresses[0]" },
        { "PublishPorts", "{'sandbox':'s','ports':[],'options':[]}", "options" },
        { "PublishPorts", "{'sandbox':'s','ports':[],'options':{'bindToCaller':'yes'}}",
          "options.bindToCaller" },
        { "GetSandbox", "{'sandbox':['s']}", "sandbox" },
        { "GetPort", "{'port':'tcp:127.0.0.1:1'}", "port" },
        { "ListPorts", "{'sandbox':3}", "sandbox" },
        /* unknown */
        { "PublishPorts", "{'sandbox':'s','ports':[],'color':'red'}", "color" },
        { "PublishPorts",
          WITH_SPEC("{'protocol':'tcp','hostAddress':'127.0.0.1','hostPort':0,"
                    "'guestPort':80,'color':'red'}"),
          "ports[0].color" },
        { "PublishPorts", "{'sandbox':'s','ports':[],'options':{'color':'red'}}", "options.color" },
        { "UnpublishPorts",
          "{'sandbox':'s','ports':[{'protocol':'tcp','hostAddress':'127.0.0.1',"
          "'hostPort':1,'guestPort':80}]}",
          "ports[0].guestPort" },
        { "GetPort", "{'port':{'protocol':'tcp','hostAddress':'127.0.0.1','hostPort':1,'x':1}}",
          "port.x" },
        { "GetStatus", "{'x':1}", "x" },
        { "ListSandboxes", "{'x':1}", "x" },
        { "Monitor", "{'x':1}", "x" },
        /* bad values, nested */
        { "PublishPorts",
          WITH_SPEC(SPEC_OK ",{'protocol':'tcp','hostAddress':'not-an-address',"
                            "'hostPort':0,'guestPort':80}"),
          "ports[1].hostAddress" },
        { "PublishPorts",
          "{'sandbox':'s','guestAddresses':['127.0.0.1'],'ports':[" SPEC_OK "],"
          "'options':{'maxSessions':'many'}}",
          "options.maxSessions" },
        { "PublishPorts",
          "{'sandbox':'s','guestAddresses':['127.0.0.1'],'ports':[" SPEC_OK "],"
          "'options':{'maxSessions':-1}}",
          "options.maxSessions" },
        { "PublishPorts",
          "{'sandbox':'s','guestAddresses':['127.0.0.1'],'ports':[" SPEC_OK "],"
          "'options':{'proxyProtocol':'v3'}}",
          "options.proxyProtocol" },
        { "PublishPorts", "{'sandbox':'s','guestAddresses':['nonsense'],'ports':[" SPEC_OK "]}",
          "guestAddresses[0]" },
        { "PublishPorts",
          "{'sandbox':'s','guestAddresses':['127.0.0.1','::1','127.0.0.2'],"
          "'ports':[" SPEC_OK "]}",
          "guestAddresses[2]" },
        { "SetGuestAddresses", "{'sandbox':'s','addresses':['::1','nonsense']}", "addresses[1]" },
        { "PublishPorts",
          "{'sandbox':'bad id!','guestAddresses':['127.0.0.1'],'ports':[" SPEC_OK "]}", "sandbox" },
        { "GetSandbox", "{'sandbox':'bad id!'}", "sandbox" },
        { "UnpublishPorts",
          "{'sandbox':'s','ports':[" KEY_OK ",{'protocol':'tcp','hostAddress':"
          "'::1::1','hostPort':1}]}",
          "ports[1].hostAddress" },
};

/* InvalidParameter names the path of the field that is missing, mistyped, unknown or bad; such
 * a call changes nothing. */
static void test_invalid_parameter(Fixture *f, gconstpointer data) {
        g_autoptr(VClient) c = vc_new(f->varlink);

        for (size_t i = 0; i < G_N_ELEMENTS(invalid_cases); i++) {
                const InvalidCase *t = &invalid_cases[i];
                g_autoptr(json_object) m = vcall(c, t->method, "%s", t->params);
                json_object *p;

                g_test_message("%s %s -> %s", t->method, t->params, json_object_to_json_string(m));
                p = error_params(m, INVALID_PARAMETER);
                assert_keys(p, "parameter", NULL);
                if (strcmp(jstr(p, "parameter"), t->parameter) != 0)
                        g_error("%s %s: expected parameter '%s', got '%s'", t->method, t->params,
                                t->parameter, jstr(p, "parameter"));
        }
        g_assert_cmpint(status_field(c, "sandboxes"), ==, 0);
        g_assert_cmpint(status_field(c, "ports"), ==, 0);
}

/* org.varlink.service.GetInterfaceDescription serves interfaces/io.portpub.publisher1.varlink
 * byte for byte, and varlink-go's generator (a strict parser) accepts what it serves. */
static void test_interface_description(Fixture *f, gconstpointer data) {
        g_autoptr(VClient) c = vc_new(f->varlink);
        g_autoptr(json_object) m = NULL;
        g_autoptr(GError) error = NULL;
        g_autofree char *file = NULL, *expect = NULL, *dir = NULL, *out = NULL, *go = NULL;
        g_autofree char *gen_out = NULL, *gen_err = NULL;
        const char *dirs = g_getenv("PORTPUB_INTERFACES_DIR"), *served;
        g_autofree char *gen = NULL;
        gsize len;
        int status;

        g_assert_nonnull(dirs);
        file = g_build_filename(dirs, IFACE ".varlink", NULL);
        g_assert_true(g_file_get_contents(file, &expect, &len, &error));
        g_assert_no_error(error);

        m = vcall(c, "org.varlink.service.GetInterfaceDescription", "{'interface':'" IFACE "'}");
        served = jstr(reply_params(m), "description");
        g_assert_cmpuint(strlen(served), ==, len);
        g_assert_true(memcmp(served, expect, len) == 0);

        gen = g_find_program_in_path("varlink-go-interface-generator");
        if (!gen) {
                g_test_skip("varlink-go-interface-generator is not installed (Debian: varlink-go)");
                return;
        }
        dir = g_dir_make_tmp("portpub-varlink-go-XXXXXX", &error);
        g_assert_no_error(error);
        out = g_build_filename(dir, IFACE ".varlink", NULL);
        g_assert_true(g_file_set_contents(out, served, -1, &error));
        {
                const char *argv[] = { gen, out, NULL };

                g_assert_true(g_spawn_sync(dir, (char **) argv, NULL, G_SPAWN_DEFAULT, NULL, NULL,
                                           &gen_out, &gen_err, &status, &error));
        }
        g_assert_no_error(error);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                g_error("%s rejects the served description: %s%s", gen, gen_out, gen_err);
        /* It wrote Go for the interface: it parsed it, not just read it. */
        go = g_build_filename(dir, "ioportpubpublisher1.go", NULL);
        g_assert_true(g_file_test(go, G_FILE_TEST_IS_REGULAR));
        (void) unlink(go);
        (void) unlink(out);
        (void) rmdir(dir);
}

/* A port published over varlink relays (127.0.0.1 here) and is a D-Bus object: PortPublished
 * was emitted and GetAll on its objectPath says what the varlink reply says. */
static void test_relay_and_dbus_object(Fixture *f, gconstpointer data) {
        g_autoptr(VClient) c = vc_new(f->varlink);
        g_autofree char *spec = port_spec("tcp", "", 0, test_echo_port(f->echo));
        g_autoptr(json_object) m = NULL;
        g_autoptr(GVariant) all = NULL, props = NULL;
        g_autoptr(GError) error = NULL;
        const char *path, *signal_path;
        guint16 port, hp = 0;
        guint64 bytes = 0;
        json_object *p;

        m = vcall(c, "PublishPorts",
                  "{'sandbox':'relay','guestAddresses':['127.0.0.1'],'ports':[%s]}", spec);
        p = reply_params(m);
        port = (guint16) jint(p, "ports[0].hostPort");
        path = jstr(p, "ports[0].objectPath");
        g_assert_cmpstr(jstr(p, "ports[0].hostAddress"), ==, "");
        g_assert_cmpuint(jlen(p, "ports[0].listenAddresses"), ==, 2);

        assert_relays("127.0.0.1", port);

        signal_path = wait_signal(f, "PortPublished", "relay", port, NULL);
        g_assert_cmpstr(signal_path, ==, path);
        (void) wait_signal(f, "SandboxNew", "relay", 0, NULL);

        all = g_dbus_connection_call_sync(f->bus->conn, TEST_BUS_NAME, path,
                                          "org.freedesktop.DBus.Properties", "GetAll",
                                          g_variant_new("(s)", TEST_PORT_IFACE),
                                          G_VARIANT_TYPE("(a{sv})"), G_DBUS_CALL_FLAGS_NONE,
                                          TIMEOUT_MS, NULL, &error);
        g_assert_no_error(error);
        props = g_variant_get_child_value(all, 0);
        {
                const char *sandbox = NULL, *proto = NULL;

                g_assert_true(g_variant_lookup(props, "Sandbox", "&s", &sandbox));
                g_assert_cmpstr(sandbox, ==, "relay");
                g_assert_true(g_variant_lookup(props, "Protocol", "&s", &proto));
                g_assert_cmpstr(proto, ==, "tcp");
        }
        g_assert_true(g_variant_lookup(props, "HostPort", "q", &hp));
        g_assert_cmpuint(hp, ==, port);
        g_assert_true(g_variant_lookup(props, "BytesToGuest", "t", &bytes));
        g_assert_cmpuint(bytes, >=, strlen("ping"));
}

/* hostAddress "" is ::1 too: a TCP client there reaches the guest. */
static void test_relay_ipv6(Fixture *f, gconstpointer data) {
        g_autoptr(VClient) c = vc_new(f->varlink);
        g_autofree char *spec = port_spec("tcp", "", 0, test_echo_port(f->echo));
        g_autoptr(json_object) m = NULL;
        json_object *p;

        if (!host_has_ipv6()) {
                g_test_skip("no IPv6 on this host: ::1 cannot be bound");
                return;
        }
        m = vcall(c, "PublishPorts",
                  "{'sandbox':'six','guestAddresses':['127.0.0.1'],'ports':[%s]}", spec);
        p = reply_params(m);
        assert_relays("::1", (guint16) jint(p, "ports[0].hostPort"));
        assert_relays("127.0.0.1", (guint16) jint(p, "ports[0].hostPort"));
}

/* A D-Bus publication is in varlink's ListPorts and in an open Monitor stream; its D-Bus
 * unpublication comes as portUnpublished with reason "request". */
static void test_dbus_publication(Fixture *f, gconstpointer data) {
        g_autoptr(VClient) c = vc_new(f->varlink);
        g_autoptr(VClient) mon = vc_new(f->varlink);
        g_autoptr(GVariant) reply = NULL, published = NULL, unreply = NULL;
        g_autoptr(GError) error = NULL;
        g_autoptr(json_object) m = NULL;
        g_autofree char *text = call_text("Monitor", NULL, ",'more':true");
        const char *path;
        gboolean found = FALSE;
        guint16 port;
        json_object *p;

        vc_send(mon, text);
        m = vc_recv(mon);
        g_assert_cmpstr(jstr(reply_params(m), "event"), ==, "initialized");
        g_clear_pointer(&m, json_object_put);

        reply = test_call(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "PublishPorts",
                          g_variant_new_parsed("(%s, ['127.0.0.1'], [('tcp', '127.0.0.1', @q 0, %q)], "
                                               "@a{sv} {})",
                                               "dbus", test_echo_port(f->echo)),
                          "(oa(ssqqo))", &error);
        g_assert_no_error(error);
        published = g_variant_get_child_value(reply, 1);
        g_variant_get_child(published, 0, "(&s&sqq&o)", NULL, NULL, &port, NULL, &path);

        m = vcall(c, "ListPorts", "{}");
        p = reply_params(m);
        for (size_t i = 0; i < jlen(p, "ports"); i++) {
                g_autofree char *base = g_strdup_printf("ports[%zu]", i);
                json_object *q = jget(p, base);

                if (jint(q, "hostPort") == port) {
                        g_assert_cmpstr(jstr(q, "sandbox"), ==, "dbus");
                        g_assert_cmpstr(jstr(q, "objectPath"), ==, path);
                        found = TRUE;
                }
        }
        g_assert_true(found);
        g_clear_pointer(&m, json_object_put);

        m = vc_recv(mon);
        p = reply_params(m);
        g_assert_true(jbool(m, "continues"));
        g_assert_cmpstr(jstr(p, "event"), ==, "sandboxNew");
        g_assert_cmpstr(jstr(p, "sandbox"), ==, "dbus");
        g_assert_null(jget(p, "initial"));
        g_clear_pointer(&m, json_object_put);
        m = vc_recv(mon);
        p = reply_params(m);
        g_assert_cmpstr(jstr(p, "event"), ==, "portPublished");
        g_assert_cmpstr(jstr(p, "sandbox"), ==, "dbus");
        g_assert_cmpint(jint(p, "port.hostPort"), ==, port);
        g_assert_cmpstr(jstr(p, "port.objectPath"), ==, path);
        g_clear_pointer(&m, json_object_put);

        unreply = test_call(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "UnpublishPorts",
                            g_variant_new_parsed("(%s, [('tcp', '127.0.0.1', %q)])", "dbus", port),
                            "()", &error);
        g_assert_no_error(error);
        m = vc_recv(mon);
        p = reply_params(m);
        g_assert_cmpstr(jstr(p, "event"), ==, "portUnpublished");
        g_assert_cmpstr(jstr(p, "sandbox"), ==, "dbus");
        g_assert_cmpint(jint(p, "port.hostPort"), ==, port);
        g_assert_cmpstr(jstr(p, "reason"), ==, "request");
}

typedef struct Poll {
        VClient *c;
        const char *sandbox;
        gboolean want; /* the sandbox exists */
} Poll;

static gboolean cond_sandbox(gpointer data) {
        Poll *w = data;
        g_autoptr(json_object) m = vcall(w->c, "GetSandbox", "{'sandbox':'%s'}", w->sandbox);

        return (jget(m, "error") == NULL) == w->want;
}

/* A oneway call gets no reply (the next reply is the next call's) and does what it says. */
static void test_oneway(Fixture *f, gconstpointer data) {
        g_autoptr(VClient) c = vc_new(f->varlink);
        g_autofree char *spec = port_spec("tcp", "127.0.0.1", 0, test_echo_port(f->echo));
        g_autofree char *params =
                g_strdup_printf("{'sandbox':'ow','guestAddresses':['127.0.0.1'],'ports':[%s]}", spec);
        g_autofree char *publish = call_text("PublishPorts", params, ",'oneway':true");
        g_autofree char *remove = call_text("RemoveSandbox", "{'sandbox':'ow'}", ",'oneway':true");
        g_autofree char *bad = call_text("GetSandbox", "{'sandbox':'ghost'}", ",'oneway':true");
        g_autoptr(json_object) m = NULL;
        Poll w = { c, "ow", TRUE };

        vc_send(c, publish);
        m = vcall(c, "GetStatus", "{}");
        jstr(reply_params(m), "version");
        g_clear_pointer(&m, json_object_put);
        g_assert_true(test_wait_until(cond_sandbox, &w, TIMEOUT_MS));
        m = vcall(c, "GetSandbox", "{'sandbox':'ow'}");
        g_assert_cmpuint(jlen(reply_params(m), "sandbox.ports"), ==, 1);
        g_clear_pointer(&m, json_object_put);

        /* Not even an error is sent. */
        vc_send(c, bad);
        vc_send(c, remove);
        m = vcall(c, "GetStatus", "{}");
        jstr(reply_params(m), "version");
        w.want = FALSE;
        g_assert_true(test_wait_until(cond_sandbox, &w, TIMEOUT_MS));
}

/* Several calls in one write are answered in order, errors included. */
static void test_pipelining(Fixture *f, gconstpointer data) {
        g_autoptr(VClient) c = vc_new(f->varlink);
        g_autofree char *spec = port_spec("tcp", "127.0.0.1", 0, test_echo_port(f->echo));
        g_autofree char *params =
                g_strdup_printf("{'sandbox':'pipe','guestAddresses':['127.0.0.1'],'ports':[%s]}",
                                spec);
        char *calls[] = {
                call_text("GetStatus", NULL, NULL),
                call_text("GetSandbox", "{'sandbox':'ghost'}", NULL),
                call_text("PublishPorts", params, NULL),
                call_text("Monitor", NULL, NULL),
                call_text("GetPort", "{'port':" KEY_OK "}", NULL),
                call_text("ListSandboxes", NULL, NULL),
                call_text("Nope", NULL, NULL),
                call_text("GetStatus", NULL, NULL),
        };
        g_autoptr(GByteArray) all = g_byte_array_new();
        g_autoptr(json_object) m = NULL;
        json_object *p;

        for (size_t i = 0; i < G_N_ELEMENTS(calls); i++) {
                g_autofree char *s = dequote(calls[i]);

                g_byte_array_append(all, (const guint8 *) s, (guint) strlen(s) + 1);
                g_free(calls[i]);
        }
        vc_write(c, all->data, all->len);

        m = vc_recv(c);
        jstr(reply_params(m), "version");
        g_clear_pointer(&m, json_object_put);
        m = vc_recv(c);
        g_assert_cmpstr(jstr(error_params(m, VL_ERROR("NoSuchSandbox")), "sandbox"), ==, "ghost");
        g_clear_pointer(&m, json_object_put);
        m = vc_recv(c);
        g_assert_cmpstr(jstr(reply_params(m), "ports[0].sandbox"), ==, "pipe");
        g_clear_pointer(&m, json_object_put);
        m = vc_recv(c);
        g_assert_cmpstr(jstr(error_params(m, INVALID_PARAMETER), "parameter"), ==, "more");
        g_clear_pointer(&m, json_object_put);
        m = vc_recv(c);
        error_params(m, VL_ERROR("NoSuchPort"));
        g_clear_pointer(&m, json_object_put);
        m = vc_recv(c);
        p = reply_params(m);
        g_assert_cmpuint(jlen(p, "sandboxes"), ==, 1);
        g_assert_cmpstr(jstr(p, "sandboxes[0].id"), ==, "pipe");
        g_clear_pointer(&m, json_object_put);
        m = vc_recv(c);
        error_params(m, "org.varlink.service.MethodNotFound");
        g_clear_pointer(&m, json_object_put);
        m = vc_recv(c);
        g_assert_cmpint(jint(reply_params(m), "ports"), ==, 1);
}

static json_object *recv_event(VClient *c, const char *event) {
        json_object *m = vc_recv(c);
        json_object *p = reply_params(m);

        g_assert_true(jbool(m, "continues"));
        if (strcmp(jstr(p, "event"), event) != 0)
                g_error("expected event %s, got %s", event, json_object_to_json_string(m));
        return m;
}

/* Monitor needs "more"; with it: the existing sandboxes and ports (initial: true), then
 * "initialized", then the changes as they happen, sessions included. */
static void test_monitor(Fixture *f, gconstpointer data) {
        g_autoptr(VClient) c = vc_new(f->varlink);
        g_autoptr(VClient) mon = vc_new(f->varlink);
        g_autofree char *tcp = port_spec("tcp", "127.0.0.1", 0, test_echo_port(f->echo));
        g_autofree char *udp = port_spec("udp", "127.0.0.1", 0, test_echo_port(f->echo_udp));
        g_autofree char *text = call_text("Monitor", NULL, ",'more':true");
        g_autoptr(json_object) m = NULL;
        gint64 tcp_port, udp_port, live_port;
        gboolean seen_tcp = FALSE, seen_udp = FALSE;
        json_object *p;
        int fd;

        m = vcall(c, "Monitor", "{}");
        assert_keys(error_params(m, INVALID_PARAMETER), "parameter", NULL);
        g_assert_cmpstr(jstr(error_params(m, INVALID_PARAMETER), "parameter"), ==, "more");
        g_clear_pointer(&m, json_object_put);

        m = vcall(c, "PublishPorts",
                  "{'sandbox':'m1','guestAddresses':['127.0.0.1'],'ports':[%s,%s]}", tcp, udp);
        tcp_port = jint(reply_params(m), "ports[0].hostPort");
        udp_port = jint(reply_params(m), "ports[1].hostPort");
        g_clear_pointer(&m, json_object_put);

        vc_send(mon, text);
        m = recv_event(mon, "sandboxNew");
        g_assert_true(jbool(m, "parameters.initial"));
        g_assert_cmpstr(jstr(m, "parameters.sandbox"), ==, "m1");
        g_clear_pointer(&m, json_object_put);
        for (int i = 0; i < 2; i++) {
                m = recv_event(mon, "portPublished");
                p = reply_params(m);
                g_assert_true(jbool(p, "initial"));
                g_assert_cmpstr(jstr(p, "sandbox"), ==, "m1");
                seen_tcp |= jint(p, "port.hostPort") == tcp_port &&
                            strcmp(jstr(p, "port.protocol"), "tcp") == 0;
                seen_udp |= jint(p, "port.hostPort") == udp_port &&
                            strcmp(jstr(p, "port.protocol"), "udp") == 0;
                g_clear_pointer(&m, json_object_put);
        }
        g_assert_true(seen_tcp && seen_udp);
        m = recv_event(mon, "initialized");
        assert_keys(reply_params(m), "event", NULL);
        g_clear_pointer(&m, json_object_put);

        live_port = publish_one(c, "m2", test_echo_port(f->echo), NULL);
        m = recv_event(mon, "sandboxNew");
        g_assert_null(jget(m, "parameters.initial"));
        g_assert_cmpstr(jstr(m, "parameters.sandbox"), ==, "m2");
        g_clear_pointer(&m, json_object_put);
        m = recv_event(mon, "portPublished");
        g_assert_null(jget(m, "parameters.initial"));
        g_assert_cmpint(jint(m, "parameters.port.hostPort"), ==, live_port);
        g_clear_pointer(&m, json_object_put);

        /* A session: portChanged carries the port's new state. */
        fd = test_tcp_connect("127.0.0.1", (guint16) live_port, 5000);
        g_assert_cmpint(fd, >=, 0);
        test_roundtrip(fd, "x", "guest:x");
        m = recv_event(mon, "portChanged");
        g_assert_cmpstr(jstr(m, "parameters.sandbox"), ==, "m2");
        g_assert_cmpint(jint(m, "parameters.port.hostPort"), ==, live_port);
        g_assert_cmpint(jint(m, "parameters.port.totalSessions"), >=, 1);
        g_clear_pointer(&m, json_object_put);
        close(fd);

        m = vcall(c, "UnpublishPorts",
                  "{'sandbox':'m1','ports':[{'protocol':'udp','hostAddress':'127.0.0.1','hostPort':%d}]}",
                  (int) udp_port);
        reply_params(m);
        g_clear_pointer(&m, json_object_put);
        /* Session changes of m2 may come in between. */
        for (unsigned i = 0; i < 100; i++) {
                m = vc_recv(mon);
                if (strcmp(jstr(m, "parameters.event"), "portChanged") != 0)
                        break;
                g_clear_pointer(&m, json_object_put);
        }
        g_assert_cmpstr(jstr(m, "parameters.event"), ==, "portUnpublished");
        g_assert_cmpstr(jstr(m, "parameters.sandbox"), ==, "m1");
        g_assert_cmpint(jint(m, "parameters.port.hostPort"), ==, udp_port);
        g_assert_cmpstr(jstr(m, "parameters.reason"), ==, "request");
        g_clear_pointer(&m, json_object_put);

        m = vcall(c, "RemoveSandbox", "{'sandbox':'m1'}");
        reply_params(m);
        g_clear_pointer(&m, json_object_put);
        for (unsigned i = 0; i < 100; i++) {
                m = vc_recv(mon);
                if (strcmp(jstr(m, "parameters.event"), "portChanged") != 0)
                        break;
                g_clear_pointer(&m, json_object_put);
        }
        g_assert_cmpstr(jstr(m, "parameters.event"), ==, "portUnpublished");
        g_assert_cmpint(jint(m, "parameters.port.hostPort"), ==, tcp_port);
        g_assert_cmpstr(jstr(m, "parameters.reason"), ==, "sandbox-removed");
        g_clear_pointer(&m, json_object_put);
        m = recv_event(mon, "sandboxRemoved");
        g_assert_cmpstr(jstr(m, "parameters.sandbox"), ==, "m1");
}

static gboolean cond_refused(gpointer data) {
        int fd = test_tcp_connect("127.0.0.1", *(guint16 *) data, 1000);

        if (fd >= 0)
                close(fd);
        return fd == -ECONNREFUSED;
}

/* bindToCaller ports go when their varlink connection closes (caller-vanished); another
 * sandbox's ports stay. */
static void test_bind_to_caller(Fixture *f, gconstpointer data) {
        VClient *bound = vc_new(f->varlink);
        g_autoptr(VClient) other = vc_new(f->varlink);
        g_autoptr(json_object) m = NULL;
        guint16 bound_port, kept_port;
        json_object *p;

        bound_port = publish_one(bound, "bound", test_echo_port(f->echo),
                                 ",'options':{'bindToCaller':true}");
        kept_port = publish_one(other, "kept", test_echo_port(f->echo), NULL);
        m = vcall(other, "GetPort",
                  "{'port':{'protocol':'tcp','hostAddress':'127.0.0.1','hostPort':%u}}", bound_port);
        g_assert_true(jbool(reply_params(m), "port.bindToCaller"));
        g_clear_pointer(&m, json_object_put);
        assert_relays("127.0.0.1", bound_port);

        vc_free(bound);
        (void) wait_signal(f, "PortUnpublished", "bound", bound_port, "caller-vanished");
        g_assert_true(test_wait_until(cond_refused, &bound_port, TIMEOUT_MS));

        m = vcall(other, "ListPorts", "{}");
        p = reply_params(m);
        g_assert_cmpuint(jlen(p, "ports"), ==, 1);
        g_assert_cmpstr(jstr(p, "ports[0].sandbox"), ==, "kept");
        g_assert_cmpint(jint(p, "ports[0].hostPort"), ==, kept_port);
        assert_relays("127.0.0.1", kept_port);
        {
                SignalMatch kept = { f, "PortUnpublished", "kept" };

                g_assert_false(signal_matches(&kept));
        }
}

/* uid 65534 is denied every mutating method (polkit, absent from this bus, could not be asked)
 * and may read everything; nothing changes. */
static void test_stranger(Fixture *f, gconstpointer data) {
        g_autoptr(VClient) c = vc_new(f->varlink);
        g_autofree char *key = NULL, *spec = port_spec("tcp", "127.0.0.1", 0, 80);
        g_autofree char *c_own = NULL, *c_victim = NULL, *c_unpublish = NULL, *c_port = NULL;
        ClientRun run;
        guint16 port;

        if (geteuid() != 0) {
                g_test_skip("needs root: the client of this test runs as uid 65534");
                return;
        }
        port = publish_one(c, "victim", test_echo_port(f->echo), NULL);
        key = port_key("tcp", "127.0.0.1", port);
        {
                g_autofree char *p_own = g_strdup_printf(
                        "{'sandbox':'intruder','guestAddresses':['127.0.0.1'],'ports':[%s]}", spec);
                g_autofree char *p_victim =
                        g_strdup_printf("{'sandbox':'victim','ports':[%s]}", spec);
                g_autofree char *p_unpublish =
                        g_strdup_printf("{'sandbox':'victim','ports':[%s]}", key);
                g_autofree char *p_port = g_strdup_printf("{'port':%s}", key);

                c_own = call_text("PublishPorts", p_own, NULL);
                c_victim = call_text("PublishPorts", p_victim, NULL);
                c_unpublish = call_text("UnpublishPorts", p_unpublish, NULL);
                c_port = call_text("GetPort", p_port, NULL);
        }
        g_autofree char *c_setguest =
                call_text("SetGuestAddresses", "{'sandbox':'victim','addresses':['127.0.0.2']}",
                          NULL);
        g_autofree char *c_remove = call_text("RemoveSandbox", "{'sandbox':'victim'}", NULL);
        g_autofree char *c_status = call_text("GetStatus", NULL, NULL);
        g_autofree char *c_ports = call_text("ListPorts", NULL, NULL);
        g_autofree char *c_sandboxes = call_text("ListSandboxes", NULL, NULL);
        g_autofree char *c_sandbox = call_text("GetSandbox", "{'sandbox':'victim'}", NULL);
        g_autofree char *c_monitor = call_text("Monitor", NULL, ",'more':true");
        const char *calls[] = { c_own,   c_victim,    c_unpublish, c_setguest, c_remove,  c_status,
                                c_ports, c_sandboxes, c_sandbox,   c_port,     c_monitor, NULL };
        const guint n_mutating = 5;

        if (!run_stranger(f->varlink, calls, &run)) {
                g_test_skip("cannot switch a child process to uid 65534 here");
                return;
        }
        for (guint i = 0; i < n_mutating; i++) {
                json_object *p = error_params(run_reply(&run, i), VL_ERROR("AccessDenied"));

                g_test_message("%s -> %s", calls[i], json_object_to_json_string(run_reply(&run, i)));
                assert_keys(p, "message", NULL);
                if (!strstr(jstr(p, "message"), "polkit could not be asked"))
                        g_error("the message does not say polkit could not be asked: %s",
                                jstr(p, "message"));
        }
        g_assert_cmpint(jint(reply_params(run_reply(&run, 5)), "ports"), ==, 1);
        g_assert_cmpstr(jstr(reply_params(run_reply(&run, 6)), "ports[0].sandbox"), ==, "victim");
        g_assert_cmpstr(jstr(reply_params(run_reply(&run, 7)), "sandboxes[0].id"), ==, "victim");
        g_assert_cmpstr(jstr(reply_params(run_reply(&run, 8)), "sandbox.id"), ==, "victim");
        g_assert_cmpint(jint(reply_params(run_reply(&run, 9)), "port.hostPort"), ==, port);
        {
                GPtrArray *events = run.replies->pdata[10];

                /* sandboxNew, portPublished, initialized */
                g_assert_cmpuint(events->len, ==, 3);
                g_assert_cmpstr(jstr(reply_params(events->pdata[0]), "event"), ==, "sandboxNew");
                g_assert_cmpstr(jstr(reply_params(events->pdata[1]), "event"), ==, "portPublished");
                g_assert_cmpstr(jstr(reply_params(events->pdata[2]), "event"), ==, "initialized");
        }
        client_run_clear(&run);

        g_assert_cmpint(status_field(c, "sandboxes"), ==, 1);
        g_assert_cmpint(status_field(c, "ports"), ==, 1);
        {
                g_autoptr(json_object) m = vcall(c, "GetPort", "{'port':%s}", key);

                g_assert_cmpstr(jstr(reply_params(m), "port.guestAddress"), ==, "127.0.0.1");
        }
        assert_relays("127.0.0.1", port);
}

/* A relay that cannot be built after the bind is Failed {port, message}; nothing of the call
 * stays published, and the next call works. */
static void test_failed(Fixture *f, gconstpointer data) {
        g_autoptr(VClient) c = vc_new(f->varlink);
        g_autofree char *tcp = port_spec("tcp", "127.0.0.1", 0, test_echo_port(f->echo));
        g_autofree char *udp = port_spec("udp", "127.0.0.1", 0, test_echo_port(f->echo_udp));
        g_autoptr(json_object) m = NULL;
        json_object *p;

        /* The second relay built fails: the error names that port, as it was asked. */
        m = vcall(c, "PublishPorts",
                  "{'sandbox':'f','guestAddresses':['127.0.0.1'],'ports':[%s,%s]}", tcp, udp);
        p = error_params(m, VL_ERROR("Failed"));
        g_test_message("Failed: %s", json_object_to_json_string(p));
        assert_keys(p, "port", "message", NULL);
        assert_port_key(jget(p, "port"), "udp", "127.0.0.1", 0);
        g_assert_cmpstr(jstr(p, "message"), !=, "");
        g_clear_pointer(&m, json_object_put);
        g_assert_cmpint(status_field(c, "ports"), ==, 0);
        g_assert_cmpint(status_field(c, "sandboxes"), ==, 0);
        m = vcall(c, "ListPorts", "{}");
        g_assert_cmpuint(jlen(reply_params(m), "ports"), ==, 0);
        g_clear_pointer(&m, json_object_put);

        assert_relays("127.0.0.1", publish_one(c, "f", test_echo_port(f->echo), NULL));
}

/* A daemon of uid 65534 (no CAP_NET_BIND_SERVICE) cannot bind a port below
 * ip_unprivileged_port_start: PermissionDenied {port, message} to root, who may ask. */
static void test_permission_denied(void) {
        g_autoptr(GError) error = NULL;
        g_autofree char *text = NULL, *dir = NULL, *sock = NULL, *vl = NULL, *low = NULL;
        g_autofree char *status_path = NULL, *status = NULL, *uid_line = NULL;
        g_autoptr(json_object) m = NULL;
        g_autoptr(VClient) c = NULL;
        TestDaemon *d;
        guint64 start;
        json_object *p;

        if (geteuid() != 0) {
                g_test_skip("needs root to start a daemon as uid 65534");
                return;
        }
        if (!g_file_get_contents("/proc/sys/net/ipv4/ip_unprivileged_port_start", &text, NULL, NULL)) {
                g_test_skip("cannot read /proc/sys/net/ipv4/ip_unprivileged_port_start");
                return;
        }
        start = g_ascii_strtoull(text, NULL, 10);
        if (start <= 1) {
                g_test_skip("every port is unprivileged here (ip_unprivileged_port_start <= 1)");
                return;
        }
        dir = g_dir_make_tmp("portpub-vl-65534-XXXXXX", &error);
        g_assert_no_error(error);
        g_assert_cmpint(chown(dir, STRANGER, STRANGER), ==, 0);
        sock = g_build_filename(dir, "sock", NULL);
        vl = g_strdup_printf("--varlink=%s", sock);
        {
                const char *args[] = { portpubd(), "--no-bus", vl, "--state-file=", NULL };

                d = spawn_daemon(args, NULL, become_stranger, sock, NULL);
        }
        if (!wait_serving(d, sock, TIMEOUT_MS)) {
                if (test_daemon_wait(d, 2000) && d->exit_status == SETUP_FAILED) {
                        g_test_skip("cannot switch a child process to uid 65534 here");
                        test_daemon_free(d);
                        (void) rmdir(dir);
                        return;
                }
                g_error("the daemon as uid 65534 does not serve %s", sock);
        }
        status_path = g_strdup_printf("/proc/%d/status", d->pid);
        g_assert_true(g_file_get_contents(status_path, &status, NULL, NULL));
        g_assert_nonnull(strstr(status, "\nUid:\t65534\t65534\t65534\t65534\n"));

        c = vc_new(sock);
        low = port_spec("tcp", "127.0.0.1", (guint) start - 1, 80);
        m = vcall(c, "PublishPorts",
                  "{'sandbox':'low','guestAddresses':['127.0.0.1'],'ports':[%s]}", low);
        p = error_params(m, VL_ERROR("PermissionDenied"));
        assert_keys(p, "port", "message", NULL);
        assert_port_key(jget(p, "port"), "tcp", "127.0.0.1", (gint64) start - 1);
        g_assert_cmpstr(jstr(p, "message"), !=, "");
        g_clear_pointer(&m, json_object_put);
        g_assert_cmpint(status_field(c, "ports"), ==, 0);
        /* An unprivileged port works for the same daemon: it was the port, not the caller. */
        (void) publish_one(c, "high", 80, NULL);

        g_clear_pointer(&c, vc_free);
        g_assert_cmpint(test_daemon_stop(d), ==, 0);
        test_daemon_free(d);
        g_assert_cmpint(rmdir(dir), ==, 0);
}

/* A listening unix socket standing in for a bus: whoever connects is caught. */
static int trap_listen(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpuint(strlen(path), <, sizeof sa.sun_path);
        strcpy(sa.sun_path, path);
        g_assert_cmpint(bind(fd, (struct sockaddr *) &sa, sizeof sa), ==, 0);
        g_assert_cmpint(listen(fd, 16), ==, 0);
        return fd;
}

/* --no-bus: no bus connection at all (DBUS_*_BUS_ADDRESS point at a trap nobody connects to),
 * and the daemon publishes and relays over varlink; without machined a new sandbox needs its
 * addresses; without polkit other uids are denied. */
static void test_no_bus(void) {
        g_autoptr(GError) error = NULL;
        g_autofree char *dir = g_dir_make_tmp("portpub-vl-nobus-XXXXXX", &error);
        g_autofree char *sock = g_build_filename(dir, "sock", NULL);
        g_autofree char *trap = g_build_filename(dir, "bus", NULL);
        g_autofree char *vl = g_strdup_printf("--varlink=%s", sock);
        g_autofree char *sys = g_strdup_printf("DBUS_SYSTEM_BUS_ADDRESS=unix:path=%s", trap);
        g_autofree char *ses = g_strdup_printf("DBUS_SESSION_BUS_ADDRESS=unix:path=%s", trap);
        g_autofree char *spec = port_spec("tcp", "127.0.0.1", 0, 80);
        const char *args[] = { portpubd(), "--no-bus", vl, "--state-file=", NULL };
        const char *env[] = { sys, ses, NULL };
        TestEcho *echo = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, "guest:");
        g_autoptr(json_object) m = NULL;
        g_autoptr(VClient) c = NULL;
        int trap_fd, caught;
        TestDaemon *d;
        json_object *p;

        g_assert_no_error(error);
        /* The socket is 0666; the directory lets the client of another uid reach it. */
        g_assert_cmpint(chmod(dir, 0755), ==, 0);
        trap_fd = trap_listen(trap);
        d = spawn_daemon(args, env, NULL, sock, NULL);
        g_assert_true(wait_serving(d, sock, TIMEOUT_MS));
        c = vc_new(sock);

        assert_relays("127.0.0.1", publish_one(c, "nb", test_echo_port(echo), NULL));
        m = vcall(c, "PublishPorts", "{'sandbox':'noaddr','ports':[%s]}", spec);
        p = error_params(m, VL_ERROR("NoGuestAddress"));
        assert_keys(p, "sandbox", "message", NULL);
        g_assert_cmpstr(jstr(p, "sandbox"), ==, "noaddr");
        g_test_message("NoGuestAddress: %s", jstr(p, "message"));
        g_clear_pointer(&m, json_object_put);
        g_assert_cmpint(status_field(c, "ports"), ==, 1);

        if (geteuid() == 0) {
                g_autofree char *params =
                        g_strdup_printf("{'sandbox':'s','guestAddresses':['127.0.0.1'],'ports':[%s]}",
                                        spec);
                g_autofree char *publish = call_text("PublishPorts", params, NULL);
                g_autofree char *status = call_text("GetStatus", NULL, NULL);
                const char *calls[] = { publish, status, NULL };
                ClientRun run;

                if (run_stranger(sock, calls, &run)) {
                        p = error_params(run_reply(&run, 0), VL_ERROR("AccessDenied"));
                        g_test_message("AccessDenied without a bus: %s", jstr(p, "message"));
                        g_assert_cmpstr(jstr(p, "message"), !=, "");
                        g_assert_cmpint(jint(reply_params(run_reply(&run, 1)), "ports"), ==, 1);
                        client_run_clear(&run);
                } else
                        g_test_skip("cannot switch a child process to uid 65534 here: "
                                    "AccessDenied without a bus not tried");
        } else
                g_test_skip("not root: no client of another uid, AccessDenied without a bus not "
                            "tried");

        caught = accept4(trap_fd, NULL, NULL, SOCK_CLOEXEC);
        g_assert_cmpint(caught, <, 0);
        g_assert_cmpint(errno, ==, EAGAIN);
        g_assert_true(daemon_alive(d));
        g_clear_pointer(&c, vc_free);
        g_assert_cmpint(test_daemon_stop(d), ==, 0);
        test_daemon_free(d);
        test_echo_free(echo);
        close(trap_fd);
        (void) unlink(trap);
        g_assert_cmpint(rmdir(dir), ==, 0);
}

/* Under systemd-socket-activate (a socket named "varlink"), the daemon serves the socket passed
 * and makes none of its own. */
static void test_socket_activation(void) {
        g_autoptr(GError) error = NULL;
        g_autofree char *dir = g_dir_make_tmp("portpub-vl-sa-XXXXXX", &error);
        g_autofree char *sock = g_build_filename(dir, "sock", NULL);
        g_autofree char *own = g_build_filename(dir, "own", NULL);
        g_autofree char *listen_arg = g_strdup_printf("--listen=%s", sock);
        g_autofree char *vl = g_strdup_printf("--varlink=%s", own);
        g_autofree char *activate = g_find_program_in_path("systemd-socket-activate");
        g_autofree char *cmdline_path = NULL, *cmdline = NULL;
        TestEcho *echo;
        g_autoptr(VClient) c = NULL;
        TestDaemon *d;
        gsize len;

        g_assert_no_error(error);
        if (!activate) {
                g_test_skip("systemd-socket-activate is not installed (Debian: systemd)");
                (void) rmdir(dir);
                return;
        }
        {
                const char *args[] = { activate,   listen_arg, "--fdname=varlink", portpubd(),
                                       "--no-bus", vl,         "--state-file=",    NULL };

                d = spawn_daemon(args, NULL, NULL, sock, NULL);
        }
        /* It launches portpubd (in its own place: the same pid) at the first connection, which
         * portpubd then answers. */
        g_assert_true(wait_serving(d, sock, TIMEOUT_MS));
        cmdline_path = g_strdup_printf("/proc/%d/cmdline", d->pid);
        g_assert_true(g_file_get_contents(cmdline_path, &cmdline, &len, NULL));
        g_assert_cmpstr(cmdline, ==, portpubd());
        g_assert_false(g_file_test(own, G_FILE_TEST_EXISTS));

        echo = test_echo_new(IPPROTO_TCP, "127.0.0.1", 0, "guest:");
        c = vc_new(sock);
        assert_relays("127.0.0.1", publish_one(c, "sa", test_echo_port(echo), NULL));
        g_clear_pointer(&c, vc_free);
        g_assert_cmpint(test_daemon_stop(d), ==, 0);
        test_daemon_free(d);
        test_echo_free(echo);
        g_assert_false(g_file_test(own, G_FILE_TEST_EXISTS));
        g_assert_cmpint(rmdir(dir), ==, 0);
}

/* A stale socket file at --varlink=PATH is replaced; a live one (another portpubd serving it)
 * makes a second daemon exit non-zero saying so, and the first serves on. */
static void test_stale_and_live_socket(void) {
        g_autoptr(GError) error = NULL;
        g_autofree char *dir = g_dir_make_tmp("portpub-vl-stale-XXXXXX", &error);
        g_autofree char *sock = g_build_filename(dir, "sock", NULL);
        g_autofree char *vl = g_strdup_printf("--varlink=%s", sock);
        g_autofree char *err = NULL, *expect = NULL;
        const char *args[] = { portpubd(), "--no-bus", vl, "--state-file=", NULL };
        TestDaemon *first, *second;
        int stale, err_fd;

        g_assert_no_error(error);
        stale = trap_listen(sock);
        close(stale);
        g_assert_true(g_file_test(sock, G_FILE_TEST_EXISTS));
        g_assert_cmpint(vl_socket_connect(sock), ==, -ECONNREFUSED);

        first = spawn_daemon(args, NULL, NULL, sock, NULL);
        g_assert_true(wait_serving(first, sock, TIMEOUT_MS));

        second = spawn_daemon(args, NULL, NULL, NULL, &err_fd);
        g_assert_true(test_daemon_wait(second, TIMEOUT_MS));
        err = read_all(err_fd, TIMEOUT_MS);
        close(err_fd);
        g_test_message("second daemon: exit %d: %s", second->exit_status, err);
        g_assert_cmpint(second->exit_status, !=, 0);
        expect = g_strdup_printf("Another portpubd serves varlink on %s", sock);
        g_assert_nonnull(strstr(err, expect));
        test_daemon_free(second);

        g_assert_true(wait_serving(first, sock, TIMEOUT_MS));
        g_assert_cmpint(test_daemon_stop(first), ==, 0);
        test_daemon_free(first);
        g_assert_cmpint(rmdir(dir), ==, 0);
}

/* ---- hostile clients ------------------------------------------------------------------------- */

static void assert_prober(gint64 worst_us) {
        if (worst_us > PROBER_WORST_MAX_US)
                g_error("the well-behaved client waited %.1f ms for a reply", worst_us / 1000.0);
}

/* Garbage closes the connection; the daemon and another client go on. */
static void test_hostile_garbage(Fixture *f, gconstpointer data) {
        gsize rss_max = 0;
        static const char *const garbage[] = {
                "\x01\x02\x03\xfe\xff garbage",
                "not json",
                "[1,2]",
                "{\"method\":",
                "{\"method\":\"" IFACE ".GetStatus\",\"parameters\":{\"x\":\"\xff\"}}",
        };
        gsize before = rss_kb(f->daemon->pid);
        Prober *prober = prober_start(f->varlink, f->daemon->pid);
        g_autoptr(VClient) after = NULL;
        guint8 noise[65536];

        for (size_t i = 0; i < G_N_ELEMENTS(garbage); i++) {
                g_autoptr(VClient) c = vc_new(f->varlink);

                (void) vc_write_raw(c, garbage[i], strlen(garbage[i]) + 1);
                vc_expect_eof(c);
        }
        for (unsigned round = 0; round < 16; round++) {
                g_autoptr(VClient) c = vc_new(f->varlink);

                for (size_t i = 0; i < sizeof noise; i++)
                        noise[i] = (guint8) g_random_int_range(0, 256);
                (void) vc_write_raw(c, noise, sizeof noise);
                vc_expect_eof(c);
        }
        assert_prober(prober_stop(prober, "garbage", before, &rss_max));
        g_assert_cmpuint(rss_max, <, before + RSS_GROWTH_MAX_KB);
        g_assert_true(daemon_alive(f->daemon));
        after = vc_new(f->varlink);
        g_assert_cmpint(status_field(after, "ports"), ==, 0);
}

/* A message without NUL is cut off at 16 MiB: the connection is closed, not earlier, and the
 * daemon's memory stays bounded. */
static void test_hostile_oversized(Fixture *f, gconstpointer data) {
        gsize rss_max = 0;
        static const char head[] = "{\"method\":\"" IFACE ".GetStatus\",\"parameters\":{\"x\":\"";
        const size_t total = VARLINK_MESSAGE_MAX + 4 * 1024 * 1024, chunk = 1024 * 1024;
        gsize before = rss_kb(f->daemon->pid), after_kb, peak_kb = before;
        Prober *prober = prober_start(f->varlink, f->daemon->pid);
        g_autoptr(VClient) c = vc_new(f->varlink);
        g_autoptr(VClient) again = NULL;
        g_autofree char *buf = g_malloc(chunk);
        size_t written = 0;
        gint64 worst;
        int r = 0;

        memset(buf, 'a', chunk);
        vc_write(c, head, strlen(head));
        written = strlen(head);
        while (written < total) {
                size_t n = MIN(chunk, total - written);

                r = vc_write_raw(c, buf, n);
                if (r < 0)
                        break;
                written += n;
                peak_kb = MAX(peak_kb, rss_kb(f->daemon->pid));
        }
        g_test_message("oversized: %zu bytes written, then %s", written,
                       r < 0 ? g_strerror(-r) : "all of it");
        vc_expect_eof(c);
        /* Closed once it held 16 MiB, not before; a blocking write may have stopped a little
         * short of where the daemon was, never before the limit. */
        g_assert_cmpuint(written, >=, VARLINK_MESSAGE_MAX - chunk);
        worst = prober_stop(prober, "a message without NUL past 16 MiB", before, &rss_max);
        g_assert_cmpuint(rss_max, <, before + RSS_GROWTH_MAX_KB);
        after_kb = rss_kb(f->daemon->pid);
        g_test_message("FIGURES oversized: daemon VmRSS at most %zu kB while it was written "
                       "(growth %zd kB), %zu kB after the close",
                       peak_kb, (gssize) peak_kb - (gssize) before, after_kb);
        assert_prober(worst);
        g_assert_true(daemon_alive(f->daemon));
        again = vc_new(f->varlink);
        g_assert_cmpint(status_field(again, "ports"), ==, 0);
        g_assert_cmpuint(peak_kb, <, before + RSS_GROWTH_MAX_KB);
        g_assert_cmpuint(after_kb, <, before + RSS_GROWTH_MAX_KB);
}

/* Ports per PublishPorts (2 events a port): the daemon builds them in one go, so a batch is
 * also the longest the well-behaved client can be kept waiting by the churn itself. */
#define CHURN_BATCH 100
/* The longest id there is: the events, which name the sandbox twice, fill the queue sooner. */
#define CHURN_SANDBOX "churn-7890123456789012345678901234567890123456789012345678901234"
#define CHURN_EVENTS_MAX 200000

static gboolean hung_up(int fd) {
        struct pollfd p = { .fd = fd, .events = POLLRDHUP };

        return poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* A client that calls Monitor and never reads is dropped once its queue is full; the daemon's
 * memory stays bounded and other clients are served. */
static void test_hostile_monitor_no_read(Fixture *f, gconstpointer data) {
        gsize rss_max = 0;
        gsize before = rss_kb(f->daemon->pid), after_kb;
        g_autoptr(VClient) hostile = vc_new(f->varlink);
        g_autoptr(VClient) churn = vc_new(f->varlink);
        g_autofree char *monitor = call_text("Monitor", NULL, ",'more':true");
        g_autofree char *spec = port_spec("tcp", "127.0.0.1", 0, 9);
        g_autoptr(GString) publish = g_string_new(NULL);
        gint64 t0 = g_get_monotonic_time(), worst;
        guint64 events = 0;
        gboolean dropped = FALSE;
        Prober *prober;
        int rcvbuf = 4096;

        /* Little of the stream fits in the socket: the daemon's queue takes the rest. */
        (void) setsockopt(hostile->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
        vc_send(hostile, monitor);
        g_string_append(publish,
                        "{'sandbox':'" CHURN_SANDBOX "','guestAddresses':['127.0.0.1'],'ports':[");
        for (int i = 0; i < CHURN_BATCH; i++)
                g_string_append_printf(publish, "%s%s", i ? "," : "", spec);
        g_string_append(publish, "]}");
        prober = prober_start(f->varlink, f->daemon->pid);

        while (events < CHURN_EVENTS_MAX && !dropped &&
               g_get_monotonic_time() - t0 < 60 * G_USEC_PER_SEC) {
                g_autoptr(json_object) m = vcall(churn, "PublishPorts", "%s", publish->str);
                g_autoptr(json_object) u = NULL;
                g_autoptr(GString) keys = g_string_new(NULL);
                json_object *p = reply_params(m);

                g_assert_cmpuint(jlen(p, "ports"), ==, CHURN_BATCH);
                for (int i = 0; i < CHURN_BATCH; i++) {
                        g_autofree char *path = g_strdup_printf("ports[%d].hostPort", i);
                        g_autofree char *k = port_key("tcp", "127.0.0.1", (guint) jint(p, path));

                        g_string_append_printf(keys, "%s%s", i ? "," : "", k);
                }
                u = vcall(churn, "UnpublishPorts", "{'sandbox':'" CHURN_SANDBOX "','ports':[%s]}",
                          keys->str);
                reply_params(u);
                events += 2 * CHURN_BATCH;
                dropped = hung_up(hostile->fd);
        }
        g_test_message("FIGURES monitor-no-read: dropped after %" G_GUINT64_FORMAT " events (%.1f s)",
                       events, (g_get_monotonic_time() - t0) / 1e6);
        g_assert_true(dropped);
        vc_expect_eof(hostile);
        worst = prober_stop(prober, "a Monitor that never reads", before, &rss_max);
        g_assert_cmpuint(rss_max, <, before + RSS_GROWTH_MAX_KB);
        after_kb = rss_kb(f->daemon->pid);
        g_test_message("FIGURES monitor-no-read: daemon VmRSS %zu kB after the drop", after_kb);
        assert_prober(worst);
        g_assert_true(daemon_alive(f->daemon));
        g_assert_cmpint(status_field(churn, "ports"), ==, 0);
        g_assert_cmpuint(after_kb, <, before + RSS_GROWTH_MAX_KB);
}

#define IDLE_CONNECTIONS 5000

/* 5000 idle connections of root: root's 1024 (the well-behaved client's among them) are
 * accepted and served, the rest closed at once; a client of another uid is still served; once
 * they go, root may connect again. */
static void test_hostile_idle_connections(Fixture *f, gconstpointer data) {
        gsize rss_max = 0;
        gsize before = rss_kb(f->daemon->pid);
        const guint expect_open = VARLINK_CONNECTIONS_PER_UID_MAX - 1; /* the prober is root's */
        g_autofree struct pollfd *fds = g_new0(struct pollfd, IDLE_CONNECTIONS);
        g_autofree char *status = dequote("{'method':'" IFACE ".GetStatus'}");
        gint64 deadline, worst;
        struct rlimit rl;
        Prober *prober;
        guint closed = 0, answered = 0;

        g_assert_cmpint(getrlimit(RLIMIT_NOFILE, &rl), ==, 0);
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < IDLE_CONNECTIONS + 256) {
                g_test_skip("RLIMIT_NOFILE's hard limit is too low for 5000 connections");
                return;
        }
        prober = prober_start(f->varlink, f->daemon->pid);
        for (guint i = 0; i < IDLE_CONNECTIONS; i++) {
                int fd = vl_socket_connect(f->varlink);

                if (fd < 0)
                        g_error("connection %u: %s", i, g_strerror(-fd));
                fds[i] = (struct pollfd){ .fd = fd, .events = POLLRDHUP };
        }
        /* The daemon accepts them all, keeps root's 1024 and closes the others. */
        deadline = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;
        while (g_get_monotonic_time() < deadline) {
                closed = 0;
                if (poll(fds, IDLE_CONNECTIONS, 100) < 0)
                        g_error("poll: %s", g_strerror(errno));
                for (guint i = 0; i < IDLE_CONNECTIONS; i++)
                        closed += (fds[i].revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
                if (closed >= IDLE_CONNECTIONS - expect_open)
                        break;
        }
        g_test_message("FIGURES idle-connections: %u of %u closed by the daemon", closed,
                       IDLE_CONNECTIONS);
        g_assert_cmpuint(closed, ==, IDLE_CONNECTIONS - expect_open);

        /* Those left open were accepted: each answers. */
        for (guint i = 0; i < IDLE_CONNECTIONS; i++)
                if (!(fds[i].revents & (POLLRDHUP | POLLHUP | POLLERR)))
                        g_assert_cmpint(send(fds[i].fd, status, strlen(status) + 1, MSG_NOSIGNAL),
                                        ==, (ssize_t) strlen(status) + 1);
        for (guint i = 0; i < IDLE_CONNECTIONS; i++) {
                g_autofree char *reply = NULL;
                VClient c = { .fd = fds[i].fd, .in = g_byte_array_new() };

                if (!(fds[i].revents & (POLLRDHUP | POLLHUP | POLLERR))) {
                        g_assert_cmpint(vc_read_raw(&c, TIMEOUT_MS, &reply), ==, 1);
                        g_assert_nonnull(strstr(reply, "\"version\""));
                        answered++;
                }
                g_byte_array_unref(c.in);
        }
        g_assert_cmpuint(answered, ==, expect_open);

        /* Root is at its limit: another uid is not. */
        if (geteuid() == 0) {
                g_autofree char *text = call_text("GetStatus", NULL, NULL);
                const char *calls[] = { text, NULL };
                ClientRun run;

                if (run_stranger(f->varlink, calls, &run)) {
                        jstr(reply_params(run_reply(&run, 0)), "version");
                        client_run_clear(&run);
                } else
                        g_test_skip("cannot switch a child process to uid 65534 here: another "
                                    "uid's client not tried");
        } else
                g_test_skip("not root: another uid's client not tried");
        /* And root is at it: one more is closed. */
        {
                int fd = vl_socket_connect(f->varlink);
                VClient *c;

                g_assert_cmpint(fd, >=, 0);
                c = vc_new_fd(fd);
                (void) vc_write_raw(c, status, strlen(status) + 1);
                vc_expect_eof(c);
                vc_free(c);
        }
        worst = prober_stop(prober, "5000 idle connections", before, &rss_max);
        g_assert_cmpuint(rss_max, <, before + RSS_GROWTH_MAX_KB);
        for (guint i = 0; i < IDLE_CONNECTIONS; i++)
                close(fds[i].fd);
        assert_prober(worst);
        g_assert_true(daemon_alive(f->daemon));
        g_test_message("FIGURES idle-connections: daemon VmRSS %zu kB with them closed",
                       rss_kb(f->daemon->pid));
}

static const char *const no_state_args[] = { "--state-file=", NULL };
static const TestDaemonOptions plain = {};
static const char *hostile_env[2];
static const TestDaemonOptions hostile = { .extra_args = no_state_args, .env = hostile_env };
static const char *const fail_relay_env[] = { "PORTPUB_TEST_FAIL_RELAY=2", NULL };
static const TestDaemonOptions fail_relay = { .env = fail_relay_env };

int main(int argc, char *argv[]) {
        if (argc >= 3 && strcmp(argv[1], "--varlink-client") == 0)
                return client_main(argc, argv);

        g_test_init(&argc, &argv, NULL);
        /* A sanitizer build's daemon would hold what it frees in ASan's quarantine (256 MiB),
         * which says nothing of what the daemon keeps; ignored by a normal build. */
        g_autofree char *asan = g_strdup_printf("ASAN_OPTIONS=%s%squarantine_size_mb=0",
                                                g_getenv("ASAN_OPTIONS") ?: "",
                                                g_getenv("ASAN_OPTIONS") ? ":" : "");
        hostile_env[0] = asan;
        g_test_add("/varlink-api/methods", Fixture, &plain, fixture_setup, test_methods,
                   fixture_teardown);
        g_test_add("/varlink-api/errors", Fixture, &plain, fixture_setup, test_errors,
                   fixture_teardown);
        g_test_add("/varlink-api/invalid-parameter", Fixture, &plain, fixture_setup,
                   test_invalid_parameter, fixture_teardown);
        g_test_add("/varlink-api/interface-description", Fixture, &plain, fixture_setup,
                   test_interface_description, fixture_teardown);
        g_test_add("/varlink-api/relay-and-dbus-object", Fixture, &plain, fixture_setup,
                   test_relay_and_dbus_object, fixture_teardown);
        g_test_add("/varlink-api/relay-ipv6", Fixture, &plain, fixture_setup, test_relay_ipv6,
                   fixture_teardown);
        g_test_add("/varlink-api/dbus-publication", Fixture, &plain, fixture_setup,
                   test_dbus_publication, fixture_teardown);
        g_test_add("/varlink-api/oneway", Fixture, &plain, fixture_setup, test_oneway,
                   fixture_teardown);
        g_test_add("/varlink-api/pipelining", Fixture, &plain, fixture_setup, test_pipelining,
                   fixture_teardown);
        g_test_add("/varlink-api/monitor", Fixture, &plain, fixture_setup, test_monitor,
                   fixture_teardown);
        g_test_add("/varlink-api/bind-to-caller", Fixture, &plain, fixture_setup,
                   test_bind_to_caller, fixture_teardown);
        g_test_add("/varlink-api/stranger", Fixture, &plain, fixture_setup, test_stranger,
                   fixture_teardown);
        g_test_add("/varlink-api/failed", Fixture, &fail_relay, fixture_setup, test_failed,
                   fixture_teardown);
        g_test_add_func("/varlink-api/permission-denied", test_permission_denied);
        g_test_add_func("/varlink-api/no-bus", test_no_bus);
        g_test_add_func("/varlink-api/socket-activation", test_socket_activation);
        g_test_add_func("/varlink-api/stale-and-live-socket", test_stale_and_live_socket);
        g_test_add("/varlink-api/hostile/garbage", Fixture, &hostile, fixture_setup,
                   test_hostile_garbage, fixture_teardown);
        g_test_add("/varlink-api/hostile/oversized", Fixture, &hostile, fixture_setup,
                   test_hostile_oversized, fixture_teardown);
        g_test_add("/varlink-api/hostile/monitor-no-read", Fixture, &hostile, fixture_setup,
                   test_hostile_monitor_no_read, fixture_teardown);
        g_test_add("/varlink-api/hostile/idle-connections", Fixture, &hostile, fixture_setup,
                   test_hostile_idle_connections, fixture_teardown);
        return g_test_run();
}
