/* Fuzzes the varlink face: the input is the byte stream one client sends to the server
 *
 * A server of src/varlink with the io.portpub.publisher1 face, over a manager that allows
 * everything (the caller is this process's uid, so root in the usual run) and a GuestResolver
 * that answers from the loop, decided by the sandbox id. The input is written to one
 * connection (NUL bytes end messages, as the protocol has it), the writing side is shut down,
 * and the loop runs until the server closes the connection (it does once every reply is out)
 * or nothing moves any more (a Monitor stream never ends by itself). Every reply must be a
 * JSON object with "parameters" (an object) or an "error" naming interface.Error, and the
 * manager's tables must be valid after it. All in a network namespace of the target's own, so
 * the ports the input publishes are really bound. */
#include <errno.h>
#include <ev.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fuzz-util.h"
#include "publisher1.h"
#include "varlink.h"

/* Loop iterations with nothing written, read or pending before the client gives up. */
#define IDLE_ROUNDS_MAX 8
#define ROUNDS_MAX 100000

static struct ev_loop *loop;
static FuzzAuthorizer authorizer;
static FuzzResolver resolver;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The machine registry, as the fuzzer sees it: the id's first byte says. */
static int answer(void *userdata, const char *id, SockaddrUnion *g4, SockaddrUnion *g6) {
        return fuzz_guest_answer((uint8_t) id[0], g4, g6);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        loop = fuzz_setup(&authorizer, &resolver, answer);
        return 0;
}

/* One message the server sent: a reply or an error, nothing else. */
static void check_reply(const char *text, size_t size) {
        json_tokener *tok;
        json_object *o, *v;
        const char *error;

        fuzz_require(strlen(text) == size);
        /* Strict, as varlink-go and the server itself read: valid UTF-8 only. */
        tok = json_tokener_new();
        fuzz_require(tok);
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
        o = json_tokener_parse_ex(tok, text, (int) size);
        json_tokener_free(tok);
        fuzz_require(json_object_is_type(o, json_type_object));
        if (json_object_object_get_ex(o, "error", &v)) {
                fuzz_require(json_object_is_type(v, json_type_string));
                error = json_object_get_string(v);
                /* interface.Name */
                fuzz_require(strchr(error, '.') && error[strlen(error) - 1] != '.');
        } else
                fuzz_require(json_object_object_get_ex(o, "parameters", NULL));
        if (json_object_object_get_ex(o, "parameters", &v))
                fuzz_require(json_object_is_type(v, json_type_object));
        json_object_put(o);
}

/* Reads what the server sent; splits it into messages. Returns false at EOF or reset. */
static bool read_replies(int fd, char **buf, size_t *len, size_t *allocated, bool *progress) {
        for (;;) {
                ssize_t n;

                if (*allocated - *len < 65536) {
                        char *t = realloc(*buf, *allocated + 65536);

                        fuzz_require(t);
                        *buf = t;
                        *allocated += 65536;
                }
                n = recv(fd, *buf + *len, *allocated - *len, MSG_DONTWAIT);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                        return true;
                if (n <= 0)
                        return false;
                *progress = true;
                *len += (size_t) n;
                for (char *nul; (nul = memchr(*buf, 0, *len));) {
                        size_t k = (size_t) (nul - *buf) + 1;

                        check_reply(*buf, k - 1);
                        memmove(*buf, *buf + k, *len - k);
                        *len -= k;
                }
        }
}

static int listener_new(struct sockaddr_un *ret, socklen_t *ret_len) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

        fuzz_require(fd >= 0);
        /* Autobind: a fresh abstract name, nothing in the file system. */
        fuzz_require(bind(fd, (struct sockaddr *) &sa, sizeof(sa_family_t)) == 0);
        fuzz_require(listen(fd, 16) == 0);
        *ret_len = sizeof *ret;
        fuzz_require(getsockname(fd, (struct sockaddr *) ret, ret_len) == 0);
        return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const VarlinkServerInfo info = { "portpub", "fuzz-varlink", "0", "https://" };
        VarlinkServer *server = NULL;
        Publisher1 *face = NULL;
        Manager *m = NULL;
        struct sockaddr_un sa;
        socklen_t salen;
        char *buf = NULL;
        size_t len = 0, allocated = 0, written = 0;
        bool open = true, shut = false;
        unsigned idle = 0;
        int fd, r;

        /* The input's last byte says whether the authorizer answers at once or later. */
        authorizer.pending = size > 0 && (data[size - 1] & 1);
        r = manager_new(&m, loop);
        fuzz_require(r == 0);
        manager_set_authorizer(m, &authorizer.authorizer);
        manager_set_guest_resolver(m, &resolver.resolver);
        r = varlink_server_new(&server, loop, &info);
        fuzz_require(r == 0);
        r = publisher1_new(&face, m, server);
        fuzz_require(r == 0);
        r = varlink_server_listen_fd(server, listener_new(&sa, &salen));
        fuzz_require(r == 0);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        fuzz_require(fd >= 0);
        r = connect(fd, (struct sockaddr *) &sa, salen);
        fuzz_require(r == 0);

        for (unsigned round = 0; open && idle < IDLE_ROUNDS_MAX && round < ROUNDS_MAX; round++) {
                bool progress = false;

                if (written < size) {
                        ssize_t n = send(fd, data + written, size - written,
                                         MSG_DONTWAIT | MSG_NOSIGNAL);

                        if (n > 0) {
                                written += (size_t) n;
                                progress = true;
                        } else if (n < 0 && errno != EAGAIN && errno != EINTR)
                                written = size; /* the server closed: it may, on garbage */
                }
                if (written == size && !shut) {
                        (void) shutdown(fd, SHUT_WR);
                        shut = true;
                }
                ev_run(loop, EVRUN_NOWAIT);
                open = read_replies(fd, &buf, &len, &allocated, &progress);
                if (progress || fuzz_pending(&authorizer, &resolver) > 0)
                        idle = 0;
                else
                        idle++;
                fuzz_check_manager(m);
        }
        fuzz_require(!open || idle >= IDLE_ROUNDS_MAX); /* no endless stream of replies */
        /* What is left in buf is a message the server was cut off in: not checked. */
        close(fd);
        /* The server notices the hang-up and cancels what the connection waits for. */
        for (unsigned round = 0; round < 16 && varlink_server_n_connections(server) > 0; round++)
                ev_run(loop, EVRUN_NOWAIT);
        /* Not asserted: a connection that shut down its writing side while a Monitor was open is
         * noticed by the server's hang-up check within VARLINK_HANGUP_CHECK_USEC (test-varlink's
         * half-close-then-hangup shows it), longer than an input may take;
         * varlink_server_free() cancels it below. */
        fuzz_check_manager(m);

        varlink_server_free(server);
        publisher1_free(face);
        manager_free(m);
        free(buf);
        return 0;
}
