/* Conformance: varlink-go's certification client against our server (varlink-certification-server) */

/*
 * An independent implementation checks ours: Debian's varlink-go-certification --client walks
 * org.varlink.certification (Start, Test01 ... Test11, End) against
 * varlink-certification-server, built on src/varlink. That client exits 0 whatever happens, so
 * the test reads what it prints: every step's line, "End: 'true'" last, no "failed"; and the
 * server's own "certified" line, which it prints only when the whole sequence passed its
 * checks. Skipped only when varlink-go (the client) is not installed, or the build found no
 * certification interface file (golang-github-varlink-go-dev) to build the server from.
 */

#include <fcntl.h>
#include <gio/gio.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <json-c/json.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

#define CLIENT "varlink-go-certification"
#define TIMEOUT_MS 30000

typedef struct Server {
        GPid pid;
        int stdout_fd;
        char *dir, *path;
} Server;

static gboolean socket_accepts(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        gboolean ok;

        g_assert_cmpint(fd, >=, 0);
        g_strlcpy(sa.sun_path, path, sizeof sa.sun_path);
        ok = connect(fd, (struct sockaddr *) &sa, sizeof sa) == 0;
        close(fd);
        return ok;
}

static Server *server_start(void) {
        Server *s = g_new0(Server, 1);
        g_autofree char *arg = NULL;
        GError *error = NULL;
        gint64 deadline;

        s->dir = g_dir_make_tmp("test-varlink-certification-XXXXXX", &error);
        g_assert_no_error(error);
        s->path = g_build_filename(s->dir, "socket", NULL);
        arg = g_strconcat("--varlink=unix:", s->path, NULL);
        const char *argv[] = { CERTIFICATION_SERVER, arg, NULL };

        g_assert_true(g_spawn_async_with_pipes(NULL, (char **) argv, NULL,
                                               G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, &s->pid, NULL,
                                               &s->stdout_fd, NULL, &error));
        g_assert_no_error(error);

        deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
        while (!socket_accepts(s->path)) {
                if (g_get_monotonic_time() > deadline)
                        g_error("the certification server does not listen on %s", s->path);
                g_usleep(10 * 1000);
        }
        return s;
}

/* Stops the server (SIGTERM) and returns what it printed; asserts a clean exit. */
static char *server_stop(Server *s) {
        GString *out = g_string_new(NULL);
        char buf[4096];
        ssize_t n;
        int status;

        g_assert_cmpint(kill(s->pid, SIGTERM), ==, 0);
        g_assert_true(test_wait_pid(s->pid, 10000, &status));
        g_assert_true(WIFEXITED(status));
        g_assert_cmpint(WEXITSTATUS(status), ==, 0);
        while ((n = read(s->stdout_fd, buf, sizeof buf)) > 0)
                g_string_append_len(out, buf, n);
        close(s->stdout_fd);
        g_spawn_close_pid(s->pid);
        /* The server removed its socket. */
        g_assert_false(g_file_test(s->path, G_FILE_TEST_EXISTS));
        g_rmdir(s->dir);
        g_free(s->dir);
        g_free(s->path);
        g_free(s);
        return g_string_free(out, FALSE);
}

typedef struct Run {
        GMainLoop *loop;
        char *out;
        GError *error;
} Run;

static void communicated(GObject *source, GAsyncResult *result, gpointer data) {
        Run *run = data;

        g_subprocess_communicate_utf8_finish(G_SUBPROCESS(source), result, &run->out, NULL,
                                             &run->error);
        g_main_loop_quit(run->loop);
}

static gboolean timed_out(gpointer data) {
        g_error("%s did not finish within %d s", CLIENT, TIMEOUT_MS / 1000);
        return G_SOURCE_REMOVE;
}

/* Runs the client against path; returns what it printed, asserting exit status 0. */
static char *client_run(const char *client, const char *path) {
        g_autofree char *arg = g_strconcat("--varlink=unix:", path, NULL);
        g_autoptr(GSubprocess) p = NULL;
        GError *error = NULL;
        Run run = { .loop = g_main_loop_new(NULL, FALSE) };
        guint timeout;

        p = g_subprocess_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_MERGE,
                             &error, client, "--client", arg, NULL);
        g_assert_no_error(error);
        g_subprocess_communicate_utf8_async(p, NULL, NULL, communicated, &run);
        timeout = g_timeout_add(TIMEOUT_MS, timed_out, NULL);
        g_main_loop_run(run.loop);
        g_source_remove(timeout);
        g_main_loop_unref(run.loop);
        g_assert_no_error(run.error);
        g_assert_true(g_subprocess_get_if_exited(p));
        g_test_message("%s:\n%s", CLIENT, run.out);
        g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 0);
        return run.out;
}

/* The lines varlink-go's client prints after each step; each must be there, in this order. */
static void assert_certified_output(const char *out) {
        static const char *const lines[] = {
                "Start: '",
                "Test01: 'true'",
                "Test02: '1'",
                "Test03: '1'",
                "Test04: 'ping'",
                "Test05: 'false'",
                "Test06: '{false 2 3.141592653589793 a lot of string}'",
                "Test07: 'map[bar:Bar foo:Foo]'",
                "Test08: 'map[one:{} three:{} two:{}]'",
                "Test09: '",
                "Test10() Send:",
                "  Receive: 'Reply number 1'",
                "  Receive: 'Reply number 10'",
                "Test10: '[Reply number 1 Reply number 2 Reply number 3 Reply number 4 Reply "
                "number 5 Reply number 6 Reply number 7 Reply number 8 Reply number 9 Reply number "
                "10]'",
                "Test11: ''",
                "End: 'true'",
        };
        const char *at = out;

        g_assert_null(strstr(out, "failed"));
        g_assert_null(strstr(out, "Failed"));
        for (size_t i = 0; i < G_N_ELEMENTS(lines); i++) {
                const char *p = strstr(at, lines[i]);

                if (!p)
                        g_error("%s printed no '%s' (after the previous step)", CLIENT, lines[i]);
                at = p + strlen(lines[i]);
        }
        g_assert_cmpstr(at, ==, "\n"); /* End's line is the last */
}

/* The server printed "certified" for the client whose Start got the id in client_out. */
static void assert_server_certified(const char *server_out, const char *client_out) {
        const char *start = strstr(client_out, "Start: '");
        g_autofree char *id = NULL, *line = NULL;

        g_assert_nonnull(start);
        start += strlen("Start: '");
        id = g_strndup(start, strcspn(start, "'"));
        g_assert_cmpuint(strlen(id), ==, 36);
        line = g_strdup_printf("certified: client %s passed", id);
        if (!strstr(server_out, line))
                g_error("the server did not certify client %s", id);
}

static void test_certification(void) {
        g_autofree char *client = g_find_program_in_path(CLIENT);
        g_autofree char *out1 = NULL, *out2 = NULL, *server_out = NULL;
        Server *s;

        if (!client) {
                g_test_skip(CLIENT " is not installed (Debian: apt-get install varlink-go)");
                return;
        }
        if (!*CERTIFICATION_SERVER) {
                g_test_skip("varlink-certification-server was not built: no org.varlink.certification "
                            "interface file (Debian: apt-get install golang-github-varlink-go-dev)");
                return;
        }

        s = server_start();
        /* Twice: a client's state ends with its End, and the next starts afresh. */
        out1 = client_run(client, s->path);
        assert_certified_output(out1);
        out2 = client_run(client, s->path);
        assert_certified_output(out2);
        server_out = server_stop(s);
        g_test_message("server:\n%s", server_out);

        /* Each client, by the id its Start got, passed the server's checks. */
        assert_server_certified(server_out, out1);
        assert_server_certified(server_out, out2);
}

/* One call on a blocking socket (the server is another process); the reply, parsed. */
static json_object *raw_call(int fd, const char *call) {
        g_autoptr(GString) reply = g_string_new(NULL);
        size_t len = strlen(call) + 1; /* with the NUL */
        json_object *m;
        ssize_t n;

        n = write(fd, call, len);
        g_assert_cmpint(n, ==, (ssize_t) len);
        for (;;) {
                char ch;

                g_assert_cmpint(read(fd, &ch, 1), ==, 1);
                if (ch == 0)
                        break;
                g_string_append_c(reply, ch);
        }
        m = json_tokener_parse(reply->str);
        g_assert_nonnull(m);
        return m;
}

static const char *error_of(json_object *m) {
        json_object *e;

        return json_object_object_get_ex(m, "error", &e) ? json_object_get_string(e) : NULL;
}

/* The server is no rubber stamp: a call out of order, a wrong value, an unknown client. */
static void test_server_checks(void) {
        g_autofree char *call = NULL, *server_out = NULL;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        json_object *m, *p, *v;
        const char *id;
        Server *s;
        int fd;

        if (!*CERTIFICATION_SERVER) {
                g_test_skip("varlink-certification-server was not built: no org.varlink.certification "
                            "interface file (Debian: apt-get install golang-github-varlink-go-dev)");
                return;
        }
        s = server_start();
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        g_strlcpy(sa.sun_path, s->path, sizeof sa.sun_path);
        g_assert_cmpint(connect(fd, (struct sockaddr *) &sa, sizeof sa), ==, 0);

        m = raw_call(fd, "{\"method\":\"org.varlink.certification.Start\"}");
        g_assert_true(json_object_object_get_ex(m, "parameters", &p));
        g_assert_true(json_object_object_get_ex(p, "client_id", &v));
        id = json_object_get_string(v);
        call = g_strdup_printf("{\"method\":\"org.varlink.certification.Test02\","
                               "\"parameters\":{\"client_id\":\"%s\",\"bool\":true}}",
                               id);
        json_object_put(m);

        m = raw_call(fd, "{\"method\":\"org.varlink.certification.Test01\","
                         "\"parameters\":{\"client_id\":\"nobody\"}}");
        g_assert_cmpstr(error_of(m), ==, "org.varlink.certification.ClientIdError");
        json_object_put(m);

        /* Test02 before Test01: wants names Test01. */
        m = raw_call(fd, call);
        g_assert_cmpstr(error_of(m), ==, "org.varlink.certification.CertificationError");
        g_assert_true(json_object_object_get_ex(m, "parameters", &p));
        g_assert_true(json_object_object_get_ex(p, "wants", &v));
        g_assert_true(json_object_object_get_ex(v, "method", &v));
        g_assert_cmpstr(json_object_get_string(v), ==, "org.varlink.certification.Test01");
        json_object_put(m);

        close(fd);
        server_out = server_stop(s);
        g_assert_null(strstr(server_out, "certified"));
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/varlink/certification", test_certification);
        g_test_add_func("/varlink/certification-server-checks", test_server_checks);
        return g_test_run();
}
