/* Tests for the varlink server: org.varlink.service, errors, oneway, more, pipelining, limits */

/*
 * The server runs on a real libev loop in the test's thread, listening on a real AF_UNIX socket
 * in a temporary directory. The clients are raw sockets written here: they send bytes exactly
 * as a test wants them (several calls in one write, garbage, a message without its NUL) and read
 * replies while the test runs the loop, since server and client share the thread. Only a client
 * that has to block (writing megabytes) runs in a thread of its own, and a client of another uid
 * in a forked child that makes nothing but system calls.
 */

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <grp.h>
#include <json-c/json.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"
#include "varlink.h"

#define TIMEOUT_S 10.0
#define NOBODY 65534
#define TEST_INTERFACE "io.portpub.test"

static const char test_description[] =
        "# Methods for the server's tests.\n"
        "interface io.portpub.test\n"
        "\n"
        "type Thing (method: string, error: ?int)\n"
        "\n"
        "method Echo(value: ?object) -> (value: ?object)\n"
        "\n"
        "# Answers from an ev_timer after delayMSec; with \"more\", count replies, one a tick.\n"
        "method Later(value: int, delayMSec: int, count: ?int) -> (value: int)\n"
        "\n"
        "# With \"more\": n replies at once.\n"
        "method Count(n: int) -> (i: int)\n"
        "\n"
        "# With \"more\": replies of size bytes until the connection goes.\n"
        "method Stream(size: int) -> (data: string)\n"
        "\n"
        "method Whoami() -> (uid: int, pid: int)\n"
        "\n"
        "method Size(value: string) -> (size: int)\n"
        "\n"
        "# Answered when the test says.\n"
        "method Held(i: int) -> (i: int)\n"
        "\n"
        "# Never answered; no cancel callback.\n"
        "method Kept() -> ()\n"
        "\n"
        "method Fail() -> ()\n"
        "\n"
        "method Oneway(value: int) -> ()\n"
        "\n"
        "# With \"more\": gets a reply per Publish.\n"
        "method Subscribe() -> (data: string)\n"
        "\n"
        "# Sends size bytes to every subscriber.\n"
        "method Publish(size: int) -> ()\n"
        "\n"
        "method Unimplemented(\n"
        "  method: string\n"
        ") -> ()\n"
        "\n"
        "error Thrown (thing: Thing)\n";

typedef struct Fixture {
        struct ev_loop *loop;
        VarlinkServer *server;
        char *dir;
        char *path;
        ev_timer guard;
        bool timed_out;

        GString *dispatched; /* "Method " per handler run */
        GPtrArray *held; /* Held calls, in order */
        GPtrArray *subscribers; /* Subscribe calls */
        GArray *held_i; /* their "i" */
        VarlinkCall *kept; /* with a reference of ours */
        unsigned cancelled;
        GString *events; /* connected/cancel/disconnected, in order */
        GArray *oneway_values;
        int continue_without_more; /* what reply_continue returned on a call without "more" */
        int stream_error;
        size_t streamed;
        char *blob;
        bool refuse_connections;
} Fixture;

/* ---- the test interface ---------------------------------------------------------------------- */

static int64_t param_int(json_object *p, const char *key, int64_t def) {
        json_object *v;

        return json_object_object_get_ex(p, key, &v) && v ? json_object_get_int64(v) : def;
}

static json_object *object_int(const char *key, int64_t value) {
        json_object *o = json_object_new_object();

        g_assert_nonnull(o);
        g_assert_cmpint(json_object_object_add(o, key, json_object_new_int64(value)), ==, 0);
        return o;
}

static void record(Fixture *f, VarlinkCall *call) {
        const char *m = varlink_call_method(call);

        g_string_append_printf(f->dispatched, "%s ", strrchr(m, '.') + 1);
}

static int method_echo(VarlinkCall *call, json_object *parameters, unsigned flags, void *userdata) {
        json_object *p = json_object_new_object(), *v;

        record(userdata, call);
        if (json_object_object_get_ex(parameters, "value", &v))
                json_object_object_add(p, "value", json_object_get(v));
        return varlink_call_reply(call, p);
}

typedef struct Pending {
        Fixture *f;
        VarlinkCall *call;
        ev_timer timer;
        int64_t value;
        int64_t count;
        bool more;
} Pending;

static void pending_cancel(VarlinkCall *call, void *userdata) {
        Pending *p = userdata;

        /* Still there during the callback; replies are not. */
        g_assert_nonnull(varlink_call_connection(call));
        g_assert_cmpint(varlink_call_reply(call, NULL), ==, -ESTALE);
        ev_timer_stop(p->f->loop, &p->timer);
        p->f->cancelled++;
        g_string_append(p->f->events, "cancel ");
        g_free(p);
}

static void pending_timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
        Pending *p = w->data;

        if (p->more && --p->count > 0) {
                g_assert_cmpint(varlink_call_reply_continue(p->call, object_int("value", p->value)),
                                ==, 0);
                return;
        }
        ev_timer_stop(loop, w);
        g_assert_cmpint(varlink_call_reply(p->call, object_int("value", p->value)), ==, 0);
        g_free(p);
}

static int method_later(VarlinkCall *call, json_object *parameters, unsigned flags, void *userdata) {
        Pending *p = g_new0(Pending, 1);
        double delay = (double) param_int(parameters, "delayMSec", 0) / 1000.;

        record(userdata, call);
        p->f = userdata;
        p->call = call;
        p->value = param_int(parameters, "value", 0);
        p->count = param_int(parameters, "count", 1);
        p->more = flags & VARLINK_CALL_MORE;
        ev_timer_init(&p->timer, pending_timer_cb, delay, delay);
        p->timer.data = p;
        ev_timer_start(p->f->loop, &p->timer);
        varlink_call_set_cancel(call, pending_cancel, p);
        return 0;
}

static int method_count(VarlinkCall *call, json_object *parameters, unsigned flags, void *userdata) {
        Fixture *f = userdata;
        int64_t n = param_int(parameters, "n", 1);

        record(f, call);
        if (!(flags & VARLINK_CALL_MORE)) {
                f->continue_without_more = varlink_call_reply_continue(call, object_int("i", 0));
                return varlink_call_reply(call, object_int("i", 0));
        }
        for (int64_t i = 0; i < n - 1; i++)
                g_assert_cmpint(varlink_call_reply_continue(call, object_int("i", i)), ==, 0);
        return varlink_call_reply(call, object_int("i", n - 1));
}

typedef struct Streamer {
        Fixture *f;
        VarlinkCall *call;
        ev_idle idle;
        size_t size;
} Streamer;

static void streamer_cb(struct ev_loop *loop, ev_idle *w, int revents) {
        Streamer *st = w->data;

        for (unsigned i = 0; i < 8; i++) {
                json_object *p = json_object_new_object();
                int r;

                json_object_object_add(p, "data",
                                       json_object_new_string_len(st->f->blob, (int) st->size));
                r = varlink_call_reply_continue(st->call, p);
                if (r < 0) {
                        /* The connection is gone: the cancel callback follows. */
                        st->f->stream_error = r;
                        ev_idle_stop(loop, w);
                        return;
                }
                st->f->streamed += st->size;
        }
}

static void streamer_cancel(VarlinkCall *call, void *userdata) {
        Streamer *st = userdata;

        ev_idle_stop(st->f->loop, &st->idle);
        st->f->cancelled++;
        g_free(st);
}

static int method_stream(VarlinkCall *call, json_object *parameters, unsigned flags, void *userdata) {
        Streamer *st = g_new0(Streamer, 1);

        record(userdata, call);
        g_assert_true(flags & VARLINK_CALL_MORE);
        st->f = userdata;
        st->call = call;
        st->size = (size_t) param_int(parameters, "size", 1024);
        g_assert_cmpuint(st->size, <=, 1024 * 1024);
        ev_idle_init(&st->idle, streamer_cb);
        st->idle.data = st;
        ev_idle_start(st->f->loop, &st->idle);
        varlink_call_set_cancel(call, streamer_cancel, st);
        return 0;
}

static int method_whoami(VarlinkCall *call, json_object *parameters, unsigned flags, void *userdata) {
        VarlinkConnection *c = varlink_call_connection(call);
        json_object *p = object_int("uid", varlink_connection_uid(c));

        record(userdata, call);
        json_object_object_add(p, "pid", json_object_new_int64(varlink_connection_pid(c)));
        return varlink_call_reply(call, p);
}

static int method_size(VarlinkCall *call, json_object *parameters, unsigned flags, void *userdata) {
        json_object *v;

        record(userdata, call);
        if (!json_object_object_get_ex(parameters, "value", &v) ||
            !json_object_is_type(v, json_type_string))
                return varlink_call_reply_invalid_parameter(call, "value");
        return varlink_call_reply(call, object_int("size", json_object_get_string_len(v)));
}

static void held_cancel(VarlinkCall *call, void *userdata) {
        Fixture *f = userdata;
        guint i;

        g_assert_true(g_ptr_array_find(f->held, call, &i));
        g_ptr_array_remove_index(f->held, i);
        g_array_remove_index(f->held_i, i);
        f->cancelled++;
        g_string_append(f->events, "cancel ");
}

static int method_held(VarlinkCall *call, json_object *parameters, unsigned flags, void *userdata) {
        Fixture *f = userdata;
        int64_t i = param_int(parameters, "i", -1);

        record(f, call);
        g_ptr_array_add(f->held, call);
        g_array_append_val(f->held_i, i);
        varlink_call_set_cancel(call, held_cancel, f);
        return 0;
}

/* Answers the index'th Held call waiting. */
static void held_answer(Fixture *f, guint index) {
        VarlinkCall *call = f->held->pdata[index];
        int64_t i = g_array_index(f->held_i, int64_t, index);

        g_ptr_array_remove_index(f->held, index);
        g_array_remove_index(f->held_i, index);
        g_assert_cmpint(varlink_call_reply(call, object_int("i", i)), ==, 0);
}

static int method_kept(VarlinkCall *call, json_object *parameters, unsigned flags, void *userdata) {
        Fixture *f = userdata;

        record(f, call);
        g_assert_null(f->kept);
        f->kept = varlink_call_ref(call);
        return 0;
}

static int method_fail(VarlinkCall *call, json_object *parameters, unsigned flags, void *userdata) {
        record(userdata, call);
        return -EIO;
}

static int method_oneway(VarlinkCall *call, json_object *parameters, unsigned flags, void *userdata) {
        Fixture *f = userdata;
        int v = (int) param_int(parameters, "value", -1);

        record(f, call);
        g_assert_true(flags & VARLINK_CALL_ONEWAY);
        g_array_append_val(f->oneway_values, v);
        /* Allowed, and nothing is sent. */
        return varlink_call_reply(call, NULL);
}

static void subscriber_cancel(VarlinkCall *call, void *userdata) {
        Fixture *f = userdata;

        g_assert_true(g_ptr_array_remove(f->subscribers, call));
        f->cancelled++;
}

static int method_subscribe(VarlinkCall *call, json_object *parameters, unsigned flags,
                            void *userdata) {
        Fixture *f = userdata;

        record(f, call);
        g_assert_true(flags & VARLINK_CALL_MORE);
        g_ptr_array_add(f->subscribers, call);
        varlink_call_set_cancel(call, subscriber_cancel, f);
        return 0;
}

/* Replies to the calls of other connections, which may close them (a subscriber that does not
 * read) while the server is in the middle of its own pass over connections. */
static int method_publish(VarlinkCall *call, json_object *parameters, unsigned flags, void *userdata) {
        Fixture *f = userdata;
        int size = (int) param_int(parameters, "size", 1);

        for (guint i = 0; i < f->subscribers->len; i++) {
                json_object *p = json_object_new_object();
                int r;

                json_object_object_add(p, "data", json_object_new_string_len(f->blob, size));
                r = varlink_call_reply_continue(f->subscribers->pdata[i], p);
                if (r < 0 && f->stream_error == 0)
                        f->stream_error = r; /* the first: later ones find it gone, -ESTALE */
        }
        return varlink_call_reply(call, NULL);
}

static const VarlinkMethod test_methods[] = {
        { "Echo", method_echo },           { "Later", method_later },
        { "Count", method_count },         { "Stream", method_stream },
        { "Whoami", method_whoami },       { "Size", method_size },
        { "Held", method_held },           { "Kept", method_kept },
        { "Fail", method_fail },           { "Oneway", method_oneway },
        { "Subscribe", method_subscribe }, { "Publish", method_publish },
};

static const VarlinkInterface test_interface = {
        .name = TEST_INTERFACE,
        .description = test_description,
        .methods = test_methods,
        .n_methods = G_N_ELEMENTS(test_methods),
};

static int hook_connected(VarlinkConnection *c, void *userdata) {
        Fixture *f = userdata;

        g_string_append(f->events, "connected ");
        g_assert_cmpint(varlink_connection_pid(c), >, 0);
        varlink_connection_set_userdata(c, f);
        return f->refuse_connections ? -EPERM : 0;
}

static void hook_disconnected(VarlinkConnection *c, void *userdata) {
        Fixture *f = userdata;

        g_assert_true(varlink_connection_get_userdata(c) == f);
        g_string_append(f->events, "disconnected ");
}

static const VarlinkConnectionHooks connection_hooks = {
        .connected = hook_connected,
        .disconnected = hook_disconnected,
};

/* ---- the fixture ----------------------------------------------------------------------------- */

static void guard_cb(struct ev_loop *loop, ev_timer *w, int revents) {
        Fixture *f = w->data;

        f->timed_out = true;
}

static VarlinkServer *server_new(Fixture *f) {
        VarlinkServer *s;

        g_assert_cmpint(varlink_server_new(&s, f->loop,
                                           &(VarlinkServerInfo){ .vendor = "portpub",
                                                                 .product = "test-varlink",
                                                                 .version = "1",
                                                                 .url = "https://portpub.io" }),
                        ==, 0);
        g_assert_cmpint(varlink_server_add_interface(s, &test_interface, f), ==, 0);
        varlink_server_set_hooks(s, &connection_hooks, f);
        return s;
}

static void fixture_setup(Fixture *f, gconstpointer data) {
        GError *error = NULL;

        f->loop = ev_loop_new(EVFLAG_AUTO);
        g_assert_nonnull(f->loop);
        ev_init(&f->guard, guard_cb);
        f->guard.data = f;
        f->dir = g_dir_make_tmp("test-varlink-XXXXXX", &error);
        g_assert_no_error(error);
        /* For the client of another uid. */
        g_assert_cmpint(chmod(f->dir, 0755), ==, 0);
        f->path = g_build_filename(f->dir, "socket", NULL);
        f->dispatched = g_string_new(NULL);
        f->events = g_string_new(NULL);
        f->held = g_ptr_array_new();
        f->subscribers = g_ptr_array_new();
        f->held_i = g_array_new(FALSE, FALSE, sizeof(int64_t));
        f->oneway_values = g_array_new(FALSE, FALSE, sizeof(int));
        f->blob = g_malloc(1024 * 1024);
        memset(f->blob, 'x', 1024 * 1024);

        f->server = server_new(f);
        g_assert_cmpint(varlink_server_listen_path(f->server, f->path, 0666), ==, 0);
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
        f->server = varlink_server_free(f->server);
        g_assert_cmpuint(f->held->len, ==, 0); /* all cancelled */
        if (f->kept) {
                /* Detached by the free: the handler side still owes its answer. */
                g_assert_null(varlink_call_connection(f->kept));
                g_assert_cmpint(varlink_call_reply(f->kept, NULL), ==, -ESTALE);
                f->kept = varlink_call_unref(f->kept);
        }
        g_assert_false(g_file_test(f->path, G_FILE_TEST_EXISTS));
        ev_timer_stop(f->loop, &f->guard);
        ev_loop_destroy(f->loop);
        g_rmdir(f->dir);
        g_free(f->dir);
        g_free(f->path);
        g_string_free(f->dispatched, TRUE);
        g_string_free(f->events, TRUE);
        g_ptr_array_free(f->held, TRUE);
        g_assert_cmpuint(f->subscribers->len, ==, 0);
        g_ptr_array_free(f->subscribers, TRUE);
        g_array_free(f->held_i, TRUE);
        g_array_free(f->oneway_values, TRUE);
        g_free(f->blob);
}

/* Runs the loop until cond(f, data) or the timeout; FALSE on timeout. */
static gboolean run_until(Fixture *f, gboolean (*cond)(Fixture *f, gconstpointer data),
                          gconstpointer data, double timeout) {
        double deadline = ev_time() + timeout;

        while (!cond(f, data)) {
                double left = deadline - ev_time();

                if (left <= 0)
                        return FALSE;
                ev_timer_stop(f->loop, &f->guard);
                ev_timer_set(&f->guard, MIN(left, 0.05), 0.);
                ev_timer_start(f->loop, &f->guard);
                ev_run(f->loop, EVRUN_ONCE);
        }
        ev_timer_stop(f->loop, &f->guard);
        return TRUE;
}

static gboolean cond_never(Fixture *f, gconstpointer data) {
        return FALSE;
}

static void run_for(Fixture *f, double seconds) {
        (void) run_until(f, cond_never, NULL, seconds);
}

static gboolean cond_n_connections(Fixture *f, gconstpointer data) {
        return varlink_server_n_connections(f->server) == GPOINTER_TO_UINT(data);
}

static void wait_n_connections(Fixture *f, unsigned n) {
        if (!run_until(f, cond_n_connections, GUINT_TO_POINTER(n), TIMEOUT_S))
                g_error("expected %u connections, have %u", n,
                        varlink_server_n_connections(f->server));
}

/* ---- a raw client ----------------------------------------------------------------------------- */

typedef struct Client {
        int fd;
        GByteArray *buf; /* read, not yet returned */
        bool eof;
        ev_io io; /* wakes the loop when the client has something to read */
} Client;

static void client_io_cb(struct ev_loop *loop, ev_io *w, int revents) {
        ev_io_stop(loop, w);
}

static int socket_connect(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd;

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        g_assert_cmpint(fd, >=, 0);
        g_strlcpy(sa.sun_path, path, sizeof sa.sun_path);
        if (connect(fd, (struct sockaddr *) &sa, sizeof sa) < 0)
                g_error("connect(%s): %s", path, g_strerror(errno));
        return fd;
}

static Client *client_new_path(const char *path) {
        Client *c = g_new0(Client, 1);

        c->fd = socket_connect(path);
        c->buf = g_byte_array_new();
        ev_io_init(&c->io, client_io_cb, c->fd, EV_READ);
        return c;
}

static Client *client_new(Fixture *f) {
        return client_new_path(f->path);
}

static void client_free(Fixture *f, Client *c) {
        if (!c)
                return;
        ev_io_stop(f->loop, &c->io);
        close(c->fd);
        g_byte_array_free(c->buf, TRUE);
        g_free(c);
}

/* Writes all of data, running nothing: the socket buffer must take it. */
static void client_write(Client *c, const void *data, size_t len) {
        const char *p = data;

        while (len > 0) {
                ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);

                if (n < 0)
                        g_error("send: %s", g_strerror(errno));
                p += n;
                len -= (size_t) n;
        }
}

/* Sends the messages given, each ended by its NUL, in a single write. */
static void client_send(Client *c, const char *first, ...) {
        GByteArray *b = g_byte_array_new();
        va_list ap;

        va_start(ap, first);
        for (const char *m = first; m; m = va_arg(ap, const char *))
                g_byte_array_append(b, (const guint8 *) m, (guint) strlen(m) + 1);
        va_end(ap);
        client_write(c, b->data, b->len);
        g_byte_array_free(b, TRUE);
}

/* Reads what is there without blocking; FALSE at EOF or a reset. */
static gboolean client_pull(Client *c) {
        char buf[65536];

        for (;;) {
                ssize_t n = recv(c->fd, buf, sizeof buf, MSG_DONTWAIT);

                if (n > 0) {
                        g_byte_array_append(c->buf, (guint8 *) buf, (guint) n);
                        continue;
                }
                if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                        c->eof = true;
                        return FALSE;
                }
                if (errno == EAGAIN)
                        return TRUE;
        }
}

static gboolean client_has_message(const Client *c) {
        return c->buf->len > 0 && memchr(c->buf->data, 0, c->buf->len) != NULL;
}

static gboolean cond_message_or_eof(Fixture *f, gconstpointer data) {
        Client *c = (Client *) data;

        if (!c->eof)
                (void) client_pull(c);
        if (client_has_message(c) || c->eof)
                return TRUE;
        ev_io_start(f->loop, &c->io);
        return FALSE;
}

/* The next message, parsed; NULL at EOF. */
static json_object *client_recv(Fixture *f, Client *c) {
        json_object *m;
        guint8 *nul;
        size_t len;

        if (!run_until(f, cond_message_or_eof, c, TIMEOUT_S))
                g_error("no reply within %.0f s", TIMEOUT_S);
        nul = c->buf->len > 0 ? memchr(c->buf->data, 0, c->buf->len) : NULL;
        if (!nul)
                return NULL;
        len = (size_t) (nul - c->buf->data);
        {
                struct json_tokener *tok = json_tokener_new_ex(128);

                m = json_tokener_parse_ex(tok, (const char *) c->buf->data, (int) len);
                json_tokener_free(tok);
        }
        if (!m)
                g_error("not JSON: %.*s", (int) MIN(len, 200), c->buf->data);
        g_byte_array_remove_range(c->buf, 0, (guint) len + 1);
        return m;
}

static void client_expect_eof(Fixture *f, Client *c) {
        json_object *m = client_recv(f, c);

        if (m)
                g_error("expected EOF, got %s", json_object_to_json_string(m));
}

/* Nothing arrives for a while. */
static void client_expect_silence(Fixture *f, Client *c, double seconds) {
        ev_io_start(f->loop, &c->io);
        run_for(f, seconds);
        g_assert_true(client_pull(c));
        g_assert_cmpuint(c->buf->len, ==, 0);
}

static json_object *get(json_object *o, const char *path) {
        g_auto(GStrv) keys = g_strsplit(path, ".", -1);

        for (char **k = keys; *k; k++) {
                json_object *v;

                if (!o || !json_object_object_get_ex(o, *k, &v))
                        return NULL;
                o = v;
        }
        return o;
}

static const char *get_string(json_object *o, const char *path) {
        json_object *v = get(o, path);

        return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static int64_t get_int(json_object *o, const char *path) {
        json_object *v = get(o, path);

        if (!v || !json_object_is_type(v, json_type_int))
                g_error("%s is no int in %s", path, json_object_to_json_string(o));
        return json_object_get_int64(v);
}

/* A reply (no error) whose parameters.key is value. */
static void assert_reply_int(json_object *m, const char *key, int64_t value, bool continues) {
        g_autofree char *path = g_strconcat("parameters.", key, NULL);
        json_object *c = get(m, "continues");

        g_assert_nonnull(m);
        if (get(m, "error"))
                g_error("unexpected error: %s", json_object_to_json_string(m));
        g_assert_cmpint(get_int(m, path), ==, value);
        g_assert_cmpint(c && json_object_get_boolean(c), ==, continues);
        json_object_put(m);
}

/* An error named error whose parameters.key is value (key NULL: parameters {}). */
static void assert_error(json_object *m, const char *error, const char *key, const char *value) {
        g_assert_nonnull(m);
        g_assert_cmpstr(get_string(m, "error"), ==, error);
        g_assert_nonnull(get(m, "parameters"));
        if (key) {
                g_autofree char *path = g_strconcat("parameters.", key, NULL);

                g_assert_cmpstr(get_string(m, path), ==, value);
        } else
                g_assert_cmpint(json_object_object_length(get(m, "parameters")), ==, 0);
        g_assert_null(get(m, "continues"));
        json_object_put(m);
}

static json_object *client_call(Fixture *f, Client *c, const char *call) {
        client_send(c, call, NULL);
        return client_recv(f, c);
}

/* VmHWM, the process's peak RSS, in bytes; reset_peak_rss() starts it again from the RSS. */
static size_t peak_rss(void) {
        g_autofree char *status = NULL;
        const char *p;

        g_assert_true(g_file_get_contents("/proc/self/status", &status, NULL, NULL));
        p = strstr(status, "VmHWM:");
        g_assert_nonnull(p);
        return (size_t) g_ascii_strtoull(p + 6, NULL, 10) * 1024;
}

static void reset_peak_rss(void) {
        int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(write(fd, "5", 1), ==, 1);
        close(fd);
}

#ifdef __SANITIZE_ADDRESS__
size_t __sanitizer_get_current_allocated_bytes(void);
#endif

/* Bytes the process holds allocated, as its allocator counts them (ASan's when it runs). Freed
 * memory that stays resident, and so RSS, says little about what the server holds now. */
static size_t allocated_bytes(void) {
#ifdef __SANITIZE_ADDRESS__
        return __sanitizer_get_current_allocated_bytes();
#else
        struct mallinfo2 mi = mallinfo2();

        return mi.uordblks + mi.hblkhd;
#endif
}

/* The peak of allocated_bytes() over the loop iterations while it runs, and the peak RSS. */
typedef struct Meter {
        ev_prepare prepare;
        size_t base, peak, rss_base;
} Meter;

static void meter_cb(struct ev_loop *loop, ev_prepare *w, int revents) {
        Meter *m = w->data;

        m->peak = MAX(m->peak, allocated_bytes());
}

static void meter_start(Fixture *f, Meter *m) {
        reset_peak_rss();
        m->rss_base = peak_rss();
        m->base = m->peak = allocated_bytes();
        ev_prepare_init(&m->prepare, meter_cb);
        m->prepare.data = m;
        ev_prepare_start(f->loop, &m->prepare);
}

/* Asserts both grew by less than max; the allocations by at least min, which says the meter
 * saw what it was meant to. */
static void meter_stop(Fixture *f, Meter *m, size_t min, size_t max) {
        size_t rss = peak_rss() - m->rss_base, allocated = m->peak - m->base;

        ev_prepare_stop(f->loop, &m->prepare);
        if (test_under_valgrind()) {
                /* memcheck's allocator is not glibc's: mallinfo2() reads nothing. */
                g_test_skip("allocations cannot be metered under valgrind");
                return;
        }
        g_test_message("allocations peaked %zu KiB higher, RSS %zu KiB", allocated / 1024,
                       rss / 1024);
        g_assert_cmpuint(allocated, >=, min);
        g_assert_cmpuint(allocated, <, max);
#ifdef __SANITIZE_ADDRESS__
        /* ASan's quarantine keeps freed memory resident, up to its default 256 MiB. */
        max += (size_t) 256 << 20;
#endif
        g_assert_cmpuint(rss, <, max);
}

/* ---- org.varlink.service ---------------------------------------------------------------------- */

static void test_get_info(Fixture *f, gconstpointer data) {
        Client *c = client_new(f);
        json_object *m, *l;

        m = client_call(f, c, "{\"method\":\"org.varlink.service.GetInfo\"}");
        g_assert_null(get(m, "error"));
        g_assert_null(get(m, "continues"));
        g_assert_cmpstr(get_string(m, "parameters.vendor"), ==, "portpub");
        g_assert_cmpstr(get_string(m, "parameters.product"), ==, "test-varlink");
        g_assert_cmpstr(get_string(m, "parameters.version"), ==, "1");
        g_assert_cmpstr(get_string(m, "parameters.url"), ==, "https://portpub.io");
        l = get(m, "parameters.interfaces");
        g_assert_true(json_object_is_type(l, json_type_array));
        g_assert_cmpuint(json_object_array_length(l), ==, 2);
        g_assert_cmpstr(json_object_get_string(json_object_array_get_idx(l, 0)), ==,
                        "org.varlink.service");
        g_assert_cmpstr(json_object_get_string(json_object_array_get_idx(l, 1)), ==, TEST_INTERFACE);
        json_object_put(m);

        /* "parameters": null is how varlink-go sends no parameters. */
        m = client_call(f, c, "{\"method\":\"org.varlink.service.GetInfo\",\"parameters\":null}");
        g_assert_cmpstr(get_string(m, "parameters.vendor"), ==, "portpub");
        json_object_put(m);
        client_free(f, c);
}

static void test_get_interface_description(Fixture *f, gconstpointer data) {
        Client *c = client_new(f);
        const char *text;
        json_object *m;

        m = client_call(f, c,
                        "{\"method\":\"org.varlink.service.GetInterfaceDescription\","
                        "\"parameters\":{\"interface\":\"io.portpub.test\"}}");
        g_assert_null(get(m, "error"));
        g_assert_cmpstr(get_string(m, "parameters.description"), ==, test_description);
        json_object_put(m);

        m = client_call(f, c,
                        "{\"method\":\"org.varlink.service.GetInterfaceDescription\","
                        "\"parameters\":{\"interface\":\"org.varlink.service\"}}");
        text = get_string(m, "parameters.description");
        g_assert_nonnull(text);
        g_assert_true(g_str_has_prefix(text, "# The Varlink Service Interface is provided by "
                                             "every varlink service."));
        g_assert_nonnull(strstr(text, "\ninterface org.varlink.service\n"));
        g_assert_nonnull(strstr(text, "\nmethod GetInterfaceDescription(interface: string) -> "
                                      "(description: string)\n"));
        g_assert_nonnull(strstr(text, "\nerror InvalidParameter (parameter: string)"));
        json_object_put(m);

        assert_error(client_call(f, c,
                                 "{\"method\":\"org.varlink.service.GetInterfaceDescription\","
                                 "\"parameters\":{\"interface\":\"io.portpub.nothere\"}}"),
                     "org.varlink.service.InterfaceNotFound", "interface", "io.portpub.nothere");
        assert_error(client_call(f, c, "{\"method\":\"org.varlink.service.GetInterfaceDescription\"}"),
                     "org.varlink.service.InvalidParameter", "parameter", "interface");
        assert_error(client_call(f, c,
                                 "{\"method\":\"org.varlink.service.GetInterfaceDescription\","
                                 "\"parameters\":{\"interface\":7}}"),
                     "org.varlink.service.InvalidParameter", "parameter", "interface");
        client_free(f, c);
}

/* Every org.varlink.service error, and the server's own for a failing handler. */
static void test_errors(Fixture *f, gconstpointer data) {
        Client *c = client_new(f);
        json_object *m;

        assert_error(client_call(f, c, "{\"method\":\"io.portpub.nothere.Foo\"}"),
                     "org.varlink.service.InterfaceNotFound", "interface", "io.portpub.nothere");
        /* Capitals are looked up like any name: InterfaceNotFound, not a malformed call. */
        assert_error(client_call(f, c, "{\"method\":\"io.systemd.Foo.Bar\"}"),
                     "org.varlink.service.InterfaceNotFound", "interface", "io.systemd.Foo");
        assert_error(client_call(f, c, "{\"method\":\"io.portpub.test.Nope\"}"),
                     "org.varlink.service.MethodNotFound", "method", "io.portpub.test.Nope");
        /* A type, not a method. */
        assert_error(client_call(f, c, "{\"method\":\"io.portpub.test.Thing\"}"),
                     "org.varlink.service.MethodNotFound", "method", "io.portpub.test.Thing");
        assert_error(client_call(f, c, "{\"method\":\"org.varlink.service.Nope\"}"),
                     "org.varlink.service.MethodNotFound", "method", "org.varlink.service.Nope");
        assert_error(client_call(f, c, "{\"method\":\"io.portpub.test.Unimplemented\"}"),
                     "org.varlink.service.MethodNotImplemented", "method",
                     "io.portpub.test.Unimplemented");
        assert_error(client_call(f, c, "{\"method\":\"io.portpub.test.Echo\",\"parameters\":5}"),
                     "org.varlink.service.InvalidParameter", "parameter", "parameters");
        assert_error(client_call(f, c, "{\"method\":\"io.portpub.test.Echo\",\"parameters\":[]}"),
                     "org.varlink.service.InvalidParameter", "parameter", "parameters");
        assert_error(client_call(f, c, "{\"parameters\":{}}"),
                     "org.varlink.service.InvalidParameter", "parameter", "method");
        assert_error(client_call(f, c, "{\"method\":5}"), "org.varlink.service.InvalidParameter",
                     "parameter", "method");
        assert_error(client_call(f, c, "{\"method\":\"GetInfo\"}"),
                     "org.varlink.service.InvalidParameter", "parameter", "method");
        assert_error(client_call(f, c, "{\"method\":\"io.portpub.test.echo\"}"),
                     "org.varlink.service.InvalidParameter", "parameter", "method");
        assert_error(client_call(f, c, "{\"method\":\"io.portpub.test.Echo\",\"oneway\":\"yes\"}"),
                     "org.varlink.service.InvalidParameter", "parameter", "oneway");
        assert_error(client_call(f, c, "{\"method\":\"io.portpub.test.Echo\",\"more\":1}"),
                     "org.varlink.service.InvalidParameter", "parameter", "more");
        assert_error(client_call(f, c, "{\"method\":\"io.portpub.test.Size\"}"),
                     "org.varlink.service.InvalidParameter", "parameter", "value");
        assert_error(client_call(f, c, "{\"method\":\"io.portpub.test.Fail\"}"),
                     VARLINK_ERROR_INTERNAL, NULL, NULL);
        g_assert_cmpstr(f->dispatched->str, ==, "Size Fail ");

        /* Still served after all of them; unknown fields are ignored. */
        m = client_call(f, c,
                        "{\"method\":\"io.portpub.test.Echo\",\"parameters\":{\"value\":{\"a\":1}},"
                        "\"future\":true}");
        g_assert_cmpint(get_int(m, "parameters.value.a"), ==, 1);
        json_object_put(m);
        client_free(f, c);
}

static void test_oneway(Fixture *f, gconstpointer data) {
        Client *c = client_new(f);

        client_send(c,
                    "{\"method\":\"io.portpub.test.Oneway\",\"parameters\":{\"value\":7},"
                    "\"oneway\":true}",
                    "{\"method\":\"io.portpub.test.Nope\",\"oneway\":true}",
                    "{\"method\":\"io.portpub.test.Later\",\"parameters\":{\"value\":8,"
                    "\"delayMSec\":20},\"oneway\":true}",
                    "{\"method\":\"io.portpub.test.Count\",\"parameters\":{\"n\":3},"
                    "\"oneway\":true,\"more\":true}",
                    NULL);
        client_expect_silence(f, c, 0.2);
        g_assert_cmpuint(f->oneway_values->len, ==, 1);
        g_assert_cmpint(g_array_index(f->oneway_values, int, 0), ==, 7);
        g_assert_cmpstr(f->dispatched->str, ==, "Oneway Later Count ");

        /* A oneway call answered later holds back nothing. */
        client_send(c,
                    "{\"method\":\"io.portpub.test.Later\",\"parameters\":{\"value\":9,"
                    "\"delayMSec\":500},\"oneway\":true}",
                    "{\"method\":\"io.portpub.test.Echo\",\"parameters\":{\"value\":{\"v\":10}}}",
                    NULL);
        json_object *m = client_recv(f, c);
        g_assert_cmpint(get_int(m, "parameters.value.v"), ==, 10);
        json_object_put(m);
        client_expect_silence(f, c, 0.7);
        client_free(f, c);
}

static void test_more(Fixture *f, gconstpointer data) {
        Client *c = client_new(f);

        client_send(c,
                    "{\"method\":\"io.portpub.test.Count\",\"parameters\":{\"n\":3},\"more\":true}",
                    NULL);
        assert_reply_int(client_recv(f, c), "i", 0, true);
        assert_reply_int(client_recv(f, c), "i", 1, true);
        assert_reply_int(client_recv(f, c), "i", 2, false);

        /* Without "more" there is one reply and a continue is refused. */
        assert_reply_int(client_call(f, c,
                                     "{\"method\":\"io.portpub.test.Count\","
                                     "\"parameters\":{\"n\":3}}"),
                         "i", 0, false);
        g_assert_cmpint(f->continue_without_more, ==, -EINVAL);

        /* Replies of a "more" call answered later, one a tick. */
        client_send(c,
                    "{\"method\":\"io.portpub.test.Later\",\"parameters\":{\"value\":4,"
                    "\"delayMSec\":10,\"count\":3},\"more\":true}",
                    NULL);
        assert_reply_int(client_recv(f, c), "value", 4, true);
        assert_reply_int(client_recv(f, c), "value", 4, true);
        assert_reply_int(client_recv(f, c), "value", 4, false);

        /* org.varlink.service answers a "more" call once. */
        json_object *m =
                client_call(f, c, "{\"method\":\"org.varlink.service.GetInfo\",\"more\":true}");
        g_assert_cmpstr(get_string(m, "parameters.vendor"), ==, "portpub");
        g_assert_null(get(m, "continues"));
        json_object_put(m);
        client_free(f, c);
}

static void test_upgrade_refused(Fixture *f, gconstpointer data) {
        Client *c = client_new(f);

        assert_error(client_call(f, c, "{\"method\":\"io.portpub.test.Echo\",\"upgrade\":true}"),
                     "org.varlink.service.InvalidParameter", "parameter", "upgrade");
        assert_error(client_call(f, c,
                                 "{\"method\":\"org.varlink.service.GetInfo\",\"upgrade\":true}"),
                     "org.varlink.service.InvalidParameter", "parameter", "upgrade");
        /* An unknown method is that, upgrade or not. */
        assert_error(client_call(f, c, "{\"method\":\"io.portpub.test.Nope\",\"upgrade\":true}"),
                     "org.varlink.service.MethodNotFound", "method", "io.portpub.test.Nope");
        g_assert_cmpstr(f->dispatched->str, ==, ""); /* never dispatched */

        /* The connection still speaks varlink. */
        assert_reply_int(client_call(f, c,
                                     "{\"method\":\"io.portpub.test.Count\","
                                     "\"parameters\":{\"n\":1},\"upgrade\":false}"),
                         "i", 0, false);
        client_free(f, c);
}

/* Several calls in one write are answered in order, the first answered last. */
static void test_pipelining(Fixture *f, gconstpointer data) {
        Client *c = client_new(f);
        json_object *m;

        client_send(c,
                    "{\"method\":\"io.portpub.test.Later\",\"parameters\":{\"value\":1,"
                    "\"delayMSec\":150}}",
                    "{\"method\":\"io.portpub.test.Echo\",\"parameters\":{\"value\":{\"v\":2}}}",
                    "{\"method\":\"io.portpub.test.Count\",\"parameters\":{\"n\":2},\"more\":true}",
                    "{\"method\":\"io.portpub.test.Nope\"}",
                    "{\"method\":\"io.portpub.test.Later\",\"parameters\":{\"value\":5,"
                    "\"delayMSec\":10}}",
                    "{\"method\":\"io.portpub.test.Oneway\",\"parameters\":{\"value\":6},"
                    "\"oneway\":true}",
                    "{\"method\":\"org.varlink.service.GetInfo\"}", NULL);

        /* All dispatched at once; only the replies wait. */
        run_for(f, 0.05);
        g_assert_cmpstr(f->dispatched->str, ==, "Later Echo Count Later Oneway ");
        g_assert_true(client_pull(c));
        g_assert_cmpuint(c->buf->len, ==, 0);

        assert_reply_int(client_recv(f, c), "value", 1, false);
        m = client_recv(f, c);
        g_assert_cmpint(get_int(m, "parameters.value.v"), ==, 2);
        json_object_put(m);
        assert_reply_int(client_recv(f, c), "i", 0, true);
        assert_reply_int(client_recv(f, c), "i", 1, false);
        assert_error(client_recv(f, c), "org.varlink.service.MethodNotFound", "method",
                     "io.portpub.test.Nope");
        assert_reply_int(client_recv(f, c), "value", 5, false);
        m = client_recv(f, c);
        g_assert_cmpstr(get_string(m, "parameters.vendor"), ==, "portpub");
        json_object_put(m);

        /* A "more" call holds the later calls' replies until its last one. */
        client_send(c,
                    "{\"method\":\"io.portpub.test.Later\",\"parameters\":{\"value\":7,"
                    "\"delayMSec\":30,\"count\":3},\"more\":true}",
                    "{\"method\":\"io.portpub.test.Count\",\"parameters\":{\"n\":1}}", NULL);
        assert_reply_int(client_recv(f, c), "value", 7, true);
        assert_reply_int(client_recv(f, c), "value", 7, true);
        assert_reply_int(client_recv(f, c), "value", 7, false);
        assert_reply_int(client_recv(f, c), "i", 0, false);

        /* A message split across writes. */
        client_write(c, "{\"method\":\"io.portpub.test.Count\",", 34);
        run_for(f, 0.02);
        client_write(c, "\"parameters\":{\"n\":1}}", 21);
        run_for(f, 0.02);
        client_write(c, "", 1);
        assert_reply_int(client_recv(f, c), "i", 0, false);
        client_free(f, c);
}

/* ---- garbage and sizes ------------------------------------------------------------------------ */

static char *nested(unsigned depth) {
        GString *s = g_string_new(
                "{\"method\":\"io.portpub.test.Echo\",\"parameters\":{\"value\":{\"a\":");

        /* the message itself and its parameters are two levels, value a third */
        for (unsigned i = 3; i < depth; i++)
                g_string_append_c(s, '[');
        g_string_append_c(s, '1');
        for (unsigned i = 3; i < depth; i++)
                g_string_append_c(s, ']');
        g_string_append(s, "}}}");
        return g_string_free(s, FALSE);
}

static void test_garbage(Fixture *f, gconstpointer data) {
        g_autofree char *deep = nested(65), *deep_enough = nested(64);
        const char *closing[] = {
                "not json",
                "[1,2]",
                "\"string\"",
                "null",
                "{\"method\":",
                "{} {}",
                "{\"method\":\"io.portpub.test.Echo\",\"parameters\":{\"value\":\"\xff\"}}",
                "",
                deep,
        };
        Client *good = client_new(f), *c;
        json_object *m;

        for (size_t i = 0; i < G_N_ELEMENTS(closing); i++) {
                c = client_new(f);
                client_send(c, closing[i], NULL);
                client_expect_eof(f, c);
                client_free(f, c);
        }

        /* The calls before the garbage are answered first. */
        c = client_new(f);
        client_send(c, "{\"method\":\"io.portpub.test.Count\",\"parameters\":{\"n\":1}}", "]]", NULL);
        assert_reply_int(client_recv(f, c), "i", 0, false);
        client_expect_eof(f, c);
        client_free(f, c);

        /* Depth 64 is still fine; the other client never noticed a thing. */
        m = client_call(f, good, deep_enough);
        g_assert_nonnull(get(m, "parameters.value.a"));
        json_object_put(m);
        wait_n_connections(f, 1);
        client_free(f, good);
}

typedef struct Writer {
        int fd;
        const char *head, *tail;
        size_t tail_len;
        size_t body; /* bytes of 'x' between head and tail */
        size_t written;
        int error;
} Writer;

/* A client that has to block: writing more than any socket buffer takes. */
static gpointer writer_thread(gpointer data) {
        Writer *w = data;
        size_t head = strlen(w->head), total = head + w->body + w->tail_len;
        char buf[65536];

        while (w->written < total) {
                size_t n = 0;
                ssize_t k;

                /* the next piece of head, body and tail */
                while (n < sizeof buf && w->written + n < total) {
                        size_t at = w->written + n;

                        buf[n++] = at < head             ? w->head[at]
                                   : at < head + w->body ? 'x'
                                                         : w->tail[at - head - w->body];
                }
                k = send(w->fd, buf, n, MSG_NOSIGNAL);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        w->error = errno;
                        break;
                }
                w->written += (size_t) k;
        }
        return NULL;
}

/* A message of exactly VARLINK_MESSAGE_MAX bytes is served; one byte more closes. */
static void test_message_max(Fixture *f, gconstpointer data) {
        static const char head[] =
                "{\"method\":\"io.portpub.test.Size\",\"parameters\":{\"value\":\"";
        Client *c = client_new(f);
        Writer w = {
                .fd = c->fd,
                .head = head,
                .tail = "\"}}",
                .tail_len = 4, /* with the NUL */
                .body = VARLINK_MESSAGE_MAX - strlen(head) - 4,
        };
        GThread *t;

        t = g_thread_new("writer", writer_thread, &w);
        assert_reply_int(client_recv(f, c), "size", (int64_t) w.body, false);
        g_thread_join(t);
        g_assert_cmpint(w.error, ==, 0);

        w.written = 0;
        w.body++;
        t = g_thread_new("writer", writer_thread, &w);
        client_expect_eof(f, c);
        g_thread_join(t);
        g_assert_cmpstr(f->dispatched->str, ==, "Size ");
        client_free(f, c);
}

/* Writes len bytes from a thread: more than a socket buffer takes while the loop runs. */
typedef struct Blob {
        int fd;
        const char *data;
        size_t len, written;
        int error;
} Blob;

static gpointer blob_writer_thread(gpointer data) {
        Blob *b = data;

        while (b->written < b->len) {
                ssize_t k = send(b->fd, b->data + b->written, b->len - b->written, MSG_NOSIGNAL);

                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        b->error = errno;
                        break;
                }
                b->written += (size_t) k;
        }
        return NULL;
}

/* A message of more values than VARLINK_JSON_VALUES_MAX closes the connection before json-c
 * builds them, and the server's memory stays bounded; strings of the same size are fine. */
static void test_too_many_values(Fixture *f, gconstpointer data) {
        const size_t n = 300 * 1024;
        GString *wide =
                g_string_new("{\"method\":\"io.portpub.test.Echo\",\"parameters\":{\"value\":[0");
        GString *text =
                g_string_new("{\"method\":\"io.portpub.test.Echo\",\"parameters\":{\"value\":\"");
        Client *c, *good = client_new(f);
        json_object *m;
        Meter meter;

        for (size_t i = 1; i < n; i++)
                g_string_append(wide, ",0");
        g_string_append(wide, "]}}");
        for (size_t i = 1; i < n; i++)
                g_string_append(text, ",{");
        g_string_append(text, "\"}}");

        meter_start(f, &meter);
        c = client_new(f);
        {
                Blob b = { .fd = c->fd, .data = wide->str, .len = wide->len + 1 };
                GThread *t = g_thread_new("writer", blob_writer_thread, &b);

                client_expect_eof(f, c);
                g_thread_join(t);
        }
        client_free(f, c);
        /* Parsed, 300k values would have taken some tens of MiB. */
        meter_stop(f, &meter, 0, 8 * 1024 * 1024);

        {
                Blob b = { .fd = good->fd, .data = text->str, .len = text->len + 1 };
                GThread *t = g_thread_new("writer", blob_writer_thread, &b);

                m = client_recv(f, good);
                g_thread_join(t);
                g_assert_cmpint(b.error, ==, 0);
        }
        g_assert_cmpuint(strlen(get_string(m, "parameters.value")), ==, 2 * n - 2);
        json_object_put(m);
        client_free(f, good);
        g_string_free(wide, TRUE);
        g_string_free(text, TRUE);
}

/* A message without NUL past the limit closes its connection, and nothing grows without
 * bound meanwhile. */
static void test_message_too_large(Fixture *f, gconstpointer data) {
        Client *c = client_new(f), *other = client_new(f);
        Writer w = { .fd = c->fd, .head = "{\"method\":\"", .tail = "", .body = 256U << 20 };
        Meter meter;
        GThread *t;
        json_object *m;

        meter_start(f, &meter);
        t = g_thread_new("writer", writer_thread, &w);
        client_expect_eof(f, c);
        g_thread_join(t);
        /* The client found its connection closed, after the limit and what the socket
         * buffers held. */
        g_assert_true(w.error == EPIPE || w.error == ECONNRESET);
        g_assert_cmpuint(w.written, >=, VARLINK_MESSAGE_MAX);
        g_assert_cmpuint(w.written, <, VARLINK_MESSAGE_MAX + (8U << 20));
        /* The buffer grew toward the limit, and no further. */
        meter_stop(f, &meter, VARLINK_MESSAGE_MAX / 4, 2 * (size_t) VARLINK_MESSAGE_MAX);

        m = client_call(f, other, "{\"method\":\"org.varlink.service.GetInfo\"}");
        g_assert_cmpstr(get_string(m, "parameters.vendor"), ==, "portpub");
        json_object_put(m);
        wait_n_connections(f, 1);
        client_free(f, c);
        client_free(f, other);
}

static gboolean cond_cancelled(Fixture *f, gconstpointer data) {
        return f->cancelled >= GPOINTER_TO_UINT(data);
}

/* The server streams replies to a client that reads none: it is dropped once its queue passes
 * VARLINK_OUTPUT_MAX, and the server's memory stays bounded. */
static void test_slow_reader_dropped(Fixture *f, gconstpointer data) {
        Client *c = client_new(f), *other = client_new(f);
        size_t received = 0;
        Meter meter;
        json_object *m;

        meter_start(f, &meter);
        client_send(c,
                    "{\"method\":\"io.portpub.test.Stream\",\"parameters\":{\"size\":65536},"
                    "\"more\":true}",
                    NULL);
        g_assert_true(run_until(f, cond_cancelled, GUINT_TO_POINTER(1), TIMEOUT_S));
        g_assert_cmpint(f->stream_error, ==, -ENOBUFS);
        /* Queued up to the limit (the socket buffer took some more). */
        g_assert_cmpuint(f->streamed, >=, VARLINK_OUTPUT_MAX - 2 * 65536);
        g_assert_cmpuint(f->streamed, <, VARLINK_OUTPUT_MAX + (8U << 20));
        meter_stop(f, &meter, VARLINK_OUTPUT_MAX / 2, 2 * (size_t) VARLINK_OUTPUT_MAX);
        wait_n_connections(f, 1);

        /* What the socket held, then the end; the queue itself was dropped. */
        for (;;) {
                char buf[65536];
                ssize_t n = recv(c->fd, buf, sizeof buf, 0);

                if (n <= 0)
                        break;
                received += (size_t) n;
        }
        g_assert_cmpuint(received, <, VARLINK_OUTPUT_MAX);

        m = client_call(f, other, "{\"method\":\"org.varlink.service.GetInfo\"}");
        g_assert_cmpstr(get_string(m, "parameters.vendor"), ==, "portpub");
        json_object_put(m);
        client_free(f, c);
        client_free(f, other);
}

/* Past VARLINK_PENDING_CALLS_MAX unanswered calls the server stops taking calls from the
 * connection, and takes them again as the replies go out. */
static void test_backpressure(Fixture *f, gconstpointer data) {
        const unsigned n = VARLINK_PENDING_CALLS_MAX + 36;
        g_autoptr(GString) calls = g_string_new(NULL);
        Client *c = client_new(f);
        unsigned got = 0;

        for (unsigned i = 0; i < n; i++) {
                g_string_append_printf(
                        calls, "{\"method\":\"io.portpub.test.Held\",\"parameters\":{\"i\":%u}}", i);
                g_string_append_c(calls, '\0');
        }
        client_write(c, calls->str, calls->len);
        run_for(f, 0.1);
        g_assert_cmpuint(f->held->len, ==, VARLINK_PENDING_CALLS_MAX);

        /* The second answered first: its reply waits, and it still counts. */
        held_answer(f, 1);
        client_expect_silence(f, c, 0.05);
        g_assert_cmpuint(f->held->len, ==, VARLINK_PENDING_CALLS_MAX - 1);

        /* Answering what is held lets the next ones in; the replies come in order. */
        while (got < n) {
                while (f->held->len > 0)
                        held_answer(f, 0);
                assert_reply_int(client_recv(f, c), "i", got++, false);
        }
        g_assert_cmpuint(f->held->len, ==, 0);
        client_free(f, c);
}

/* Pipelined calls of one client overflow another client's queue: that one is closed in the
 * middle of the server's pass, and the first is served to the end. */
static void test_overflow_from_other_connection(Fixture *f, gconstpointer data) {
        const unsigned n = 200, size = 128 * 1024;
        g_autoptr(GString) calls = g_string_new(NULL);
        Client *sub = client_new(f), *pub = client_new(f);

        client_send(sub, "{\"method\":\"io.portpub.test.Subscribe\",\"more\":true}", NULL);
        run_for(f, 0.05);
        g_assert_cmpuint(f->subscribers->len, ==, 1);

        for (unsigned i = 0; i < n; i++) {
                g_string_append_printf(calls,
                                       "{\"method\":\"io.portpub.test.Publish\","
                                       "\"parameters\":{\"size\":%u}}",
                                       size);
                g_string_append_c(calls, '\0');
        }
        client_write(pub, calls->str, calls->len);
        for (unsigned i = 0; i < n; i++) {
                json_object *m = client_recv(f, pub);

                g_assert_nonnull(m);
                g_assert_null(get(m, "error"));
                json_object_put(m);
        }
        /* More than VARLINK_OUTPUT_MAX went to the subscriber: it was dropped. */
        g_assert_cmpuint((size_t) n * size, >, VARLINK_OUTPUT_MAX);
        g_assert_cmpint(f->stream_error, ==, -ENOBUFS);
        /* Cancelled from the loop, not inside the Publish that overflowed it. */
        g_assert_true(run_until(f, cond_cancelled, GUINT_TO_POINTER(1), TIMEOUT_S));
        g_assert_cmpuint(f->subscribers->len, ==, 0);
        wait_n_connections(f, 1);
        client_free(f, sub);
        client_free(f, pub);
}

/* ---- connections and their limits --------------------------------------------------------- */

/* Out of fds, the server stops accepting and retries after a while instead of spinning on its
 * readable listener. */
static void test_accept_emfile(Fixture *f, gconstpointer data) {
        struct rlimit saved, low;
        unsigned before;
        Client *c;
        json_object *m;
        int lowest;

        if (test_under_valgrind()) {
                g_test_skip("fd limits do not apply as set under valgrind");
                return;
        }
        c = client_new(f); /* in the backlog; the server has not run */
        lowest = dup(0);
        g_assert_cmpint(lowest, >=, 0);
        close(lowest);
        g_assert_cmpint(getrlimit(RLIMIT_NOFILE, &saved), ==, 0);
        low = saved;
        low.rlim_cur = (rlim_t) lowest; /* every fd below is taken: the next one fails */
        g_assert_cmpint(setrlimit(RLIMIT_NOFILE, &low), ==, 0);

        before = ev_iteration(f->loop);
        run_for(f, 0.35);
        g_assert_cmpuint(varlink_server_n_connections(f->server), ==, 0);
        /* A spinning loop would have iterated many thousand times. */
        g_test_message("%u loop iterations in 0.35 s", ev_iteration(f->loop) - before);
        g_assert_cmpuint(ev_iteration(f->loop) - before, <, 100);

        g_assert_cmpint(setrlimit(RLIMIT_NOFILE, &saved), ==, 0);
        wait_n_connections(f, 1);
        m = client_call(f, c, "{\"method\":\"org.varlink.service.GetInfo\"}");
        g_assert_cmpstr(get_string(m, "parameters.vendor"), ==, "portpub");
        json_object_put(m);
        client_free(f, c);
}

static void test_cancel_on_disconnect(Fixture *f, gconstpointer data) {
        Client *c = client_new(f);

        client_send(c, "{\"method\":\"io.portpub.test.Held\",\"parameters\":{\"i\":1}}",
                    "{\"method\":\"io.portpub.test.Later\",\"parameters\":{\"value\":2,"
                    "\"delayMSec\":10000}}",
                    "{\"method\":\"io.portpub.test.Kept\"}", NULL);
        run_for(f, 0.05);
        g_assert_cmpstr(f->dispatched->str, ==, "Held Later Kept ");
        g_assert_nonnull(varlink_call_connection(f->kept));

        client_free(f, c);
        wait_n_connections(f, 0);
        g_assert_cmpuint(f->cancelled, ==, 2);
        g_assert_cmpuint(f->held->len, ==, 0);
        /* In the order of the calls, then the hook. */
        g_assert_cmpstr(f->events->str, ==, "connected cancel cancel disconnected ");

        /* No cancel callback: detached, and the handler side still owns it until it answers. */
        g_assert_null(varlink_call_connection(f->kept));
        g_assert_cmpint(varlink_call_reply(f->kept, object_int("a", 1)), ==, -ESTALE);
        /* Answered already: safe through our reference, and still -ESTALE. */
        g_assert_cmpint(varlink_call_reply(f->kept, NULL), ==, -ESTALE);
        g_assert_cmpint(varlink_call_reply_error(f->kept, "io.portpub.test.Thrown", NULL), ==,
                        -ESTALE);
        f->kept = varlink_call_unref(f->kept);
}

/* A client that shuts down its writing side still gets its replies. */
static void test_half_close(Fixture *f, gconstpointer data) {
        Client *c = client_new(f);

        client_send(c,
                    "{\"method\":\"io.portpub.test.Later\",\"parameters\":{\"value\":3,"
                    "\"delayMSec\":50}}",
                    "{\"method\":\"io.portpub.test.Count\",\"parameters\":{\"n\":2},\"more\":true}",
                    NULL);
        g_assert_cmpint(shutdown(c->fd, SHUT_WR), ==, 0);
        assert_reply_int(client_recv(f, c), "value", 3, false);
        assert_reply_int(client_recv(f, c), "i", 0, true);
        assert_reply_int(client_recv(f, c), "i", 1, false);
        client_expect_eof(f, c);
        wait_n_connections(f, 0);
        g_assert_cmpuint(f->cancelled, ==, 0);
        client_free(f, c);
}

static gboolean cond_subscribed(Fixture *f, gconstpointer data) {
        return f->subscribers->len > 0;
}

/* A half-closed client with a stream open that then closes its socket entirely: the server
 * notices without a reply to write (its hang-up check), cancels the stream and drops it. */
static void test_half_close_then_hangup(Fixture *f, gconstpointer data) {
        Client *c = client_new(f);

        client_send(c, "{\"method\":\"io.portpub.test.Subscribe\",\"more\":true}", NULL);
        g_assert_cmpint(shutdown(c->fd, SHUT_WR), ==, 0);
        /* The server reads the call and the EOF: the stream is open, nothing to write. */
        g_assert_true(run_until(f, cond_subscribed, NULL, TIMEOUT_S));
        run_for(f, 0.1);
        g_assert_cmpuint(varlink_server_n_connections(f->server), ==, 1);
        client_free(f, c);
        wait_n_connections(f, 0);
        g_assert_cmpuint(f->subscribers->len, ==, 0);
        g_assert_cmpuint(f->cancelled, ==, 1);
}

static void test_hooks(Fixture *f, gconstpointer data) {
        Client *c = client_new(f);
        json_object *m;

        m = client_call(f, c, "{\"method\":\"io.portpub.test.Whoami\"}");
        g_assert_cmpint(get_int(m, "parameters.uid"), ==, getuid());
        g_assert_cmpint(get_int(m, "parameters.pid"), ==, getpid());
        json_object_put(m);
        g_assert_cmpstr(f->events->str, ==, "connected ");
        client_free(f, c);
        wait_n_connections(f, 0);
        g_assert_cmpstr(f->events->str, ==, "connected disconnected ");

        /* Refused by the hook: closed, and no disconnected hook for it. */
        f->refuse_connections = true;
        c = client_new(f);
        client_expect_eof(f, c);
        client_free(f, c);
        wait_n_connections(f, 0);
        g_assert_cmpstr(f->events->str, ==, "connected disconnected connected ");
}

typedef struct Child {
        pid_t pid;
        int status;
} Child;

static gboolean cond_child_exited(Fixture *f, gconstpointer data) {
        Child *c = (Child *) data;

        return waitpid(c->pid, &c->status, WNOHANG) == c->pid;
}

/* The forked child: system calls only. Exits 0 when the server said it is uid NOBODY. */
_Noreturn static void child_whoami(const char *path) {
        static const char call[] = "{\"method\":\"io.portpub.test.Whoami\"}";
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        char reply[4096];
        size_t len = 0;
        int fd;

        if (setgroups(0, NULL) < 0 || setresgid(NOBODY, NOBODY, NOBODY) < 0 ||
            setresuid(NOBODY, NOBODY, NOBODY) < 0)
                _exit(10);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        strncpy(sa.sun_path, path, sizeof sa.sun_path - 1);
        if (fd < 0 || connect(fd, (struct sockaddr *) &sa, sizeof sa) < 0)
                _exit(11);
        if (write(fd, call, sizeof call) != (ssize_t) sizeof call)
                _exit(12);
        while (len < sizeof reply - 1 && !memchr(reply, 0, len)) {
                ssize_t n = read(fd, reply + len, sizeof reply - 1 - len);

                if (n <= 0)
                        _exit(13);
                len += (size_t) n;
        }
        reply[len] = 0;
        _exit(strstr(reply, "\"uid\":65534,") ? 0 : 14);
}

/* The child's exit status, or -1 when it had to be killed. */
static int run_child_whoami(Fixture *f) {
        Child child = { .pid = fork() };

        g_assert_cmpint(child.pid, >=, 0);
        if (child.pid == 0)
                child_whoami(f->path);
        if (!run_until(f, cond_child_exited, &child, TIMEOUT_S)) {
                kill(child.pid, SIGKILL);
                g_assert_cmpint(waitpid(child.pid, &child.status, 0), ==, child.pid);
                return -1;
        }
        return WIFEXITED(child.status) ? WEXITSTATUS(child.status) : -1;
}

static void test_per_uid_limit(Fixture *f, gconstpointer data) {
        unsigned limit = VARLINK_CONNECTIONS_PER_UID_MAX;
        struct rlimit rl;
        Client **cs;
        json_object *m;

        /* Both ends of every connection live in this process. */
        g_assert_cmpint(getrlimit(RLIMIT_NOFILE, &rl), ==, 0);
        rl.rlim_cur = rl.rlim_max;
        g_assert_cmpint(setrlimit(RLIMIT_NOFILE, &rl), ==, 0);
        if (rl.rlim_cur < 2 * limit + 256) {
                limit = 16;
                varlink_server_set_connection_limits(f->server, 0, limit);
                g_test_message("RLIMIT_NOFILE is %ju: testing with a limit of %u per uid",
                               (uintmax_t) rl.rlim_cur, limit);
        }

        cs = g_new0(Client *, limit + 1);
        for (unsigned i = 0; i < limit; i++) {
                cs[i] = client_new(f);
                if (i % 32 == 31) /* keep the listen backlog short */
                        wait_n_connections(f, i + 1);
        }
        wait_n_connections(f, limit);

        /* One more of the same uid: accepted and closed at once. */
        cs[limit] = client_new(f);
        client_expect_eof(f, cs[limit]);
        g_assert_cmpuint(varlink_server_n_connections(f->server), ==, limit);

        /* Another uid is still served. */
        if (getuid() == 0)
                g_assert_cmpint(run_child_whoami(f), ==, 0);
        else
                g_test_message("not root: no client of another uid");

        /* And the first and last of ours. */
        m = client_call(f, cs[0], "{\"method\":\"io.portpub.test.Whoami\"}");
        g_assert_cmpint(get_int(m, "parameters.uid"), ==, getuid());
        json_object_put(m);
        m = client_call(f, cs[limit - 1], "{\"method\":\"io.portpub.test.Whoami\"}");
        g_assert_cmpint(get_int(m, "parameters.uid"), ==, getuid());
        json_object_put(m);

        /* One gone, one more may come. */
        client_free(f, cs[0]);
        wait_n_connections(f, limit - 1);
        cs[0] = client_new(f);
        m = client_call(f, cs[0], "{\"method\":\"io.portpub.test.Whoami\"}");
        g_assert_nonnull(get(m, "parameters.uid"));
        json_object_put(m);

        for (unsigned i = 0; i <= limit; i++)
                client_free(f, cs[i]);
        g_free(cs);
        wait_n_connections(f, 0);
}

/* All connections together, with a limit lowered for the test. */
static void test_connection_limit(Fixture *f, gconstpointer data) {
        Client *cs[5], *extra;

        varlink_server_set_connection_limits(f->server, 4, 0);
        for (unsigned i = 0; i < 4; i++)
                cs[i] = client_new(f);
        wait_n_connections(f, 4);
        cs[4] = client_new(f);
        client_expect_eof(f, cs[4]);
        g_assert_cmpuint(varlink_server_n_connections(f->server), ==, 4);

        client_free(f, cs[1]);
        wait_n_connections(f, 3);
        extra = client_new(f);
        assert_reply_int(client_call(f, extra,
                                     "{\"method\":\"io.portpub.test.Count\","
                                     "\"parameters\":{\"n\":1}}"),
                         "i", 0, false);
        client_free(f, extra);
        for (unsigned i = 0; i < 5; i++)
                if (i != 1)
                        client_free(f, cs[i]);
        wait_n_connections(f, 0);
}

/* ---- listening ------------------------------------------------------------------------------- */

static int socket_bind(const char *path, bool do_listen) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM, 0); /* blocking, inherited: as systemd passes it */

        g_assert_cmpint(fd, >=, 0);
        g_strlcpy(sa.sun_path, path, sizeof sa.sun_path);
        g_assert_cmpint(bind(fd, (struct sockaddr *) &sa, sizeof sa), ==, 0);
        if (do_listen)
                g_assert_cmpint(listen(fd, 16), ==, 0);
        return fd;
}

static void assert_served(Fixture *f, const char *path) {
        Client *c = client_new_path(path);
        json_object *m = client_call(f, c, "{\"method\":\"org.varlink.service.GetInfo\"}");

        g_assert_cmpstr(get_string(m, "parameters.vendor"), ==, "portpub");
        json_object_put(m);
        client_free(f, c);
}

static void test_stale_socket(Fixture *f, gconstpointer data) {
        g_autofree char *path = g_build_filename(f->dir, "stale", NULL);
        g_autofree char *file = g_build_filename(f->dir, "file", NULL);
        VarlinkServer *s2, *s3;
        struct stat st;

        /* The mode asked for, exactly. */
        g_assert_cmpint(lstat(f->path, &st), ==, 0);
        g_assert_true(S_ISSOCK(st.st_mode));
        g_assert_cmpint(st.st_mode & 07777, ==, 0666);

        /* A socket file nobody accepts on any more: replaced. */
        close(socket_bind(path, true));
        g_assert_cmpint(lstat(path, &st), ==, 0);
        s2 = server_new(f);
        g_assert_cmpint(varlink_server_listen_path(s2, path, 0600), ==, 0);
        g_assert_cmpint(lstat(path, &st), ==, 0);
        g_assert_cmpint(st.st_mode & 07777, ==, 0600);
        assert_served(f, path);

        /* Live ones are refused, and keep serving. */
        s3 = server_new(f);
        g_assert_cmpint(varlink_server_listen_path(s3, path, 0600), ==, -EADDRINUSE);
        g_assert_cmpint(varlink_server_listen_path(s3, f->path, 0666), ==, -EADDRINUSE);
        assert_served(f, path);
        assert_served(f, f->path);

        /* Anything but a socket is left alone. */
        g_assert_true(g_file_set_contents(file, "x", 1, NULL));
        g_assert_cmpint(varlink_server_listen_path(s3, file, 0600), ==, -EEXIST);
        g_assert_true(g_file_test(file, G_FILE_TEST_IS_REGULAR));
        g_assert_cmpint(unlink(file), ==, 0);
        varlink_server_free(s3);

        /* The server removes its file... */
        varlink_server_free(s2);
        g_assert_cmpint(lstat(path, &st), ==, -1);

        /* ...but not one put in its place. */
        s2 = server_new(f);
        g_assert_cmpint(varlink_server_listen_path(s2, path, 0600), ==, 0);
        g_assert_cmpint(unlink(path), ==, 0);
        close(socket_bind(path, false));
        varlink_server_free(s2);
        g_assert_cmpint(lstat(path, &st), ==, 0);
        g_assert_cmpint(unlink(path), ==, 0);
}

static void test_listen_fd(Fixture *f, gconstpointer data) {
        g_autofree char *path = g_build_filename(f->dir, "passed", NULL);
        int fd = socket_bind(path, true), other;
        VarlinkServer *s2 = server_new(f);

        g_assert_cmpint(varlink_server_listen_fd(s2, fd), ==, 0);
        g_assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
        g_assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
        assert_served(f, path);
        varlink_server_free(s2);
        /* Not its file: it stays. */
        g_assert_true(g_file_test(path, G_FILE_TEST_EXISTS));
        g_assert_cmpint(unlink(path), ==, 0);

        /* Refused, and closed all the same. */
        s2 = server_new(f);
        other = socket_bind(path, false);
        g_assert_cmpint(varlink_server_listen_fd(s2, other), ==, -EINVAL);
        g_assert_cmpint(fcntl(other, F_GETFD), ==, -1);
        g_assert_cmpint(unlink(path), ==, 0);
        other = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        g_assert_cmpint(listen(other, 1), ==, 0);
        g_assert_cmpint(varlink_server_listen_fd(s2, other), ==, -EAFNOSUPPORT);
        g_assert_cmpint(fcntl(other, F_GETFD), ==, -1);
        varlink_server_free(s2);
}

static int method_nothing(VarlinkCall *call, json_object *parameters, unsigned flags, void *userdata) {
        return varlink_call_reply(call, NULL);
}

static void test_add_interface(Fixture *f, gconstpointer data) {
        static const VarlinkMethod a[] = { { "A", method_nothing } };
        static const VarlinkMethod b[] = { { "B", method_nothing } };
        static const VarlinkMethod twice[] = { { "A", method_nothing }, { "A", method_nothing } };
        static const char text[] = "# comment: interface io.not.this\n"
                                   "interface io.portpub.other\n"
                                   "type T (method: string, interface: int)\n"
                                   "method A(x: (interface: string)) -> ()\n"
                                   "method C() -> ()\n";
        static const char *const bad_names[] = {
                "Io.portpub.x", "io",    "io..x", "io.-x",  "io.x-",
                "1io.x",        "io.x.", ".io.x", "io_x.y",
        };
        static const char *const bad_texts[] = {
                "method A() -> ()\n",
                "interface io.portpub.other\nmethod A() -> (\n",
                "interface io.portpub.other\nmethod A() -> ())\n",
                "interface io.portpub.other\ninterface io.portpub.other\nmethod A() -> ()\n",
                "interface io.portpub.other\nmethod a() -> ()\n",
                "interface io.portpub.other\nmethod A() -> () $\n",
                "interface io.portpub.third\nmethod A() -> ()\n",
        };
        VarlinkInterface i = { .name = "io.portpub.other", .description = text };
        Client *c;
        json_object *m, *l;

        for (size_t k = 0; k < G_N_ELEMENTS(bad_names); k++) {
                VarlinkInterface n = { .name = bad_names[k], .description = text };

                g_assert_cmpint(varlink_server_add_interface(f->server, &n, NULL), ==, -EINVAL);
        }
        for (size_t k = 0; k < G_N_ELEMENTS(bad_texts); k++) {
                VarlinkInterface n = { .name = "io.portpub.other", .description = bad_texts[k] };

                g_assert_cmpint(varlink_server_add_interface(f->server, &n, NULL), ==, -EINVAL);
        }
        i.methods = b;
        i.n_methods = 1;
        g_assert_cmpint(varlink_server_add_interface(f->server, &i, NULL), ==, -EINVAL);
        i.methods = twice;
        i.n_methods = 2;
        g_assert_cmpint(varlink_server_add_interface(f->server, &i, NULL), ==, -EINVAL);
        g_assert_cmpint(varlink_server_add_interface(
                                f->server,
                                &(VarlinkInterface){ .name = "org.varlink.service",
                                                     .description = "interface org.varlink.service\n" },
                                NULL),
                        ==, -EEXIST);
        g_assert_cmpint(varlink_server_add_interface(f->server, &test_interface, NULL), ==, -EEXIST);

        /* Copied: nothing of i needs to outlive the call. */
        {
                g_autofree char *name = g_strdup(i.name), *copy = g_strdup(text);
                VarlinkMethod methods[] = { { "A", method_nothing } };
                VarlinkInterface tmp = {
                        .name = name, .description = copy, .methods = methods, .n_methods = 1
                };

                g_assert_cmpint(varlink_server_add_interface(f->server, &tmp, NULL), ==, 0);
                memset(copy, '#', strlen(copy));
                name[0] = 'X';
                methods[0].name = "Z";
        }
        g_assert_cmpint(varlink_server_add_interface(f->server, &i, NULL), ==, -EEXIST);
        (void) a;

        c = client_new(f);
        m = client_call(f, c, "{\"method\":\"org.varlink.service.GetInfo\"}");
        l = get(m, "parameters.interfaces");
        g_assert_cmpuint(json_object_array_length(l), ==, 3);
        g_assert_cmpstr(json_object_get_string(json_object_array_get_idx(l, 2)), ==,
                        "io.portpub.other");
        json_object_put(m);
        m = client_call(f, c,
                        "{\"method\":\"org.varlink.service.GetInterfaceDescription\","
                        "\"parameters\":{\"interface\":\"io.portpub.other\"}}");
        g_assert_cmpstr(get_string(m, "parameters.description"), ==, text);
        json_object_put(m);
        m = client_call(f, c, "{\"method\":\"io.portpub.other.A\"}");
        g_assert_null(get(m, "error"));
        json_object_put(m);
        assert_error(client_call(f, c, "{\"method\":\"io.portpub.other.C\"}"),
                     "org.varlink.service.MethodNotImplemented", "method", "io.portpub.other.C");
        assert_error(client_call(f, c, "{\"method\":\"io.portpub.other.T\"}"),
                     "org.varlink.service.MethodNotFound", "method", "io.portpub.other.T");
        client_free(f, c);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        /* A client that is gone must not kill the test with SIGPIPE. */
        signal(SIGPIPE, SIG_IGN);

#define ADD(path, fn)                                                                              \
        g_test_add("/varlink/" path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
        ADD("get-info", test_get_info);
        ADD("get-interface-description", test_get_interface_description);
        ADD("errors", test_errors);
        ADD("oneway", test_oneway);
        ADD("more", test_more);
        ADD("upgrade-refused", test_upgrade_refused);
        ADD("pipelining", test_pipelining);
        ADD("garbage", test_garbage);
        ADD("too-many-values", test_too_many_values);
        ADD("message-max", test_message_max);
        ADD("message-too-large", test_message_too_large);
        ADD("slow-reader-dropped", test_slow_reader_dropped);
        ADD("backpressure", test_backpressure);
        ADD("overflow-from-other-connection", test_overflow_from_other_connection);
        ADD("accept-emfile", test_accept_emfile);
        ADD("cancel-on-disconnect", test_cancel_on_disconnect);
        ADD("half-close", test_half_close);
        ADD("half-close-then-hangup", test_half_close_then_hangup);
        ADD("hooks", test_hooks);
        ADD("per-uid-limit", test_per_uid_limit);
        ADD("connection-limit", test_connection_limit);
        ADD("stale-socket", test_stale_socket);
        ADD("listen-fd", test_listen_fd);
        ADD("add-interface", test_add_interface);
#undef ADD
        return g_test_run();
}
