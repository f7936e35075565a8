/* Test harness: a private dbus-daemon and the real portpubd on it */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

/* A test that aborts must not leave its daemons behind holding meson's pipes open. */
static void die_with_parent(gpointer data) {
        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
}

gboolean test_under_valgrind(void) {
        const char *e = g_getenv("PORTPUB_TEST_VALGRIND");

        return e && e[0] && !g_str_equal(e, "0");
}

guint test_scaled_ms(guint ms) {
        return test_under_valgrind() ? ms * 20 : ms;
}

gboolean test_wait_pid(GPid pid, guint timeout_ms, int *ret_status) {
        gint64 deadline = g_get_monotonic_time() + (gint64) test_scaled_ms(timeout_ms) * 1000;

        for (;;) {
                if (waitpid(pid, ret_status, WNOHANG) == pid)
                        return TRUE;
                if (g_get_monotonic_time() >= deadline)
                        return FALSE;
                g_usleep(5000); /* polling a child's exit: there is no fd to wait on here */
        }
}

/* What a session bus allows, for every uid: GTestDBus's bus refuses other uids at EXTERNAL
 * authentication. unix:tmpdir= is an abstract socket on Linux (dbus < 1.15.2), which has no file
 * permissions, or a socket in /tmp that dbus-daemon makes 0777: any user can reach either. */
static const char shared_bus_config[] =
        "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
        " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
        "<busconfig>\n"
        "  <type>session</type>\n"
        "  <listen>unix:tmpdir=/tmp</listen>\n"
        "  <auth>EXTERNAL</auth>\n"
        "  <policy context=\"default\">\n"
        "    <allow user=\"*\"/>\n"
        "    <allow send_destination=\"*\" eavesdrop=\"true\"/>\n"
        "    <allow receive_sender=\"*\"/>\n"
        "    <allow eavesdrop=\"true\"/>\n"
        "    <allow own=\"*\"/>\n"
        "  </policy>\n"
        "</busconfig>\n";

/* Reads the one line dbus-daemon prints for --print-address; NULL on timeout or EOF. */
static char *read_address_line(int fd, guint timeout_ms) {
        gint64 deadline = g_get_monotonic_time() + (gint64) test_scaled_ms(timeout_ms) * 1000;
        char buf[1024];
        size_t n = 0;

        while (n < sizeof buf - 1) {
                gint64 left = deadline - g_get_monotonic_time();
                struct pollfd p = { .fd = fd, .events = POLLIN };
                ssize_t k;

                if (left <= 0 || poll(&p, 1, (int) (left / 1000) + 1) <= 0)
                        return NULL;
                k = read(fd, buf + n, sizeof buf - 1 - n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        return NULL;
                n += (size_t) k;
                buf[n] = 0;
                if (strchr(buf, '\n')) {
                        *strchr(buf, '\n') = 0;
                        return g_strdup(buf);
                }
        }
        return NULL;
}

static GDBusConnection *connect_to(const char *address) {
        g_autoptr(GError) error = NULL;
        GDBusConnection *conn;

        conn = g_dbus_connection_new_for_address_sync(
                address,
                G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                        G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                NULL, NULL, &error);
        g_assert_no_error(error);
        g_dbus_connection_set_exit_on_close(conn, FALSE);
        return conn;
}

TestBus *test_bus_new(void) {
        TestBus *b = g_new0(TestBus, 1);

        b->stdout_fd = -1;
        b->dbus = g_test_dbus_new(G_TEST_DBUS_NONE);
        g_test_dbus_up(b->dbus);
        b->address = g_test_dbus_get_bus_address(b->dbus);
        g_assert_nonnull(b->address);
        b->conn = connect_to(b->address);
        return b;
}

TestBus *test_bus_new_shared(void) {
        TestBus *b = g_new0(TestBus, 1);
        g_autoptr(GError) error = NULL;
        g_autofree char *config_path = NULL, *arg = NULL;
        const char *argv[] = { "dbus-daemon", NULL, "--nofork", "--print-address=1", NULL };
        int fd;

        b->stdout_fd = -1;
        fd = g_file_open_tmp("portpub-bus-XXXXXX.conf", &config_path, &error);
        g_assert_no_error(error);
        close(fd);
        g_assert_true(g_file_set_contents(config_path, shared_bus_config, -1, &error));
        g_assert_no_error(error);
        arg = g_strdup_printf("--config-file=%s", config_path);
        argv[1] = arg;

        g_spawn_async_with_pipes(NULL, (char **) argv, NULL,
                                 G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD, die_with_parent,
                                 NULL, &b->pid, NULL, &b->stdout_fd, NULL, &error);
        g_assert_no_error(error);
        b->own_address = read_address_line(b->stdout_fd, 10000);
        /* It has read its configuration once it listens. */
        (void) unlink(config_path);
        if (!b->own_address)
                g_error("dbus-daemon --config-file=%s printed no address", config_path);
        b->address = b->own_address;
        b->conn = connect_to(b->address);
        return b;
}

void test_bus_free(TestBus *b) {
        int status;

        if (!b)
                return;
        if (b->conn) {
                g_dbus_connection_close_sync(b->conn, NULL, NULL);
                g_object_unref(b->conn);
        }
        if (b->dbus) {
                g_test_dbus_down(b->dbus);
                g_object_unref(b->dbus);
        }
        if (b->pid > 0) {
                kill(b->pid, SIGTERM);
                if (!test_wait_pid(b->pid, 5000, &status)) {
                        kill(b->pid, SIGKILL);
                        g_assert_true(test_wait_pid(b->pid, 5000, &status));
                }
                g_spawn_close_pid(b->pid);
        }
        if (b->stdout_fd >= 0)
                close(b->stdout_fd);
        g_free(b->own_address);
        g_free(b);
}

static const char *daemon_path(void) {
        const char *p = g_getenv("PORTPUBD");

        g_assert_nonnull(p);
        return p;
}

TestDaemon *test_daemon_spawn_full(TestBus *b, const TestDaemonOptions *o) {
        g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
        g_auto(GStrv) envp = g_get_environ();
        g_autoptr(GError) error = NULL;
        TestDaemon *d = g_new0(TestDaemon, 1);
        gboolean has_state_file = FALSE, has_varlink = FALSE;

        d->bus = b;
        d->notify_fd = -1;
        d->exit_status = -1;
        for (const char *const *e = o->env; e && *e; e++) {
                const char *eq = strchr(*e, '=');
                g_autofree char *name = NULL;

                g_assert_nonnull(eq);
                name = g_strndup(*e, (gsize) (eq - *e));
                envp = g_environ_setenv(envp, name, eq + 1, TRUE);
        }
        if (o->with_notify) {
                struct sockaddr_un sa = { .sun_family = AF_UNIX };

                d->notify_path = g_strdup_printf("%s/portpub-notify-%d-%d", g_get_tmp_dir(),
                                                 getpid(), g_random_int_range(0, 1 << 30));
                g_assert_cmpuint(strlen(d->notify_path), <, sizeof sa.sun_path);
                strcpy(sa.sun_path, d->notify_path);
                d->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
                g_assert_cmpint(d->notify_fd, >=, 0);
                g_assert_cmpint(bind(d->notify_fd, (struct sockaddr *) &sa, sizeof sa), ==, 0);
                envp = g_environ_setenv(envp, "NOTIFY_SOCKET", d->notify_path, TRUE);
        } else
                envp = g_environ_unsetenv(envp, "NOTIFY_SOCKET");

        if (test_under_valgrind()) {
                /* Under memcheck as well; an error or a definite leak is exit status 99. */
                char *valgrind = g_find_program_in_path("valgrind");

                g_assert_nonnull(valgrind);
                g_ptr_array_add(argv, valgrind);
                g_ptr_array_add(argv, g_strdup("--quiet"));
                g_ptr_array_add(argv, g_strdup("--error-exitcode=99"));
                g_ptr_array_add(argv, g_strdup("--leak-check=full"));
                g_ptr_array_add(argv, g_strdup("--errors-for-leak-kinds=definite"));
                g_ptr_array_add(argv, g_strdup("--show-leak-kinds=definite"));
                g_ptr_array_add(argv, g_strdup("--num-callers=30"));
        }
        g_ptr_array_add(argv, g_strdup(daemon_path()));
        if (o->user_bus) {
                /* sd_bus_open_user() finds the user's bus there. */
                envp = g_environ_setenv(envp, "DBUS_SESSION_BUS_ADDRESS", b->address, TRUE);
                g_ptr_array_add(argv, g_strdup("--user"));
        } else
                g_ptr_array_add(argv, g_strdup_printf("--bus-address=%s", b->address));
        for (const char *const *a = o->extra_args; a && *a; a++) {
                if (g_str_has_prefix(*a, "--state-file="))
                        has_state_file = TRUE;
                if (g_str_has_prefix(*a, "--varlink="))
                        has_varlink = TRUE;
                g_ptr_array_add(argv, g_strdup(*a));
        }
        if (!has_state_file) {
                d->state_file = g_strdup_printf("%s/portpub-test-state-%d-%d", g_get_tmp_dir(),
                                                getpid(), g_random_int_range(0, 1 << 30));
                g_ptr_array_add(argv, g_strdup_printf("--state-file=%s", d->state_file));
        }
        if (!has_varlink) {
                d->varlink = g_strdup_printf("%s/portpub-test-varlink-%d-%d", g_get_tmp_dir(),
                                             getpid(), g_random_int_range(0, 1 << 30));
                g_ptr_array_add(argv, g_strdup_printf("--varlink=%s", d->varlink));
        }
        g_ptr_array_add(argv, NULL);

        g_spawn_async(NULL, (char **) argv->pdata, envp, G_SPAWN_DO_NOT_REAP_CHILD, die_with_parent,
                      NULL, &d->pid, &error);
        g_assert_no_error(error);
        return d;
}

TestDaemon *test_daemon_spawn(TestBus *b, const char *const *extra_args, gboolean with_notify) {
        TestDaemonOptions o = { .extra_args = extra_args, .with_notify = with_notify };

        return test_daemon_spawn_full(b, &o);
}

gboolean test_name_has_owner(TestBus *b) {
        g_autoptr(GVariant) v = NULL;
        gboolean owned = FALSE;

        v = g_dbus_connection_call_sync(b->conn, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                        "org.freedesktop.DBus", "NameHasOwner",
                                        g_variant_new("(s)", TEST_BUS_NAME), G_VARIANT_TYPE("(b)"),
                                        G_DBUS_CALL_FLAGS_NONE, (int) test_scaled_ms(2000), NULL,
                                        NULL);
        if (v)
                g_variant_get(v, "(b)", &owned);
        return owned;
}

gboolean test_daemon_wait(TestDaemon *d, guint timeout_ms) {
        gint64 deadline = g_get_monotonic_time() + (gint64) test_scaled_ms(timeout_ms) * 1000;
        int status;

        if (d->pid <= 0)
                return TRUE;
        for (;;) {
                pid_t r = waitpid(d->pid, &status, WNOHANG);

                if (r == d->pid) {
                        d->exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
                        g_spawn_close_pid(d->pid);
                        d->pid = 0;
                        return TRUE;
                }
                if (g_get_monotonic_time() >= deadline)
                        return FALSE;
                g_usleep(5000); /* polling a child's exit: there is no fd to wait on here */
        }
}

gboolean test_daemon_wait_for_name(TestDaemon *d, guint timeout_ms) {
        gint64 deadline = g_get_monotonic_time() + (gint64) test_scaled_ms(timeout_ms) * 1000;

        while (g_get_monotonic_time() < deadline) {
                if (test_name_has_owner(d->bus))
                        return TRUE;
                if (test_daemon_wait(d, 0))
                        return FALSE;
                g_usleep(10000);
        }
        return FALSE;
}

TestDaemon *test_daemon_start_full(TestBus *b, const TestDaemonOptions *o) {
        TestDaemon *d = test_daemon_spawn_full(b, o);

        g_assert_true(test_daemon_wait_for_name(d, 10000));
        return d;
}

TestDaemon *test_daemon_start(TestBus *b) {
        TestDaemonOptions o = {};

        return test_daemon_start_full(b, &o);
}

int test_daemon_stop(TestDaemon *d) {
        if (d->pid > 0) {
                kill(d->pid, SIGTERM);
                if (!test_daemon_wait(d, 5000)) {
                        kill(d->pid, SIGKILL);
                        g_assert_true(test_daemon_wait(d, 5000));
                }
        }
        if (test_under_valgrind())
                g_assert_cmpint(d->exit_status, !=, 99); /* memcheck found errors */
        return d->exit_status;
}

void test_daemon_free(TestDaemon *d) {
        if (!d)
                return;
        if (d->pid > 0 && test_under_valgrind()) {
                /* Let it exit on its own, for memcheck's verdict on leaks. */
                kill(d->pid, SIGTERM);
                if (test_daemon_wait(d, 5000))
                        g_assert_cmpint(d->exit_status, !=, 99);
        }
        if (d->pid > 0) {
                kill(d->pid, SIGKILL);
                (void) test_daemon_wait(d, 5000);
        }
        if (d->notify_fd >= 0)
                close(d->notify_fd);
        if (d->notify_path)
                unlink(d->notify_path);
        g_free(d->notify_path);
        if (d->state_file) {
                g_autofree char *tmp = g_strdup_printf("%s.tmp", d->state_file);

                unlink(d->state_file);
                unlink(tmp);
        }
        g_free(d->state_file);
        if (d->varlink)
                unlink(d->varlink);
        g_free(d->varlink);
        g_free(d);
}

gboolean test_daemon_read_notify(TestDaemon *d, char *buf, size_t size, guint timeout_ms) {
        struct pollfd p = { .fd = d->notify_fd, .events = POLLIN };
        ssize_t n;

        if (poll(&p, 1, (int) test_scaled_ms(timeout_ms)) <= 0)
                return FALSE;
        n = recv(d->notify_fd, buf, size - 1, 0);
        if (n < 0)
                return FALSE;
        buf[n] = 0;
        return TRUE;
}

gboolean test_wait_until(gboolean (*cond)(gpointer data), gpointer data, guint timeout_ms) {
        gint64 deadline = g_get_monotonic_time() + (gint64) test_scaled_ms(timeout_ms) * 1000;

        while (!cond(data)) {
                if (g_get_monotonic_time() >= deadline)
                        return FALSE;
                if (!g_main_context_iteration(NULL, FALSE))
                        g_usleep(2000);
        }
        return TRUE;
}

typedef struct RunOutcome {
        gboolean done;
        char *out, *err;
        GError *error;
} RunOutcome;

static void on_communicated(GObject *source, GAsyncResult *res, gpointer data) {
        RunOutcome *o = data;

        g_subprocess_communicate_utf8_finish(G_SUBPROCESS(source), res, &o->out, &o->err, &o->error);
        o->done = TRUE;
}

static gboolean run_outcome_done(gpointer data) {
        return ((RunOutcome *) data)->done;
}

int test_run(const char *const *argv, const char *const *envp, guint timeout_ms, char **ret_out,
             char **ret_err) {
        g_autoptr(GSubprocessLauncher) launcher = NULL;
        g_autoptr(GSubprocess) proc = NULL;
        g_autoptr(GError) error = NULL;
        RunOutcome o = {};
        int status;

        launcher = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE |
                                             G_SUBPROCESS_FLAGS_STDERR_PIPE);
        if (envp)
                g_subprocess_launcher_set_environ(launcher, (char **) envp);
        proc = g_subprocess_launcher_spawnv(launcher, argv, &error);
        g_assert_no_error(error);
        /* Completes once the process exited and both pipes are drained. */
        g_subprocess_communicate_utf8_async(proc, NULL, NULL, on_communicated, &o);
        if (!test_wait_until(run_outcome_done, &o, timeout_ms)) {
                g_subprocess_force_exit(proc);
                (void) test_wait_until(run_outcome_done, &o, 5000);
                g_error("%s did not finish in time", argv[0]);
        }
        g_assert_no_error(o.error);
        g_assert_true(g_subprocess_wait(proc, NULL, &error));
        status = g_subprocess_get_if_exited(proc) ? g_subprocess_get_exit_status(proc)
                                                  : -g_subprocess_get_term_sig(proc);
        if (ret_out)
                *ret_out = o.out;
        else
                g_free(o.out);
        if (ret_err)
                *ret_err = o.err;
        else
                g_free(o.err);
        return status;
}

GVariant *test_call(TestBus *b, const char *path, const char *iface, const char *method,
                    GVariant *params, const char *reply_type, GError **error) {
        return g_dbus_connection_call_sync(b->conn, TEST_BUS_NAME, path, iface, method, params,
                                           reply_type ? G_VARIANT_TYPE(reply_type) : NULL,
                                           G_DBUS_CALL_FLAGS_NONE, (int) test_scaled_ms(10000),
                                           NULL, error);
}

char *test_call_expect_error(TestBus *b, const char *path, const char *iface, const char *method,
                             GVariant *params, const char *error_name) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) v = NULL;
        g_autofree char *remote = NULL;

        v = test_call(b, path, iface, method, params, NULL, &error);
        g_assert_null(v);
        g_assert_nonnull(error);
        remote = g_dbus_error_get_remote_error(error);
        if (g_strcmp0(remote, error_name) != 0)
                g_error("%s: expected %s, got %s: %s", method, error_name, remote, error->message);
        g_dbus_error_strip_remote_error(error);
        return g_strdup(error->message);
}

GVariant *test_get_property(TestBus *b, const char *path, const char *iface, const char *name) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) v = NULL;
        GVariant *inner;

        v = g_dbus_connection_call_sync(b->conn, TEST_BUS_NAME, path,
                                        "org.freedesktop.DBus.Properties", "Get",
                                        g_variant_new("(ss)", iface, name), G_VARIANT_TYPE("(v)"),
                                        G_DBUS_CALL_FLAGS_NONE, (int) test_scaled_ms(10000), NULL,
                                        &error);
        g_assert_no_error(error);
        g_variant_get(v, "(v)", &inner);
        return inner;
}

guint32 test_get_u32(TestBus *b, const char *path, const char *iface, const char *name) {
        g_autoptr(GVariant) v = test_get_property(b, path, iface, name);

        g_assert_true(g_variant_is_of_type(v, G_VARIANT_TYPE_UINT32));
        return g_variant_get_uint32(v);
}

guint64 test_get_u64(TestBus *b, const char *path, const char *iface, const char *name) {
        g_autoptr(GVariant) v = test_get_property(b, path, iface, name);

        g_assert_true(g_variant_is_of_type(v, G_VARIANT_TYPE_UINT64));
        return g_variant_get_uint64(v);
}

static int make_addr(const char *addr, guint16 port, struct sockaddr_storage *ss, socklen_t *len) {
        struct sockaddr_in *in = (struct sockaddr_in *) ss;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) ss;

        memset(ss, 0, sizeof *ss);
        if (inet_pton(AF_INET, addr, &in->sin_addr) == 1) {
                in->sin_family = AF_INET;
                in->sin_port = htons(port);
                *len = sizeof *in;
                return AF_INET;
        }
        g_assert_cmpint(inet_pton(AF_INET6, addr, &in6->sin6_addr), ==, 1);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        *len = sizeof *in6;
        return AF_INET6;
}

int test_tcp_listen(const char *addr, guint16 *ret_port) {
        struct sockaddr_storage ss;
        socklen_t len;
        int fd, one = 1, family;

        family = make_addr(addr, 0, &ss, &len);
        fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one), ==, 0);
        g_assert_cmpint(bind(fd, (struct sockaddr *) &ss, len), ==, 0);
        g_assert_cmpint(listen(fd, 128), ==, 0);
        len = sizeof ss;
        g_assert_cmpint(getsockname(fd, (struct sockaddr *) &ss, &len), ==, 0);
        *ret_port = ntohs(family == AF_INET ? ((struct sockaddr_in *) &ss)->sin_port
                                            : ((struct sockaddr_in6 *) &ss)->sin6_port);
        return fd;
}

int test_tcp_connect(const char *addr, guint16 port, guint timeout_ms) {
        struct sockaddr_storage ss;
        struct pollfd p;
        socklen_t len;
        int fd, family, err = 0;
        socklen_t elen = sizeof err;

        family = make_addr(addr, port, &ss, &len);
        fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        g_assert_cmpint(fd, >=, 0);
        if (connect(fd, (struct sockaddr *) &ss, len) < 0) {
                if (errno != EINPROGRESS) {
                        close(fd);
                        return -errno;
                }
                p = (struct pollfd){ .fd = fd, .events = POLLOUT };
                if (poll(&p, 1, (int) test_scaled_ms(timeout_ms)) <= 0) {
                        close(fd);
                        return -ETIMEDOUT;
                }
                (void) getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen);
                if (err) {
                        close(fd);
                        return -err;
                }
        }
        /* Blocking from here: tests read and write with poll() timeouts of their own. */
        (void) fcntl(fd, F_SETFL, 0);
        return fd;
}

struct TestEcho {
        int proto;
        int fd;
        guint16 port;
        char *tag;
        GThread *thread;
        GMutex lock;
        GPtrArray *conns; /* of GThread, joined at free */
        gboolean stopping;
};

typedef struct EchoConn {
        TestEcho *echo;
        int fd;
} EchoConn;

static gpointer echo_conn_thread(gpointer data) {
        EchoConn *c = data;
        char buf[65536];
        size_t tag_len = c->echo->tag ? strlen(c->echo->tag) : 0;

        for (;;) {
                ssize_t n = read(c->fd, buf, sizeof buf);

                if (n <= 0)
                        break;
                if (tag_len > 0 && write(c->fd, c->echo->tag, tag_len) != (ssize_t) tag_len)
                        break;
                for (ssize_t off = 0; off < n;) {
                        ssize_t w = write(c->fd, buf + off, (size_t) (n - off));
                        if (w <= 0)
                                goto done;
                        off += w;
                }
        }
done:
        close(c->fd);
        g_free(c);
        return NULL;
}

static gpointer echo_thread(gpointer data) {
        TestEcho *e = data;

        for (;;) {
                struct pollfd p = { .fd = e->fd, .events = POLLIN };
                gboolean stop;

                (void) poll(&p, 1, 50);
                g_mutex_lock(&e->lock);
                stop = e->stopping;
                g_mutex_unlock(&e->lock);
                if (stop)
                        break;
                if (!(p.revents & POLLIN))
                        continue;
                if (e->proto == IPPROTO_TCP) {
                        int fd = accept4(e->fd, NULL, NULL, SOCK_CLOEXEC);
                        EchoConn *c;

                        if (fd < 0)
                                continue;
                        c = g_new0(EchoConn, 1);
                        c->echo = e;
                        c->fd = fd;
                        g_mutex_lock(&e->lock);
                        g_ptr_array_add(e->conns, g_thread_new("echo-conn", echo_conn_thread, c));
                        g_mutex_unlock(&e->lock);
                } else {
                        struct sockaddr_storage from;
                        socklen_t len = sizeof from;
                        char buf[65536 + 64];
                        size_t tag_len = e->tag ? strlen(e->tag) : 0;
                        ssize_t n;

                        if (tag_len)
                                memcpy(buf, e->tag, tag_len);
                        n = recvfrom(e->fd, buf + tag_len, 65536, MSG_DONTWAIT,
                                     (struct sockaddr *) &from, &len);
                        if (n >= 0)
                                (void) sendto(e->fd, buf, (size_t) n + tag_len, 0,
                                              (struct sockaddr *) &from, len);
                }
        }
        return NULL;
}

TestEcho *test_echo_new(int proto, const char *addr, guint16 port, const char *tag) {
        TestEcho *e = g_new0(TestEcho, 1);
        struct sockaddr_storage ss;
        socklen_t len;
        int family, one = 1;

        e->proto = proto;
        e->tag = g_strdup(tag);
        e->conns = g_ptr_array_new();
        g_mutex_init(&e->lock);
        family = make_addr(addr, port, &ss, &len);
        e->fd = socket(family, (proto == IPPROTO_TCP ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0);
        g_assert_cmpint(e->fd, >=, 0);
        (void) setsockopt(e->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (family == AF_INET6)
                (void) setsockopt(e->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        g_assert_cmpint(bind(e->fd, (struct sockaddr *) &ss, len), ==, 0);
        if (proto == IPPROTO_TCP)
                g_assert_cmpint(listen(e->fd, 128), ==, 0);
        len = sizeof ss;
        g_assert_cmpint(getsockname(e->fd, (struct sockaddr *) &ss, &len), ==, 0);
        e->port = ntohs(family == AF_INET ? ((struct sockaddr_in *) &ss)->sin_port
                                          : ((struct sockaddr_in6 *) &ss)->sin6_port);
        e->thread = g_thread_new("echo", echo_thread, e);
        return e;
}

guint16 test_echo_port(TestEcho *e) {
        return e->port;
}

void test_echo_free(TestEcho *e) {
        if (!e)
                return;
        g_mutex_lock(&e->lock);
        e->stopping = TRUE;
        g_mutex_unlock(&e->lock);
        g_thread_join(e->thread);
        close(e->fd);
        /* Connection threads end when their peer closes; tests close their clients first. */
        for (guint i = 0; i < e->conns->len; i++)
                g_thread_join(e->conns->pdata[i]);
        g_ptr_array_free(e->conns, TRUE);
        g_mutex_clear(&e->lock);
        g_free(e->tag);
        g_free(e);
}

static void set_timeouts(int fd) {
        struct timeval tv = { .tv_sec = test_scaled_ms(10000) / 1000 };

        (void) setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        (void) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

void test_roundtrip(int fd, const char *msg, const char *expect) {
        size_t want = strlen(expect), got = 0;
        char buf[4096];

        g_assert_cmpuint(want, <, sizeof buf);
        set_timeouts(fd);
        g_assert_cmpint(write(fd, msg, strlen(msg)), ==, (ssize_t) strlen(msg));
        while (got < want) {
                ssize_t n = read(fd, buf + got, want - got);

                g_assert_cmpint(n, >, 0);
                got += (size_t) n;
        }
        buf[got] = 0;
        g_assert_cmpstr(buf, ==, expect);
}

int test_udp_socket(const char *addr) {
        struct sockaddr_storage ss;
        socklen_t len;
        int fd, family;

        family = make_addr(addr, 0, &ss, &len);
        fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        g_assert_cmpint(fd, >=, 0);
        set_timeouts(fd);
        return fd;
}

void test_udp_roundtrip(int fd, const char *addr, guint16 port, const char *msg, const char *expect) {
        struct sockaddr_storage ss;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        char buf[70000];
        socklen_t len;
        ssize_t n;

        make_addr(addr, port, &ss, &len);
        g_assert_cmpint(sendto(fd, msg, strlen(msg), 0, (struct sockaddr *) &ss, len), ==,
                        (ssize_t) strlen(msg));
        g_assert_cmpint(poll(&p, 1, 5000), ==, 1);
        n = recv(fd, buf, sizeof buf - 1, 0);
        g_assert_cmpint(n, >=, 0);
        buf[n] = 0;
        g_assert_cmpstr(buf, ==, expect);
}

static gboolean sync_done(gpointer data) {
        return *(gboolean *) data;
}

static void on_sync_reply(GObject *src, GAsyncResult *res, gpointer data) {
        g_autoptr(GVariant) v = g_dbus_connection_call_finish(G_DBUS_CONNECTION(src), res, NULL);

        *(gboolean *) data = TRUE;
}

void test_sync_daemon(TestBus *b) {
        gboolean done = FALSE;

        g_dbus_connection_call(b->conn, TEST_BUS_NAME, TEST_MANAGER_PATH,
                               "org.freedesktop.DBus.Peer", "Ping", NULL, NULL,
                               G_DBUS_CALL_FLAGS_NONE, 5000, NULL, on_sync_reply, &done);
        g_assert_true(test_wait_until(sync_done, &done, 5000));
}
