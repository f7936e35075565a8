/* portpubctl's blocking varlink client against a socket the test serves by hand: framing
 * (several messages in one read, one message over several), what a message must be, the 16 MiB
 * bound with its NUL, deadlines, the end of the connection */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Before glib.h, whose MIN and MAX replace macro.h's. */
#include "time-util.h"
#include "varlink-client.h"

#include <glib.h>
#include <glib/gstdio.h>

typedef struct Fixture {
        char *dir, *path;
        int listen_fd;
        VarlinkClient *client;
        int server_fd; /* the accepted end */
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        g_autoptr(GError) error = NULL;

        f->dir = g_dir_make_tmp("portpub-vlclient-XXXXXX", &error);
        g_assert_no_error(error);
        f->path = g_build_filename(f->dir, "sock", NULL);
        g_assert_cmpuint(strlen(f->path), <, sizeof sa.sun_path);
        strcpy(sa.sun_path, f->path);
        f->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        g_assert_cmpint(f->listen_fd, >=, 0);
        g_assert_cmpint(bind(f->listen_fd, (struct sockaddr *) &sa, sizeof sa), ==, 0);
        g_assert_cmpint(listen(f->listen_fd, 8), ==, 0);

        /* The backlog takes the connection before anyone accepts it. */
        g_assert_cmpint(varlink_client_connect(&f->client, f->path), ==, 0);
        f->server_fd = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        g_assert_cmpint(f->server_fd, >=, 0);
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
        f->client = varlink_client_free(f->client);
        if (f->server_fd >= 0)
                close(f->server_fd);
        close(f->listen_fd);
        unlink(f->path);
        g_rmdir(f->dir);
        g_free(f->path);
        g_free(f->dir);
}

static void server_write(Fixture *f, const void *data, size_t n) {
        const char *p = data;

        while (n > 0) {
                ssize_t k = write(f->server_fd, p, n);

                g_assert_cmpint(k, >, 0);
                p += k;
                n -= (size_t) k;
        }
}

/* Writes text and its NUL. */
static void server_send(Fixture *f, const char *text) {
        server_write(f, text, strlen(text) + 1);
}

static uint64_t in_ms(unsigned ms) {
        return monotonic_usec() + ms * USEC_PER_MSEC;
}

static void test_call_on_the_wire(Fixture *f, gconstpointer data) {
        json_object *p = json_object_new_object();
        char buf[256];
        ssize_t n;

        g_assert_cmpint(json_add(p, "sandbox", json_object_new_string("web")), ==, 0);
        g_assert_cmpint(varlink_client_send(f->client, "io.example.M", p, true, in_ms(5000)), ==, 0);
        json_object_put(p);
        g_assert_cmpint(varlink_client_send(f->client, "io.example.N", NULL, false, in_ms(5000)),
                        ==, 0);
        n = read(f->server_fd, buf, sizeof buf);
        /* Both calls, each ended by its NUL. */
        g_assert_cmpint(n, >, 0);
        g_assert_cmpmem(buf, (size_t) n,
                        "{\"method\":\"io.example.M\",\"parameters\":{\"sandbox\":\"web\"},\"more\":true}\0"
                        "{\"method\":\"io.example.N\",\"parameters\":{}}",
                        (size_t) n);
}

static void test_framing(Fixture *f, gconstpointer data) {
        static const char two[] = "{\"parameters\":{\"a\":1},\"continues\":true}\0"
                                  "{\"error\":\"io.example.Oops\",\"parameters\":{\"b\":\"x\"}}";
        VarlinkReply r = {};
        json_object *v;

        /* Two messages in one write. */
        server_write(f, two, sizeof two);
        g_assert_cmpint(varlink_client_read(f->client, in_ms(5000), &r), ==, 1);
        g_assert_null(r.error);
        g_assert_true(r.continues);
        g_assert_true(json_object_object_get_ex(r.parameters, "a", &v));
        g_assert_cmpint(json_object_get_int(v), ==, 1);
        varlink_reply_done(&r);
        g_assert_cmpint(varlink_client_read(f->client, VARLINK_CLIENT_NO_WAIT, &r), ==, 1);
        g_assert_cmpstr(r.error, ==, "io.example.Oops");
        g_assert_false(r.continues);
        g_assert_true(json_object_object_get_ex(r.parameters, "b", &v));
        varlink_reply_done(&r);

        /* One message over three writes: not whole before its NUL. */
        server_write(f, "{\"param", 7);
        g_assert_cmpint(varlink_client_read(f->client, VARLINK_CLIENT_NO_WAIT, &r), ==, 0);
        server_write(f, "eters\":null}", 12);
        g_assert_cmpint(varlink_client_read(f->client, VARLINK_CLIENT_NO_WAIT, &r), ==, 0);
        server_write(f, "", 1);
        g_assert_cmpint(varlink_client_read(f->client, VARLINK_CLIENT_NO_WAIT, &r), ==, 1);
        /* null or absent parameters: an empty object. */
        g_assert_true(json_object_is_type(r.parameters, json_type_object));
        g_assert_cmpuint(json_object_object_length(r.parameters), ==, 0);
        varlink_reply_done(&r);
        server_send(f, "{}");
        g_assert_cmpint(varlink_client_read(f->client, in_ms(5000), &r), ==, 1);
        g_assert_cmpuint(json_object_object_length(r.parameters), ==, 0);
        varlink_reply_done(&r);
}

static void test_bad_messages(Fixture *f, gconstpointer data) {
        static const char *const bad[] = {
                "{\"parameters\":",
                "[1]",
                "{\"parameters\":{}} {}",
                "{\"parameters\":1}",
                "{\"error\":1}",
                "{\"continues\":\"yes\"}",
                "",
        };

        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                VarlinkReply r = {};

                server_send(f, bad[i]);
                if (varlink_client_read(f->client, in_ms(5000), &r) != -EBADMSG)
                        g_error("'%s' was taken for a message", bad[i]);
        }
        /* A bad message is taken off the stream: the next one is read. */
        {
                VarlinkReply r = {};

                server_send(f, "{\"parameters\":{}}");
                g_assert_cmpint(varlink_client_read(f->client, in_ms(5000), &r), ==, 1);
                varlink_reply_done(&r);
        }
}

typedef struct Writer {
        int fd;
        char *data;
        size_t size;
} Writer;

static gpointer writer_thread(gpointer data) {
        Writer *w = data;
        size_t done = 0;

        while (done < w->size) {
                ssize_t k = write(w->fd, w->data + done, w->size - done);

                if (k <= 0)
                        break; /* the client hung up on a message too long */
                done += (size_t) k;
        }
        return NULL;
}

static const char message_head[] = "{\"parameters\":{\"s\":\"", message_tail[] = "\"}}";

/* The length of the string s of a message of n bytes (its NUL included). */
static size_t message_s_len(size_t n) {
        return n - (sizeof message_head - 1) - (sizeof message_tail - 1) - 1;
}

/* A message of n bytes with its NUL: {"parameters":{"s":"xxx..."}}. */
static char *message_of(size_t n) {
        char *m = g_malloc(n);

        g_assert_cmpuint(n, >, sizeof message_head + sizeof message_tail);
        memcpy(m, message_head, sizeof message_head - 1);
        memset(m + sizeof message_head - 1, 'x', message_s_len(n));
        memcpy(m + n - sizeof message_tail, message_tail, sizeof message_tail); /* and the NUL */
        return m;
}

static void test_bound(Fixture *f, gconstpointer data) {
        Writer w = { .fd = f->server_fd };
        VarlinkReply r = {};
        GThread *t;
        json_object *s;

        /* 16 MiB with the NUL: taken. */
        w.size = VARLINK_CLIENT_MESSAGE_MAX;
        w.data = message_of(w.size);
        t = g_thread_new("writer", writer_thread, &w);
        g_assert_cmpint(varlink_client_read(f->client, in_ms(20000), &r), ==, 1);
        g_thread_join(t);
        g_assert_true(json_object_object_get_ex(r.parameters, "s", &s));
        g_assert_cmpuint(strlen(json_object_get_string(s)), ==, message_s_len(w.size));
        varlink_reply_done(&r);
        g_free(w.data);

        /* One byte more: refused before it is whole, without reading further. */
        w.size = VARLINK_CLIENT_MESSAGE_MAX + 1;
        w.data = message_of(w.size);
        t = g_thread_new("writer", writer_thread, &w);
        g_assert_cmpint(varlink_client_read(f->client, in_ms(20000), &r), ==, -EMSGSIZE);
        f->client = varlink_client_free(f->client);
        g_thread_join(t);
        g_free(w.data);
}

static void test_deadline_and_end(Fixture *f, gconstpointer data) {
        VarlinkReply r = {};
        uint64_t start = monotonic_usec();

        /* Nothing comes: the deadline ends the wait. */
        g_assert_cmpint(varlink_client_read(f->client, in_ms(200), &r), ==, -ETIMEDOUT);
        g_assert_cmpuint(monotonic_usec() - start, >=, 200 * USEC_PER_MSEC);

        /* What came before the end is read; then the end, also in the middle of a message. */
        server_send(f, "{}");
        server_write(f, "{\"param", 7);
        close(f->server_fd);
        f->server_fd = -1;
        g_assert_cmpint(varlink_client_read(f->client, in_ms(5000), &r), ==, 1);
        varlink_reply_done(&r);
        g_assert_cmpint(varlink_client_read(f->client, in_ms(5000), &r), ==, -ECONNRESET);
        g_assert_cmpint(varlink_client_read(f->client, VARLINK_CLIENT_NO_WAIT, &r), ==, -ECONNRESET);
}

static void test_call(Fixture *f, gconstpointer data) {
        VarlinkReply r = {};

        /* A reply that continues is no answer to a call without "more". */
        server_send(f, "{\"parameters\":{},\"continues\":true}");
        g_assert_cmpint(varlink_client_call(f->client, "io.example.M", NULL, &r), ==, -EBADMSG);
        server_send(f, "{\"parameters\":{\"ok\":true}}");
        g_assert_cmpint(varlink_client_call(f->client, "io.example.M", NULL, &r), ==, 0);
        g_assert_true(json_object_object_get_ex(r.parameters, "ok", NULL));
        varlink_reply_done(&r);
}

static void test_connect_errors(void) {
        VarlinkClient *c = NULL;
        g_autofree char *dir = g_dir_make_tmp("portpub-vlclient-XXXXXX", NULL);
        g_autofree char *path = g_build_filename(dir, "none", NULL);
        g_autofree char *long_path = g_strnfill(200, 'x');

        g_assert_cmpint(varlink_client_connect(&c, path), ==, -ENOENT);
        g_assert_cmpint(varlink_client_connect(&c, long_path), ==, -ENAMETOOLONG);
        g_assert_null(c);
        g_rmdir(dir);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        /* The writer of a message too long writes on after the client hung up. */
        signal(SIGPIPE, SIG_IGN);

#define ADD(name, fn)                                                                              \
        g_test_add("/varlink-client/" name, Fixture, NULL, fixture_setup, fn, fixture_teardown)
        ADD("call-on-the-wire", test_call_on_the_wire);
        ADD("framing", test_framing);
        ADD("bad-messages", test_bad_messages);
        ADD("bound", test_bound);
        ADD("deadline-and-end", test_deadline_and_end);
        ADD("call", test_call);
#undef ADD
        g_test_add_func("/varlink-client/connect-errors", test_connect_errors);
        return g_test_run();
}
