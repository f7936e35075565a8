/* Strings of 1 MiB against the real daemon, over D-Bus and varlink: refused with a named error
 * that quotes a bounded prefix, nothing stored, and the daemon serves the next client
 *
 * The strings: a sandbox id, a guest address, a host address, an option key and an option value
 * (ProxyProtocol), each 1 MiB; the id also as 1 MiB of a two-byte UTF-8 character, which a cut
 * at a byte count would split into a message D-Bus cannot carry. Over varlink the same, and a
 * sandbox id past the server's 16 MiB message limit, which closes that connection only. */
#include <errno.h>
#include <json-c/json.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "testlib.h"

#define MIB (1024 * 1024)
/* An error message quotes at most 128 bytes of a caller's string (QUOTE_MAX): the rest of the
 * message is text of its own. */
#define MESSAGE_MAX 1024
#define TIMEOUT_MS 10000

typedef struct Fixture {
        TestBus *bus;
        TestDaemon *daemon;
        char *state;
        gsize state_size;
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) v = NULL;

        if (getuid() != 0)
                return;
        f->bus = test_bus_new();
        f->daemon = test_daemon_start(f->bus);
        /* One sandbox with one port, so that a change would show in the state file. */
        v = test_call(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "PublishPorts",
                      g_variant_new_parsed("('keep', ['127.0.0.2'], [('tcp', '127.0.0.1', @q 0, "
                                           "@q 9)], @a{sv} {})"),
                      "(oa(ssqqo))", &error);
        g_assert_no_error(error);
        g_assert_true(g_file_get_contents(f->daemon->state_file, &f->state, &f->state_size, &error));
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
        if (!f->bus)
                return;
        g_assert_cmpint(test_daemon_stop(f->daemon), ==, 0);
        test_daemon_free(f->daemon);
        test_bus_free(f->bus);
        g_free(f->state);
}

/* n bytes of unit repeated (unit's length divides n). */
static char *repeat(const char *unit, size_t n) {
        size_t k = strlen(unit);
        char *s = g_malloc(n + 1);

        g_assert_cmpuint(n % k, ==, 0);
        for (size_t i = 0; i < n; i += k)
                memcpy(s + i, unit, k);
        s[n] = 0;
        return s;
}

static void assert_unchanged(Fixture *f, const char *what) {
        g_autoptr(GError) error = NULL;
        g_autofree char *state = NULL;
        gsize size;

        g_assert_cmpuint(test_get_u32(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "NSandboxes"),
                         ==, 1);
        g_assert_cmpuint(test_get_u32(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "NPorts"), ==,
                         1);
        g_assert_true(g_file_get_contents(f->daemon->state_file, &state, &size, &error));
        if (size != f->state_size || memcmp(state, f->state, size) != 0)
                g_error("%s: the state file changed", what);
}

/* InvalidArgs, with a message that quotes a bounded prefix of the string ("..." after it). */
static void expect_bounded_error(Fixture *f, const char *what, const char *method, GVariant *params,
                                 const char *prefix) {
        g_autofree char *message = NULL;

        message = test_call_expect_error(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, method,
                                         params, "org.freedesktop.DBus.Error.InvalidArgs");
        g_test_message("%s: %zu bytes: %.200s", what, strlen(message), message);
        g_assert_cmpuint(strlen(message), <, MESSAGE_MAX);
        g_assert_true(g_utf8_validate(message, -1, NULL));
        if (prefix) {
                g_autofree char *quoted = g_strdup_printf("'%s", prefix);

                g_assert_nonnull(strstr(message, quoted));
                g_assert_nonnull(strstr(message, "...'"));
        }
        assert_unchanged(f, what);
}

static GVariant *publish_args(const char *id, const char *guest, const char *host,
                              const char *option, GVariant *value) {
        GVariantBuilder options;

        g_variant_builder_init(&options, G_VARIANT_TYPE("a{sv}"));
        if (option)
                g_variant_builder_add(&options, "{sv}", option, value);
        return g_variant_new_parsed("(%s, [%s], [('tcp', %s, @q 0, @q 9)], %@a{sv})", id, guest,
                                    host, g_variant_builder_end(&options));
}

static void test_dbus(Fixture *f, gconstpointer data) {
        g_autofree char *big = repeat("x", MIB), *wide = repeat("\xc3\xa9", MIB);
        g_autofree char *prefix = g_strndup(big, 64);
        g_autofree char *wide_prefix = g_strndup(wide, 64);

        if (!f->bus) {
                g_test_skip("needs root: the calls must not be refused for want of authorization");
                return;
        }
        expect_bounded_error(f, "PublishPorts, 1 MiB sandbox id", "PublishPorts",
                             publish_args(big, "127.0.0.2", "127.0.0.1", NULL, NULL), prefix);
        expect_bounded_error(f, "PublishPorts, 1 MiB of U+00E9 as sandbox id", "PublishPorts",
                             publish_args(wide, "127.0.0.2", "127.0.0.1", NULL, NULL), wide_prefix);
        expect_bounded_error(f, "RemoveSandbox, 1 MiB sandbox id", "RemoveSandbox",
                             g_variant_new("(s)", big), prefix);
        expect_bounded_error(f, "GetSandbox, 1 MiB sandbox id", "GetSandbox",
                             g_variant_new("(s)", big), prefix);
        expect_bounded_error(f, "UnpublishPorts, 1 MiB sandbox id", "UnpublishPorts",
                             g_variant_new_parsed("(%s, [('tcp', '127.0.0.1', @q 1)])", big), prefix);
        expect_bounded_error(f, "SetGuestAddresses, 1 MiB sandbox id", "SetGuestAddresses",
                             g_variant_new_parsed("(%s, ['127.0.0.2'])", big), prefix);
        expect_bounded_error(f, "SetGuestAddresses, 1 MiB guest address", "SetGuestAddresses",
                             g_variant_new_parsed("('keep', [%s])", big), prefix);
        expect_bounded_error(f, "PublishPorts, 1 MiB guest address", "PublishPorts",
                             publish_args("new", big, "127.0.0.1", NULL, NULL), prefix);
        expect_bounded_error(f, "PublishPorts, a third guest address of 1 MiB", "PublishPorts",
                             g_variant_new_parsed("('new', ['127.0.0.2', '::1', %s], "
                                                  "@a(ssqq) [], @a{sv} {})",
                                                  big),
                             prefix);
        expect_bounded_error(f, "PublishPorts, 1 MiB host address", "PublishPorts",
                             publish_args("new", "127.0.0.2", big, NULL, NULL), prefix);
        expect_bounded_error(f, "PublishPorts, 1 MiB option key", "PublishPorts",
                             publish_args("new", "127.0.0.2", "127.0.0.1", big,
                                          g_variant_new_boolean(TRUE)),
                             prefix);
        expect_bounded_error(f, "PublishPorts, 1 MiB ProxyProtocol", "PublishPorts",
                             publish_args("new", "127.0.0.2", "127.0.0.1", "ProxyProtocol",
                                          g_variant_new_string(big)),
                             prefix);
        /* And the daemon still serves. */
        g_assert_cmpuint(test_get_u32(f->bus, TEST_MANAGER_PATH, TEST_MANAGER_IFACE, "NPorts"), ==,
                         1);
}

/* ---- varlink --------------------------------------------------------------------------------- */

static int vl_connect(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        g_assert_cmpint(fd, >=, 0);
        g_strlcpy(sa.sun_path, path, sizeof sa.sun_path);
        g_assert_cmpint(connect(fd, (struct sockaddr *) &sa, sizeof sa), ==, 0);
        return fd;
}

/* Sends the message and its NUL; FALSE when the server closed the connection before it took it
 * all (it may, past its message limit). */
static gboolean vl_send(int fd, const char *text) {
        size_t len = strlen(text) + 1, done = 0;

        while (done < len) {
                struct pollfd p = { .fd = fd, .events = POLLOUT };
                ssize_t n;

                g_assert_cmpint(poll(&p, 1, TIMEOUT_MS), ==, 1);
                n = send(fd, text + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0 && (errno == EAGAIN || errno == EINTR))
                        continue;
                if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
                        return FALSE;
                g_assert_cmpint(n, >, 0);
                done += (size_t) n;
        }
        return TRUE;
}

/* One reply, or NULL when the connection closed first. */
static json_object *vl_recv(int fd) {
        g_autoptr(GString) buf = g_string_new(NULL);

        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                char c[4096];
                ssize_t n;
                const char *nul;

                g_assert_cmpint(poll(&p, 1, TIMEOUT_MS), ==, 1);
                n = recv(fd, c, sizeof c, MSG_DONTWAIT);
                if (n < 0 && (errno == EAGAIN || errno == EINTR))
                        continue;
                if (n <= 0)
                        return NULL;
                g_string_append_len(buf, c, n);
                nul = memchr(buf->str, 0, buf->len);
                if (nul) {
                        /* One call at a time: nothing follows the reply. */
                        g_assert_true(nul == buf->str + buf->len - 1);
                        return json_tokener_parse(buf->str);
                }
                g_assert_cmpuint(buf->len, <, 1024 * 1024);
        }
}

static char *vl_call_text(const char *method, json_object *params) {
        g_autofree char *name = g_strconcat("io.portpub.publisher1.", method, NULL);
        json_object *o = json_object_new_object();
        char *text;

        json_object_object_add(o, "method", json_object_new_string(name));
        json_object_object_add(o, "parameters", params);
        text = g_strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
        json_object_put(o);
        return text;
}

static json_object *publish_params(const char *id, const char *guest, const char *host,
                                   const char *option, json_object *value) {
        json_object *p = json_object_new_object(), *port = json_object_new_object();
        json_object *ports = json_object_new_array(), *guests = json_object_new_array();
        json_object *options = json_object_new_object();

        json_object_array_add(guests, json_object_new_string(guest));
        json_object_object_add(port, "protocol", json_object_new_string("tcp"));
        json_object_object_add(port, "hostAddress", json_object_new_string(host));
        json_object_object_add(port, "hostPort", json_object_new_int(0));
        json_object_object_add(port, "guestPort", json_object_new_int(9));
        json_object_array_add(ports, port);
        if (option)
                json_object_object_add(options, option, value);
        json_object_object_add(p, "sandbox", json_object_new_string(id));
        json_object_object_add(p, "guestAddresses", guests);
        json_object_object_add(p, "ports", ports);
        json_object_object_add(p, "options", options);
        return p;
}

/* The call is refused with InvalidParameter naming parameter, on a connection of its own. */
static void vl_expect_invalid(Fixture *f, const char *what, const char *method, json_object *params,
                              const char *parameter) {
        g_autofree char *text = vl_call_text(method, params);
        json_object *reply, *v;
        const char *got;
        int fd = vl_connect(f->daemon->varlink);

        g_test_message("%s: %zu bytes", what, strlen(text));
        g_assert_true(vl_send(fd, text));
        reply = vl_recv(fd);
        g_assert_nonnull(reply);
        g_assert_true(json_object_object_get_ex(reply, "error", &v));
        g_assert_cmpstr(json_object_get_string(v), ==, "org.varlink.service.InvalidParameter");
        g_assert_true(json_object_object_get_ex(reply, "parameters", &v));
        g_assert_true(json_object_object_get_ex(v, "parameter", &v));
        got = json_object_get_string(v);
        /* The path names the field: a bounded string, whatever the key. */
        g_assert_cmpuint(strlen(got), <, 256);
        g_assert_true(g_utf8_validate(got, -1, NULL));
        if (g_strcmp0(got, parameter) != 0 && !g_str_has_prefix(got, parameter))
                g_error("%s: InvalidParameter '%s', expected '%s'", what, got, parameter);
        json_object_put(reply);
        close(fd);
        assert_unchanged(f, what);
}

static void vl_expect_serving(Fixture *f) {
        g_autofree char *text = vl_call_text("GetStatus", json_object_new_object());
        json_object *reply, *v;
        int fd = vl_connect(f->daemon->varlink);

        g_assert_true(vl_send(fd, text));
        reply = vl_recv(fd);
        g_assert_nonnull(reply);
        g_assert_true(json_object_object_get_ex(reply, "parameters", &v));
        g_assert_true(json_object_object_get_ex(v, "ports", &v));
        g_assert_cmpint(json_object_get_int(v), ==, 1);
        json_object_put(reply);
        close(fd);
}

static void test_varlink(Fixture *f, gconstpointer data) {
        g_autofree char *big = repeat("x", MIB), *wide = repeat("\xc3\xa9", MIB);
        g_autofree char *huge = NULL, *text = NULL;
        json_object *p;
        int fd;

        if (!f->bus) {
                g_test_skip("needs root: the calls must not be refused for want of authorization");
                return;
        }
        vl_expect_invalid(f, "PublishPorts, 1 MiB sandbox id", "PublishPorts",
                          publish_params(big, "127.0.0.2", "127.0.0.1", NULL, NULL), "sandbox");
        p = json_object_new_object();
        json_object_object_add(p, "sandbox", json_object_new_string(big));
        vl_expect_invalid(f, "RemoveSandbox, 1 MiB sandbox id", "RemoveSandbox", p, "sandbox");
        vl_expect_invalid(f, "PublishPorts, 1 MiB guest address", "PublishPorts",
                          publish_params("new", big, "127.0.0.1", NULL, NULL), "guestAddresses[0]");
        vl_expect_invalid(f, "PublishPorts, 1 MiB host address", "PublishPorts",
                          publish_params("new", "127.0.0.2", big, NULL, NULL), "ports[0]");
        vl_expect_invalid(f, "PublishPorts, 1 MiB option key", "PublishPorts",
                          publish_params("new", "127.0.0.2", "127.0.0.1", big,
                                         json_object_new_boolean(TRUE)),
                          "options.");
        vl_expect_invalid(f, "PublishPorts, 1 MiB of U+00E9 as option key", "PublishPorts",
                          publish_params("new", "127.0.0.2", "127.0.0.1", wide,
                                         json_object_new_boolean(TRUE)),
                          "options.");
        vl_expect_invalid(f, "PublishPorts, 1 MiB proxyProtocol", "PublishPorts",
                          publish_params("new", "127.0.0.2", "127.0.0.1", "proxyProtocol",
                                         json_object_new_string(big)),
                          "options.proxyProtocol");

        /* Past the server's message limit (16 MiB): that connection is closed, or answered with
         * an error, and the daemon serves the next client. */
        huge = repeat("x", 17 * MIB);
        p = json_object_new_object();
        json_object_object_add(p, "sandbox", json_object_new_string(huge));
        text = vl_call_text("RemoveSandbox", p);
        fd = vl_connect(f->daemon->varlink);
        if (vl_send(fd, text)) {
                json_object *reply = vl_recv(fd), *v;

                if (reply) {
                        g_assert_true(json_object_object_get_ex(reply, "error", &v));
                        json_object_put(reply);
                }
        }
        close(fd);
        vl_expect_serving(f);
        assert_unchanged(f, "RemoveSandbox, 17 MiB sandbox id");
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add("/long-strings/dbus", Fixture, NULL, fixture_setup, test_dbus, fixture_teardown);
        g_test_add("/long-strings/varlink", Fixture, NULL, fixture_setup, test_varlink,
                   fixture_teardown);
        return g_test_run();
}
