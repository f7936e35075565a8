/* varlink server: listening, framing, in-order dispatch, org.varlink.service, limits */

/*
 * Theory of operation
 * ===================
 *
 * Listening: every listener is an ev_io on a non-blocking AF_UNIX stream socket. A wakeup
 * accepts up to VARLINK_ACCEPT_BATCH connections. A connection over a limit (all connections,
 * or those of its uid) is accepted and closed at once, so it learns right away instead of
 * waiting in the backlog. When accept4() runs out of fds or memory the listeners stop and a
 * timer restarts them after VARLINK_RETRY_USEC: never spinning on a readable listener.
 *
 * A connection reads into its input buffer and splits it on NUL bytes. One message is at most
 * VARLINK_MESSAGE_MAX bytes with its NUL: the buffer never holds more of one message than that,
 * and once it holds that much without a NUL the connection is closed. The buffer is freed
 * whenever it runs empty, so an idle connection holds none.
 *
 * Each message becomes a VarlinkCall on the connection's list, in the order the calls came,
 * before anything else is decided, so that even the errors the server answers itself keep the
 * order. The list is the ordering queue and the set of calls to cancel:
 *
 *   front        the first non-oneway call that is not done. Its replies go straight to the
 *                output buffer; a "more" call stays in front until its final reply.
 *   held         a later call's replies wait in the call itself (call->held) until every
 *                non-oneway call before it is done, then move to the output buffer.
 *   oneway       a oneway call never writes anything and holds back nothing; it stays on the
 *                list only until its handler answered (or it is cancelled).
 *
 * Backpressure: while a connection has VARLINK_PENDING_CALLS_MAX calls on its list, or more
 * than VARLINK_OUTPUT_PAUSE bytes waiting to be written, it dispatches nothing and reads
 * nothing: the kernel's socket buffer pushes back on the client. (Meanwhile a client that
 * hangs up is noticed at the next reply or write, since nothing is read.) Replies that would
 * make the queued bytes (output buffer plus every held reply) exceed VARLINK_OUTPUT_MAX close
 * the connection instead: that client does not read.
 *
 * Output is written from the deferred pass (an ev_prepare, run before the loop sleeps), so the
 * replies of a batch of pipelined calls leave in one send(); EV_WRITE is watched only while
 * the output buffer holds bytes.
 *
 * Closing: connection_close() stops the connection's watcher and moves it to the closing list;
 * from then on replies to its calls return -ESTALE. The deferred pass reaps it: cancels its
 * unanswered calls in order (or detaches those without a cancel callback: their handlers still
 * owe an answer and own them until then, see varlink.h), calls the disconnected hook, closes
 * the socket and frees it. Nothing is freed inside its own callback chain, and no handler or
 * cancel callback ever runs inside a reply function.
 *
 * EOF: a client that closed its socket (POLLHUP) is closed at once. One that only shut down
 * its writing side still gets the replies to the calls it sent; the connection closes when
 * they are out. Such a half-closed connection is watched for nothing (its socket reads EOF for
 * ever), so a client that then closes it entirely while a call is still open (a "more" call
 * such as a Monitor, which may say nothing for hours) would go unnoticed until the next reply,
 * keeping its calls and whatever the face ties to the connection: a timer polls the
 * half-closed connections for a hang-up every VARLINK_HANGUP_CHECK_USEC while there are any.
 *
 * Fairness: one pass dispatches at most VARLINK_PENDING_CALLS_MAX messages of a connection;
 * what is left waits for the next loop iteration (an ev_idle keeps the loop from sleeping
 * meanwhile), so a client pipelining megabytes of calls does not stall the relays.
 *
 * Garbage: a message that is not JSON, nests deeper than VARLINK_JSON_DEPTH or is no object
 * closes the connection (as varlink-go does: no call to answer can be made of it); the replies
 * to the calls before it go out as far as the socket takes them at once. A well-formed object
 * that is no valid call is answered, in its turn, with org.varlink.service.InvalidParameter
 * naming the field: "method" (missing, no string, not "interface.Method"), "parameters" (no
 * object; null counts as absent, as varlink-go sends it), "oneway", "more", "upgrade" (no
 * boolean). "upgrade": true is refused with InvalidParameter {"parameter": "upgrade"} once the
 * method is known to exist: this server speaks nothing but varlink. Unknown fields of a call are
 * ignored, for calls of newer clients. MethodNotFound and MethodNotImplemented name the method
 * in full, "interface.Method".
 */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Running out of memory while counting a uid's connections must refuse that connection, not
 * exit(). */
#define HASH_NONFATAL_OOM 1
#include <uthash.h>
#include <utlist.h>

#include "log.h"
#include "macro.h"
#include "varlink.h"

#define VARLINK_ACCEPT_BATCH 64U /* accept4() calls per wakeup of one listener */
#define VARLINK_READ_ROUNDS 16U /* recv() calls per wakeup of one connection */
#define VARLINK_BUFFER_MIN 4096U /* first allocation of a buffer; they grow by doubling */
/* Output bytes past which a connection dispatches no new calls until the client reads. */
#define VARLINK_OUTPUT_PAUSE (1024U * 1024)
#define VARLINK_JSON_DEPTH 64 /* levels of nesting in a message, the message itself included */
/* Values in one message. json-c allocates an object of about a hundred bytes for each, so a
 * 16 MiB message of "[0,0,0,..." would cost the daemon close to a gigabyte while it is parsed;
 * counted before parsing, this bounds that to some tens of MiB. The largest call of the
 * contract (1024 ports of 4 fields) has about 6000. */
#define VARLINK_JSON_VALUES_MAX (256U * 1024)
#define VARLINK_RETRY_USEC (100 * USEC_PER_MSEC) /* accepting again after running out of fds */
#define VARLINK_HANGUP_CHECK_USEC USEC_PER_SEC /* polling half-closed connections for a hang-up */
#define VARLINK_SERVICE "org.varlink.service"

/* The standard text, byte for byte as varlink-go serves it. */
static const char service_description[] =
        "# The Varlink Service Interface is provided by every varlink service. It\n"
        "# describes the service and the interfaces it implements.\n"
        "interface org.varlink.service\n"
        "\n"
        "# Get a list of all the interfaces a service provides and information\n"
        "# about the implementation.\n"
        "method GetInfo() -> (\n"
        "  vendor: string,\n"
        "  product: string,\n"
        "  version: string,\n"
        "  url: string,\n"
        "  interfaces: []string\n"
        ")\n"
        "\n"
        "# Get the description of an interface that is implemented by this service.\n"
        "method GetInterfaceDescription(interface: string) -> (description: string)\n"
        "\n"
        "# The requested interface was not found.\n"
        "error InterfaceNotFound (interface: string)\n"
        "\n"
        "# The requested method was not found\n"
        "error MethodNotFound (method: string)\n"
        "\n"
        "# The interface defines the requested method, but the service does not\n"
        "# implement it.\n"
        "error MethodNotImplemented (method: string)\n"
        "\n"
        "# One of the passed parameters is invalid.\n"
        "error InvalidParameter (parameter: string)";

enum {
        /* Internal: the call asked for a protocol upgrade. */
        VARLINK_CALL_UPGRADE = 1 << 8,
};

typedef struct Buffer {
        char *data;
        size_t size, start, end; /* the bytes held are data[start, end) */
} Buffer;

typedef struct Interface {
        char *name;
        char *description;
        VarlinkMethod *methods; /* names copied */
        size_t n_methods;
        char **declared; /* the methods the description declares */
        size_t n_declared;
        void *userdata;
} Interface;

typedef struct Listener Listener;
struct Listener {
        ev_io io;
        VarlinkServer *server;
        Listener *next;
        char *path; /* the socket file we made, or NULL */
        dev_t dev;
        ino_t ino;
};

typedef struct UidCount {
        uid_t uid;
        unsigned n;
        UT_hash_handle hh;
} UidCount;

struct VarlinkCall {
        unsigned n_ref;
        VarlinkConnection *connection; /* NULL once off the connection's list */
        VarlinkCall *prev, *next; /* the connection's calls, in the order they came */
        char *method;
        unsigned flags;
        bool answered; /* the final reply was given, or the call was cancelled */
        void (*cancel)(VarlinkCall *call, void *userdata);
        void *cancel_userdata;
        Buffer held; /* replies waiting for the calls before this one */
};

struct VarlinkConnection {
        VarlinkServer *server;
        VarlinkConnection *prev, *next; /* on server->connections, or server->closing */
        VarlinkConnection *dirty_prev, *dirty_next; /* on server->dirty */
        unsigned dirty_pass; /* the deferred pass during which it was marked */
        ev_io io;
        uid_t uid;
        pid_t pid;
        void *userdata;
        UidCount *uid_count;

        Buffer in;
        size_t in_scanned; /* bytes after in.start known to hold no NUL */
        Buffer out;
        size_t queued; /* in out, plus every call's held replies */

        VarlinkCall *calls;
        unsigned n_calls;

        bool announced : 1; /* the connected hook took it: the disconnected hook follows */
        bool dirty : 1;
        bool closing : 1;
        bool read_eof : 1;
};

struct VarlinkServer {
        struct ev_loop *loop;
        char *vendor, *product, *version, *url;
        Interface *interfaces;
        size_t n_interfaces;
        VarlinkConnectionHooks hooks;
        void *hooks_userdata;

        Listener *listeners;
        ev_timer accept_retry;
        bool accept_warned;

        VarlinkConnection *connections, *closing, *dirty;
        unsigned pass; /* of the deferred pass, counting */
        unsigned n_connections;
        unsigned connections_max, per_uid_max;
        UidCount *uids;
        ev_prepare deferred;
        ev_idle kick; /* active while work is left for the next pass */
        ev_timer hangup_check; /* active while a connection is half-closed */

        struct json_tokener *tokener;
};

static void json_object_putp(json_object **o) {
        if (*o)
                json_object_put(*o);
}

/* ---- buffers --------------------------------------------------------------------------------- */

static size_t buffer_len(const Buffer *b) {
        return b->end - b->start;
}

static void buffer_free(Buffer *b) {
        b->data = mfree(b->data);
        b->size = b->start = b->end = 0;
}

/* Makes room for n more bytes at the end without growing past max, moving the bytes held to
 * the front first. */
static int buffer_reserve(Buffer *b, size_t n, size_t max) {
        size_t len = buffer_len(b), size;
        char *p;

        if (b->size - b->end >= n)
                return 0;
        if (b->start > 0) {
                memmove(b->data, b->data + b->start, len);
                b->start = 0;
                b->end = len;
                if (b->size - b->end >= n)
                        return 0;
        }
        if (n > max - len)
                return -ENOBUFS;

        size = MAX(b->size, (size_t) VARLINK_BUFFER_MIN);
        while (size - len < n)
                size *= 2;
        size = MIN(size, max);
        p = realloc(b->data, size);
        if (!p)
                return -ENOMEM;
        b->data = p;
        b->size = size;
        return 0;
}

static int buffer_append(Buffer *b, const void *p, size_t n) {
        int r;

        /* The callers bound what is queued (VARLINK_OUTPUT_MAX); this only guards the sums. */
        r = buffer_reserve(b, n, SIZE_MAX / 2);
        if (r < 0)
                return r;
        memcpy(b->data + b->end, p, n);
        b->end += n;
        return 0;
}

/* ---- names and interface files ----------------------------------------------------------- */

/* The varlink grammar: reverse-domain, lower case, e.g. "io.portpub.publisher1". */
static bool interface_name_is_valid(const char *s, size_t len) {
        size_t segments = 0, seg_len = 0;

        for (size_t i = 0; i <= len; i++) {
                char ch = i < len ? s[i] : '.';

                if (ch == '.') {
                        /* a segment begins with a letter (the first) or a letter or digit, and
                         * neither begins nor ends with a dash */
                        if (seg_len == 0 || s[i - 1] == '-')
                                return false;
                        segments++;
                        seg_len = 0;
                        continue;
                }
                if (seg_len == 0 && (ch == '-' || (segments == 0 && ch >= '0' && ch <= '9')))
                        return false;
                if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-'))
                        return false;
                seg_len++;
        }
        return segments >= 2;
}

/* A method, error or type name: "PublishPorts". */
static bool member_name_is_valid(const char *s, size_t len) {
        if (len == 0 || !(s[0] >= 'A' && s[0] <= 'Z'))
                return false;
        for (size_t i = 1; i < len; i++)
                if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
                      (s[i] >= '0' && s[i] <= '9')))
                        return false;
        return true;
}

/* "interface.Member", as a method name or an error name. Interfaces are looked up by the exact
 * string, so a client's capitals (systemd's io.systemd.*) only get InterfaceNotFound. */
static bool qualified_name_split(const char *s, size_t *ret_dot) {
        const char *dot = strrchr(s, '.');
        size_t n;

        if (!dot || dot == s)
                return false;
        n = (size_t) (dot - s);
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
                      (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '.'))
                        return false;
        if (s[0] == '.' || strstr(s, "..") || !member_name_is_valid(dot + 1, strlen(dot + 1)))
                return false;
        *ret_dot = n;
        return true;
}

static void strv_free(char **l, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(l[i]);
        free(l);
}

/* Walks the top level of an interface file: the name after "interface" and the names after
 * "method". Comments run from '#' to the end of the line; parentheses nest and may span lines,
 * and the field names inside them ("method: string") are no keywords. */
static int description_parse(const char *text, char **ret_name, char ***ret_methods, size_t *ret_n) {
        _cleanup_free_ char *name = NULL;
        char **methods = NULL;
        size_t n = 0;
        unsigned depth = 0;
        enum { WANT_KEYWORD, WANT_INTERFACE, WANT_METHOD, WANT_OTHER } want = WANT_KEYWORD;
        int r = -EINVAL;

        for (const char *p = text; *p;) {
                if (*p == '#') {
                        p += strcspn(p, "\n");
                        continue;
                }
                if (*p == '(') {
                        depth++;
                        p++;
                        continue;
                }
                if (*p == ')') {
                        if (depth == 0)
                                goto fail;
                        depth--;
                        p++;
                        continue;
                }
                if (strchr(" \t\r\n,:?[]-><", *p)) {
                        p++;
                        continue;
                }

                size_t len = strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                       "0123456789_.-");
                if (len == 0)
                        goto fail; /* a character no interface file has */
                if (depth == 0) {
                        if (want == WANT_INTERFACE) {
                                if (name || !interface_name_is_valid(p, len))
                                        goto fail;
                                name = strndup(p, len);
                                if (!name) {
                                        r = -ENOMEM;
                                        goto fail;
                                }
                                want = WANT_KEYWORD;
                        } else if (want == WANT_METHOD) {
                                char **l;

                                if (!member_name_is_valid(p, len))
                                        goto fail;
                                l = reallocarray(methods, n + 1, sizeof(char *));
                                if (!l) {
                                        r = -ENOMEM;
                                        goto fail;
                                }
                                methods = l;
                                methods[n] = strndup(p, len);
                                if (!methods[n]) {
                                        r = -ENOMEM;
                                        goto fail;
                                }
                                n++;
                                want = WANT_KEYWORD;
                        } else if (want == WANT_OTHER)
                                want = WANT_KEYWORD;
                        else if (len == 9 && strncmp(p, "interface", len) == 0)
                                want = WANT_INTERFACE;
                        else if (len == 6 && strncmp(p, "method", len) == 0)
                                want = WANT_METHOD;
                        else if ((len == 4 && strncmp(p, "type", len) == 0) ||
                                 (len == 5 && strncmp(p, "error", len) == 0))
                                want = WANT_OTHER;
                        /* else: a type in a signature's "-> (...)"; nothing to learn */
                }
                p += len;
        }
        if (depth != 0 || !name || want != WANT_KEYWORD)
                goto fail;

        *ret_name = TAKE_PTR(name);
        *ret_methods = methods;
        *ret_n = n;
        return 0;

fail:
        strv_free(methods, n);
        return r;
}

static void interface_done(Interface *i) {
        free(i->name);
        free(i->description);
        for (size_t k = 0; k < i->n_methods; k++)
                free((char *) i->methods[k].name);
        free(i->methods);
        strv_free(i->declared, i->n_declared);
}

static const Interface *server_find_interface(const VarlinkServer *s, const char *name, size_t len) {
        for (size_t i = 0; i < s->n_interfaces; i++)
                if (strlen(s->interfaces[i].name) == len &&
                    memcmp(s->interfaces[i].name, name, len) == 0)
                        return &s->interfaces[i];
        return NULL;
}

/* ---- the server ------------------------------------------------------------------------------ */

static void deferred_cb(struct ev_loop *loop, ev_prepare *w, int revents);
static void kick_cb(struct ev_loop *loop, ev_idle *w, int revents);
static void accept_retry_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void hangup_check_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void connection_close(VarlinkConnection *c);
static void connection_reap(VarlinkConnection *c);

int varlink_server_new(VarlinkServer **ret, struct ev_loop *loop, const VarlinkServerInfo *info) {
        VarlinkServer *s;

        if (!ret || !loop || !info)
                return -EINVAL;

        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->loop = loop;
        s->connections_max = VARLINK_CONNECTIONS_MAX;
        s->per_uid_max = VARLINK_CONNECTIONS_PER_UID_MAX;
        ev_prepare_init(&s->deferred, deferred_cb);
        ev_idle_init(&s->kick, kick_cb);
        ev_timer_init(&s->accept_retry, accept_retry_cb, (double) VARLINK_RETRY_USEC / USEC_PER_SEC,
                      0.);
        ev_timer_init(&s->hangup_check, hangup_check_cb, 0.,
                      (double) VARLINK_HANGUP_CHECK_USEC / USEC_PER_SEC);

        s->vendor = strdup(info->vendor ?: "");
        s->product = strdup(info->product ?: "");
        s->version = strdup(info->version ?: "");
        s->url = strdup(info->url ?: "");
        /* json-c's depth counts one more than the levels it lets through. */
        s->tokener = json_tokener_new_ex(VARLINK_JSON_DEPTH + 1);
        if (!s->vendor || !s->product || !s->version || !s->url || !s->tokener) {
                varlink_server_free(s);
                return -ENOMEM;
        }
        /* Strict: no trailing garbage after the object; well-formed UTF-8 only. */
        json_tokener_set_flags(s->tokener, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);

        *ret = s;
        return 0;
}

static void listener_free(VarlinkServer *s, Listener *l) {
        struct stat st;

        ev_io_stop(s->loop, &l->io);
        /* Only the file we made: a daemon started after us may have replaced it. */
        if (l->path && lstat(l->path, &st) >= 0 && st.st_dev == l->dev && st.st_ino == l->ino)
                (void) unlink(l->path);
        safe_close(l->io.fd);
        free(l->path);
        free(l);
}

static void connection_write(VarlinkConnection *c);

VarlinkServer *varlink_server_free(VarlinkServer *s) {
        if (!s)
                return NULL;

        while (s->listeners) {
                Listener *l = s->listeners;

                s->listeners = l->next;
                listener_free(s, l);
        }
        ev_timer_stop(s->loop, &s->accept_retry);
        ev_timer_stop(s->loop, &s->hangup_check);

        /* What was queued last (a Monitor's final events at shutdown) goes out as far as the
         * sockets take it without waiting. */
        for (VarlinkConnection *c = s->connections, *next; c; c = next) {
                next = c->next; /* a failed write moves c to the closing list */
                connection_write(c);
        }
        while (s->connections)
                connection_close(s->connections);
        /* Cancel callbacks may close other connections: they join the list. */
        while (s->closing)
                connection_reap(s->closing);
        ev_prepare_stop(s->loop, &s->deferred);
        ev_idle_stop(s->loop, &s->kick);

        for (size_t i = 0; i < s->n_interfaces; i++)
                interface_done(&s->interfaces[i]);
        free(s->interfaces);
        if (s->tokener)
                json_tokener_free(s->tokener);
        free(s->vendor);
        free(s->product);
        free(s->version);
        free(s->url);
        free(s);
        return NULL;
}

int varlink_server_add_interface(VarlinkServer *s, const VarlinkInterface *iface, void *userdata) {
        _cleanup_free_ char *declared_name = NULL;
        char **declared = NULL;
        size_t n_declared = 0;
        Interface i = { .userdata = userdata }, *l;
        int r;

        if (!s || !iface || !iface->name || !iface->description ||
            (iface->n_methods > 0 && !iface->methods))
                return -EINVAL;
        if (!interface_name_is_valid(iface->name, strlen(iface->name)))
                return -EINVAL;
        if (strcmp(iface->name, VARLINK_SERVICE) == 0 ||
            server_find_interface(s, iface->name, strlen(iface->name)))
                return -EEXIST;

        r = description_parse(iface->description, &declared_name, &declared, &n_declared);
        if (r < 0)
                return r;
        i.declared = declared;
        i.n_declared = n_declared;
        if (strcmp(declared_name, iface->name) != 0) {
                r = -EINVAL;
                goto fail;
        }

        i.methods = calloc(MAX(iface->n_methods, (size_t) 1), sizeof(VarlinkMethod));
        if (!i.methods) {
                r = -ENOMEM;
                goto fail;
        }
        for (size_t k = 0; k < iface->n_methods; k++) {
                const VarlinkMethod *m = &iface->methods[k];
                bool found = false;

                if (!m->name || !m->handler) {
                        r = -EINVAL;
                        goto fail;
                }
                for (size_t d = 0; d < n_declared && !found; d++)
                        found = strcmp(declared[d], m->name) == 0;
                for (size_t j = 0; j < k && found; j++)
                        found = strcmp(i.methods[j].name, m->name) != 0;
                if (!found) /* undeclared or twice */
                        goto invalid;
                i.methods[k].name = strdup(m->name);
                if (!i.methods[k].name) {
                        r = -ENOMEM;
                        goto fail;
                }
                i.methods[k].handler = m->handler;
                i.n_methods = k + 1;
        }

        i.name = strdup(iface->name);
        i.description = strdup(iface->description);
        if (!i.name || !i.description) {
                r = -ENOMEM;
                goto fail;
        }

        l = reallocarray(s->interfaces, s->n_interfaces + 1, sizeof(Interface));
        if (!l) {
                r = -ENOMEM;
                goto fail;
        }
        s->interfaces = l;
        s->interfaces[s->n_interfaces++] = i;
        return 0;

invalid:
        r = -EINVAL;
fail:
        interface_done(&i);
        return r;
}

void varlink_server_set_hooks(VarlinkServer *s, const VarlinkConnectionHooks *hooks, void *userdata) {
        if (!s)
                return;
        s->hooks = hooks ? *hooks : (VarlinkConnectionHooks){ 0 };
        s->hooks_userdata = userdata;
}

unsigned varlink_server_n_connections(const VarlinkServer *s) {
        return s ? s->n_connections : 0;
}

void varlink_server_set_connection_limits(VarlinkServer *s, unsigned max, unsigned per_uid_max) {
        if (!s)
                return;
        if (max > 0)
                s->connections_max = MIN(max, VARLINK_CONNECTIONS_MAX);
        if (per_uid_max > 0)
                s->per_uid_max = MIN(per_uid_max, VARLINK_CONNECTIONS_PER_UID_MAX);
}

/* ---- listening and accepting ----------------------------------------------------------------- */

static void connection_new(VarlinkServer *s, int fd);

/* Errors that say "this process is short of something", not "this connection is broken". */
static bool errno_is_shortage(int e) {
        return e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM;
}

static void server_pause_accept(VarlinkServer *s, int error) {
        if (!s->accept_warned) {
                log_full_errno(errno_is_shortage(error) ? LOG_WARNING : LOG_ERR, error,
                               "Cannot accept varlink connections, retrying shortly: %m");
                s->accept_warned = true;
        }
        for (Listener *l = s->listeners; l; l = l->next)
                ev_io_stop(s->loop, &l->io);
        ev_timer_stop(s->loop, &s->accept_retry);
        ev_timer_set(&s->accept_retry, (double) VARLINK_RETRY_USEC / USEC_PER_SEC, 0.);
        ev_timer_start(s->loop, &s->accept_retry);
}

static void accept_retry_cb(struct ev_loop *loop, ev_timer *w, int revents) {
        VarlinkServer *s = container_of(w, VarlinkServer, accept_retry);

        for (Listener *l = s->listeners; l; l = l->next)
                ev_io_start(s->loop, &l->io);
}

static void listener_cb(struct ev_loop *loop, ev_io *w, int revents) {
        Listener *l = container_of(w, Listener, io);
        VarlinkServer *s = l->server;

        for (unsigned i = 0; i < VARLINK_ACCEPT_BATCH; i++) {
                int fd = accept4(w->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

                if (fd < 0) {
                        if (errno == EAGAIN)
                                return;
                        if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                                continue;
                        /* Short of fds or memory, or a listener gone bad: a level-triggered
                         * watcher would report it again at once. */
                        server_pause_accept(s, errno);
                        return;
                }
                s->accept_warned = false;
                connection_new(s, fd);
        }
}

static int server_add_listener(VarlinkServer *s, int fd, const char *path, const struct stat *st) {
        Listener *l;

        l = calloc(1, sizeof *l);
        if (!l)
                return -ENOMEM;
        if (path) {
                l->path = strdup(path);
                if (!l->path) {
                        free(l);
                        return -ENOMEM;
                }
                l->dev = st->st_dev;
                l->ino = st->st_ino;
        }
        l->server = s;
        ev_io_init(&l->io, listener_cb, fd, EV_READ);
        l->next = s->listeners;
        s->listeners = l;
        if (!ev_is_active(&s->accept_retry))
                ev_io_start(s->loop, &l->io);
        return 0;
}

int varlink_server_listen_fd(VarlinkServer *s, int fd_) {
        _cleanup_close_ int fd = fd_;
        int v = 0, flags, r;
        socklen_t len = sizeof v;

        if (!s || fd < 0)
                return -EINVAL;

        if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &len) < 0)
                return -errno;
        if (v != AF_UNIX)
                return -EAFNOSUPPORT; /* SO_PEERCRED is what the callers rely on */
        len = sizeof v;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) < 0)
                return -errno;
        if (v != SOCK_STREAM)
                return -ESOCKTNOSUPPORT;
        len = sizeof v;
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) < 0)
                return -errno;
        if (!v)
                return -EINVAL;

        /* A socket from systemd is blocking and inherited by children; accept4() would then
         * block the loop when a client gives up between the wakeup and the accept. */
        flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                return -errno;
        flags = fcntl(fd, F_GETFD);
        if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0)
                return -errno;

        r = server_add_listener(s, fd, NULL, NULL);
        if (r < 0)
                return r;
        TAKE_FD(fd);
        return 0;
}

/* 1 if nobody accepts on the socket file at path any more, 0 if someone does. */
static int socket_file_is_stale(const struct sockaddr_un *sa, socklen_t salen, const char *path) {
        _cleanup_close_ int probe = -EBADF;
        struct stat st;

        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 1 : -errno; /* gone meanwhile: bind again */
        if (!S_ISSOCK(st.st_mode))
                return -EEXIST; /* not a socket: not ours to remove */

        probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (probe < 0)
                return -errno;
        if (connect(probe, (const struct sockaddr *) sa, salen) >= 0)
                return 0;
        if (errno == ECONNREFUSED || errno == ENOENT)
                return 1;
        if (errno == EAGAIN || errno == EINPROGRESS)
                return 0; /* a full backlog: someone listens, slowly */
        return -errno;
}

int varlink_server_listen_path(VarlinkServer *s, const char *path, mode_t mode) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = -EBADF;
        socklen_t salen;
        struct stat st;
        size_t len;
        int r;

        if (!s || !path)
                return -EINVAL;
        len = strlen(path);
        if (len == 0)
                return -EINVAL;
        if (len >= sizeof sa.sun_path)
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, path, len);
        salen = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + len + 1);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        /* bind() creates the file with the socket's mode minus the umask: never more than mode,
         * even for a moment. The chmod() after it sets mode exactly. */
        if (fchmod(fd, mode) < 0)
                return -errno;

        for (unsigned attempt = 0;; attempt++) {
                if (bind(fd, (const struct sockaddr *) &sa, salen) >= 0)
                        break;
                if (errno != EADDRINUSE || attempt > 0)
                        return -errno;

                /* Between this check and the unlink() another daemon could bind: running two
                 * at once on one path is the administrator's mistake this only narrows. */
                r = socket_file_is_stale(&sa, salen, path);
                if (r < 0)
                        return r;
                if (r == 0)
                        return -EADDRINUSE;
                if (unlink(path) < 0 && errno != ENOENT)
                        return -errno;
                log_debug("Removed the stale socket file %s.", path);
        }

        if (chmod(path, mode) < 0 || lstat(path, &st) < 0 || listen(fd, SOMAXCONN) < 0) {
                r = -errno;
                (void) unlink(path);
                return r;
        }

        r = server_add_listener(s, fd, path, &st);
        if (r < 0) {
                (void) unlink(path);
                return r;
        }
        TAKE_FD(fd);
        return 0;
}

/* ---- connections ----------------------------------------------------------------------------- */

static void connection_io_cb(struct ev_loop *loop, ev_io *w, int revents);

static void server_start_deferred(VarlinkServer *s) {
        ev_prepare_start(s->loop, &s->deferred);
}

/* Something changed that the deferred pass has to act on: output to write, input to
 * dispatch, the connection to finish. */
static void connection_mark_dirty(VarlinkConnection *c) {
        if (c->dirty || c->closing)
                return;
        c->dirty = true;
        c->dirty_pass = c->server->pass;
        DL_APPEND2(c->server->dirty, c, dirty_prev, dirty_next);
        server_start_deferred(c->server);
}

static void connection_unmark_dirty(VarlinkConnection *c) {
        if (!c->dirty)
                return;
        c->dirty = false;
        DL_DELETE2(c->server->dirty, c, dirty_prev, dirty_next);
}

static void connection_account(VarlinkConnection *c, UidCount *u) {
        c->uid_count = u;
        u->n++;
        c->server->n_connections++;
}

static void connection_unaccount(VarlinkConnection *c) {
        VarlinkServer *s = c->server;
        UidCount *u = c->uid_count;

        if (!u)
                return;
        c->uid_count = NULL;
        s->n_connections--;
        if (--u->n == 0) {
                HASH_DEL(s->uids, u);
                free(u);
        }
}

static void connection_new(VarlinkServer *s, int fd_) {
        _cleanup_close_ int fd = fd_;
        struct ucred cred;
        socklen_t len = sizeof cred;
        VarlinkConnection *c;
        UidCount *u;
        int r;

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
                log_debug_errno(errno, "Cannot learn the peer of a varlink connection, closing: %m");
                return;
        }
        /* Per client and possibly many per second: debug level, the client sees the close. */
        if (s->n_connections >= s->connections_max) {
                log_debug("Refusing a varlink connection of uid %u, pid %d: %u connections.",
                          (unsigned) cred.uid, (int) cred.pid, s->n_connections);
                return;
        }
        HASH_FIND(hh, s->uids, &cred.uid, sizeof(uid_t), u);
        if (u && u->n >= s->per_uid_max) {
                log_debug("Refusing a varlink connection of uid %u, pid %d: %u connections of "
                          "that uid.",
                          (unsigned) cred.uid, (int) cred.pid, u->n);
                return;
        }

        c = calloc(1, sizeof *c);
        if (!c) {
                log_oom();
                return;
        }
        if (!u) {
                u = calloc(1, sizeof *u);
                if (!u) {
                        free(c);
                        log_oom();
                        return;
                }
                u->uid = cred.uid;
                HASH_ADD(hh, s->uids, uid, sizeof(uid_t), u);
                if (!u->hh.tbl) { /* uthash could not grow its table */
                        free(u);
                        free(c);
                        log_oom();
                        return;
                }
        }

        c->server = s;
        c->uid = cred.uid;
        c->pid = cred.pid;
        ev_io_init(&c->io, connection_io_cb, TAKE_FD(fd), EV_READ);
        connection_account(c, u);
        DL_APPEND(s->connections, c);

        if (s->hooks.connected) {
                r = s->hooks.connected(c, s->hooks_userdata);
                if (r < 0) {
                        log_debug_errno(r, "Varlink connection of uid %u, pid %d refused: %m",
                                        (unsigned) c->uid, (int) c->pid);
                        connection_close(c);
                        return;
                }
        }
        c->announced = true;
        ev_io_start(s->loop, &c->io);
}

/* Stops the connection now and leaves the rest to the deferred pass; safe anywhere. */
static void connection_close(VarlinkConnection *c) {
        VarlinkServer *s = c->server;

        if (c->closing)
                return;
        connection_unmark_dirty(c);
        c->closing = true;
        ev_io_stop(s->loop, &c->io);
        DL_DELETE(s->connections, c);
        DL_APPEND(s->closing, c);
        server_start_deferred(s);
}

static void call_free(VarlinkCall *call) {
        buffer_free(&call->held);
        free(call->method);
        free(call);
}

VarlinkCall *varlink_call_ref(VarlinkCall *call) {
        if (call)
                call->n_ref++;
        return call;
}

VarlinkCall *varlink_call_unref(VarlinkCall *call) {
        if (call && --call->n_ref == 0)
                call_free(call);
        return NULL;
}

/* Takes a call off its connection's list and drops the list's reference. */
static void connection_remove_call(VarlinkConnection *c, VarlinkCall *call) {
        DL_DELETE(c->calls, call);
        c->n_calls--;
        c->queued -= buffer_len(&call->held);
        buffer_free(&call->held);
        call->connection = NULL;
        varlink_call_unref(call);
}

static void connection_reap(VarlinkConnection *c) {
        VarlinkServer *s = c->server;
        VarlinkCall *call;

        DL_DELETE(s->closing, c);

        /* In the order they came. The list only shrinks here: a closing connection takes no
         * calls, and replies to its calls touch nothing but the call. */
        while ((call = c->calls)) {
                if (!call->answered && call->cancel) {
                        call->answered = true;
                        call->cancel(call, call->cancel_userdata);
                        varlink_call_unref(call); /* the handler side's */
                }
                /* Else the handler side still owes an answer and keeps the call until then. */
                connection_remove_call(c, call);
        }

        if (c->announced && s->hooks.disconnected)
                s->hooks.disconnected(c, s->hooks_userdata);

        connection_unaccount(c);
        safe_close(c->io.fd);
        buffer_free(&c->in);
        buffer_free(&c->out);
        free(c);
}

static bool connection_can_dispatch(const VarlinkConnection *c) {
        return !c->closing && c->n_calls < VARLINK_PENDING_CALLS_MAX &&
               buffer_len(&c->out) <= VARLINK_OUTPUT_PAUSE;
}

static void io_set_events(struct ev_loop *loop, ev_io *w, int events) {
        if (!!ev_is_active(w) == (events != 0) && (w->events & (EV_READ | EV_WRITE)) == events)
                return;
        ev_io_stop(loop, w);
        ev_io_modify(w, events);
        if (events != 0)
                ev_io_start(loop, w);
}

static void connection_update_events(VarlinkConnection *c) {
        int events = 0;

        if (c->closing)
                return;
        if (!c->read_eof && connection_can_dispatch(c))
                events |= EV_READ;
        if (buffer_len(&c->out) > 0)
                events |= EV_WRITE;
        io_set_events(c->server->loop, &c->io, events);
}

/* ---- calls: in order, held, flushed ------------------------------------------------------- */

/* Moves the replies that may go out now to the output buffer, in the order the calls came, and
 * drops the calls that are done. */
static void connection_flush_calls(VarlinkConnection *c) {
        VarlinkCall *call, *next;
        bool blocked = false, was_full = c->n_calls >= VARLINK_PENDING_CALLS_MAX;

        for (call = c->calls; call; call = next) {
                bool oneway = call->flags & VARLINK_CALL_ONEWAY;

                next = call->next;
                if (!blocked && buffer_len(&call->held) > 0) {
                        if (buffer_append(&c->out, call->held.data + call->held.start,
                                          buffer_len(&call->held)) < 0) {
                                log_oom();
                                connection_close(c);
                                return;
                        }
                        buffer_free(&call->held); /* c->queued stays: the bytes moved */
                }
                if (call->answered && (oneway || !blocked)) {
                        connection_remove_call(c, call);
                        continue;
                }
                if (!oneway)
                        blocked = true;
        }

        if (was_full && c->n_calls < VARLINK_PENDING_CALLS_MAX)
                connection_mark_dirty(c); /* dispatching again */
}

/* Whether call's replies may go straight to the output buffer. */
static bool call_is_front(const VarlinkConnection *c, const VarlinkCall *call) {
        for (const VarlinkCall *x = c->calls; x && x != call; x = x->next)
                if (!(x->flags & VARLINK_CALL_ONEWAY))
                        return false;
        return true;
}

/* Queues one reply message of call. */
static int connection_queue_reply(VarlinkConnection *c, VarlinkCall *call, const char *error,
                                  json_object *parameters, bool continues) {
        _cleanup_(json_object_putp) json_object *m = NULL, *p = parameters;
        const char *text;
        size_t len;
        int r;

        m = json_object_new_object();
        if (!m)
                goto oom;
        if (error) {
                json_object *e = json_object_new_string(error);

                if (!e || json_object_object_add(m, "error", e) < 0) {
                        json_object_put(e);
                        goto oom;
                }
        }
        if (!p) {
                p = json_object_new_object();
                if (!p)
                        goto oom;
        }
        if (json_object_object_add(m, "parameters", p) < 0)
                goto oom;
        TAKE_PTR(p);
        if (continues) {
                json_object *b = json_object_new_boolean(true);

                if (!b || json_object_object_add(m, "continues", b) < 0) {
                        json_object_put(b);
                        goto oom;
                }
        }
        text = json_object_to_json_string_length(
                m, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
        if (!text)
                goto oom;
        len++; /* the NUL that ends the message */

        if (len > VARLINK_OUTPUT_MAX - c->queued) {
                log_debug("Varlink client (uid %u, pid %d) does not read its replies (%zu bytes "
                          "queued), closing.",
                          (unsigned) c->uid, (int) c->pid, c->queued);
                connection_close(c);
                return -ENOBUFS;
        }

        r = buffer_append(call_is_front(c, call) ? &c->out : &call->held, text, len);
        if (r < 0)
                goto oom;
        c->queued += len;
        connection_mark_dirty(c);
        return 0;

oom:
        /* The order promised cannot be kept without this reply. */
        log_oom();
        connection_close(c);
        return -ENOMEM;
}

static bool reply_error_is_valid(const char *error) {
        size_t dot;

        return error && qualified_name_split(error, &dot) && interface_name_is_valid(error, dot);
}

static int call_reply(VarlinkCall *call, const char *error, json_object *parameters_, bool continues) {
        _cleanup_(json_object_putp) json_object *parameters = parameters_;
        VarlinkConnection *c;
        int r = 0, k;

        if (!call)
                return -EINVAL;
        if (call->answered)
                return -ESTALE;
        if (continues && !(call->flags & VARLINK_CALL_MORE))
                return -EINVAL;
        if ((parameters && !json_object_is_type(parameters, json_type_object)) ||
            (error && !reply_error_is_valid(error))) {
                if (continues)
                        return -EINVAL;
                log_error("Invalid reply to %s (error '%s'), answering %s instead.", call->method,
                          error ?: "", VARLINK_ERROR_INTERNAL);
                error = VARLINK_ERROR_INTERNAL;
                json_object_put(TAKE_PTR(parameters));
                r = -EINVAL;
        }

        if (!continues)
                call->answered = true;

        c = call->connection;
        if (!c || c->closing)
                r = -ESTALE;
        else if (!(call->flags & VARLINK_CALL_ONEWAY)) {
                k = connection_queue_reply(c, call, error, TAKE_PTR(parameters), continues);
                if (k < 0)
                        r = k;
        }

        if (!continues) {
                if (c && !c->closing)
                        connection_flush_calls(c);
                varlink_call_unref(call); /* the handler side's: it let go */
        }
        return r;
}

int varlink_call_reply(VarlinkCall *call, json_object *parameters) {
        return call_reply(call, NULL, parameters, false);
}

int varlink_call_reply_continue(VarlinkCall *call, json_object *parameters) {
        return call_reply(call, NULL, parameters, true);
}

int varlink_call_reply_error(VarlinkCall *call, const char *error, json_object *parameters) {
        if (!error) {
                json_object_put(parameters);
                parameters = NULL;
        }
        return call_reply(call, error ?: "", parameters, false);
}

static int call_reply_error_string(VarlinkCall *call, const char *error, const char *key,
                                   const char *value) {
        json_object *p, *v;

        p = json_object_new_object();
        v = json_object_new_string(value ?: "");
        if (!p || !v || json_object_object_add(p, key, v) < 0) {
                json_object_put(p);
                json_object_put(v);
                /* Answering is owed even so (the connection may close on the same shortage). */
                (void) call_reply(call, error, NULL, false);
                return -ENOMEM;
        }
        return call_reply(call, error, p, false);
}

int varlink_call_reply_invalid_parameter(VarlinkCall *call, const char *path) {
        return call_reply_error_string(call, VARLINK_SERVICE ".InvalidParameter", "parameter", path);
}

void varlink_call_set_cancel(VarlinkCall *call, void (*cancel)(VarlinkCall *call, void *userdata),
                             void *userdata) {
        if (!call)
                return;
        call->cancel = cancel;
        call->cancel_userdata = userdata;
}

VarlinkConnection *varlink_call_connection(VarlinkCall *call) {
        return call ? call->connection : NULL;
}

const char *varlink_call_method(const VarlinkCall *call) {
        return call ? call->method : NULL;
}

uid_t varlink_connection_uid(const VarlinkConnection *c) {
        return c->uid;
}

pid_t varlink_connection_pid(const VarlinkConnection *c) {
        return c->pid;
}

void varlink_connection_set_userdata(VarlinkConnection *c, void *userdata) {
        c->userdata = userdata;
}

void *varlink_connection_get_userdata(const VarlinkConnection *c) {
        return c->userdata;
}

/* ---- org.varlink.service ------------------------------------------------------------------- */

static int json_add_string(json_object *o, const char *key, const char *value) {
        json_object *v = json_object_new_string(value);

        if (!v || json_object_object_add(o, key, v) < 0) {
                json_object_put(v);
                return -ENOMEM;
        }
        return 0;
}

static int service_get_info(VarlinkServer *s, VarlinkCall *call) {
        _cleanup_(json_object_putp) json_object *p = NULL;
        json_object *l;

        p = json_object_new_object();
        if (!p || json_add_string(p, "vendor", s->vendor) < 0 ||
            json_add_string(p, "product", s->product) < 0 ||
            json_add_string(p, "version", s->version) < 0 || json_add_string(p, "url", s->url) < 0)
                return -ENOMEM;

        l = json_object_new_array_ext((int) s->n_interfaces + 1);
        if (!l || json_object_object_add(p, "interfaces", l) < 0) {
                json_object_put(l);
                return -ENOMEM;
        }
        for (size_t i = 0; i <= s->n_interfaces; i++) {
                json_object *n =
                        json_object_new_string(i == 0 ? VARLINK_SERVICE : s->interfaces[i - 1].name);

                if (!n || json_object_array_add(l, n) < 0) {
                        json_object_put(n);
                        return -ENOMEM;
                }
        }
        return varlink_call_reply(call, TAKE_PTR(p));
}

static int service_get_interface_description(VarlinkServer *s, VarlinkCall *call,
                                             json_object *parameters) {
        _cleanup_(json_object_putp) json_object *p = NULL;
        const Interface *i;
        const char *name;
        json_object *v;

        if (!json_object_object_get_ex(parameters, "interface", &v) ||
            !json_object_is_type(v, json_type_string))
                return varlink_call_reply_invalid_parameter(call, "interface");
        name = json_object_get_string(v);

        if (strcmp(name, VARLINK_SERVICE) != 0) {
                i = server_find_interface(s, name, strlen(name));
                if (!i)
                        return call_reply_error_string(call, VARLINK_SERVICE ".InterfaceNotFound",
                                                       "interface", name);
        } else
                i = NULL;

        p = json_object_new_object();
        if (!p || json_add_string(p, "description", i ? i->description : service_description) < 0)
                return -ENOMEM;
        return varlink_call_reply(call, TAKE_PTR(p));
}

/* ---- reading and dispatching --------------------------------------------------------------- */

static int json_get_flag(json_object *m, const char *key, unsigned flag, unsigned *flags) {
        json_object *v;

        if (!json_object_object_get_ex(m, key, &v) || !v)
                return 0;
        if (!json_object_is_type(v, json_type_boolean))
                return -EINVAL;
        if (json_object_get_boolean(v))
                *flags |= flag;
        return 0;
}

/* Answers one call; the call's own errors are its answer, a negative return is the server's. */
static int connection_dispatch_call(VarlinkConnection *c, VarlinkCall *call, json_object *m) {
        VarlinkServer *s = c->server;
        const Interface *iface = NULL;
        const VarlinkMethod *method = NULL;
        const char *name = call->method, *member;
        json_object *parameters = NULL, *empty = NULL;
        bool declared = false;
        size_t dot;
        int r;

        if (!qualified_name_split(name, &dot))
                return varlink_call_reply_invalid_parameter(call, "method");
        member = name + dot + 1;

        if (json_object_object_get_ex(m, "parameters", &parameters) && parameters &&
            !json_object_is_type(parameters, json_type_object))
                return varlink_call_reply_invalid_parameter(call, "parameters");

        if (dot == strlen(VARLINK_SERVICE) && strncmp(name, VARLINK_SERVICE, dot) == 0)
                declared = strcmp(member, "GetInfo") == 0 ||
                           strcmp(member, "GetInterfaceDescription") == 0;
        else {
                iface = server_find_interface(s, name, dot);
                if (!iface) {
                        _cleanup_free_ char *n = strndup(name, dot);

                        if (!n)
                                return -ENOMEM;
                        return call_reply_error_string(call, VARLINK_SERVICE ".InterfaceNotFound",
                                                       "interface", n);
                }
                for (size_t k = 0; k < iface->n_methods && !method; k++)
                        if (strcmp(iface->methods[k].name, member) == 0)
                                method = &iface->methods[k];
                for (size_t k = 0; k < iface->n_declared && !declared; k++)
                        declared = strcmp(iface->declared[k], member) == 0;
        }
        if (!declared)
                return call_reply_error_string(call, VARLINK_SERVICE ".MethodNotFound", "method",
                                               name);
        if (iface && !method)
                return call_reply_error_string(call, VARLINK_SERVICE ".MethodNotImplemented",
                                               "method", name);
        if (call->flags & VARLINK_CALL_UPGRADE)
                return varlink_call_reply_invalid_parameter(call, "upgrade");

        if (!parameters) {
                parameters = empty = json_object_new_object();
                if (!empty)
                        return -ENOMEM;
        }

        if (!iface) {
                r = strcmp(member, "GetInfo") == 0
                            ? service_get_info(s, call)
                            : service_get_interface_description(s, call, parameters);
        } else
                r = method->handler(call, parameters,
                                    call->flags & (VARLINK_CALL_ONEWAY | VARLINK_CALL_MORE),
                                    iface->userdata);
        json_object_put(empty);
        return r;
}

static void connection_write(VarlinkConnection *c);

/* For a client that broke the protocol: the replies to its calls before that are sent as far
 * as the socket takes them at once, the rest is dropped. */
static void connection_close_flushing(VarlinkConnection *c) {
        connection_write(c);
        connection_close(c);
}

/* Counts the values a JSON text would make (each ',' and each '[' or '{' outside strings, roughly
 * one value each), stopping past max: a cheap bound before json-c allocates them. */
static bool json_values_fit(const char *text, size_t len, size_t max) {
        size_t n = 0;
        bool in_string = false;

        for (size_t i = 0; i < len; i++) {
                char ch = text[i];

                if (in_string) {
                        if (ch == '\\')
                                i++;
                        else if (ch == '"')
                                in_string = false;
                        continue;
                }
                if (ch == '"')
                        in_string = true;
                else if ((ch == ',' || ch == '[' || ch == '{') && ++n > max)
                        return false;
        }
        return true;
}

/* One message, its NUL cut off. A negative return means the connection was closed. */
static int connection_dispatch(VarlinkConnection *c, const char *text, size_t len) {
        VarlinkServer *s = c->server;
        _cleanup_(json_object_putp) json_object *m = NULL;
        const char *method = NULL;
        const char *bad_flag = NULL;
        unsigned flags = 0;
        VarlinkCall *call;
        json_object *v;
        int r;

        if (!json_values_fit(text, len, VARLINK_JSON_VALUES_MAX)) {
                log_debug("Varlink client (uid %u, pid %d) sent a message of more than %u values, "
                          "closing.",
                          (unsigned) c->uid, (int) c->pid, VARLINK_JSON_VALUES_MAX);
                connection_close_flushing(c);
                return -E2BIG;
        }
        json_tokener_reset(s->tokener);
        m = json_tokener_parse_ex(s->tokener, text, (int) len);
        if (!m || json_tokener_get_error(s->tokener) != json_tokener_success ||
            json_tokener_get_parse_end(s->tokener) != len ||
            !json_object_is_type(m, json_type_object)) {
                log_debug("Varlink client (uid %u, pid %d) sent a message that is no JSON object "
                          "(%s), closing.",
                          (unsigned) c->uid, (int) c->pid,
                          m ? "no object"
                            : json_tokener_error_desc(json_tokener_get_error(s->tokener)));
                connection_close_flushing(c);
                return -EBADMSG;
        }

        if (json_object_object_get_ex(m, "method", &v) && json_object_is_type(v, json_type_string))
                method = json_object_get_string(v);
        if (json_get_flag(m, "oneway", VARLINK_CALL_ONEWAY, &flags) < 0)
                bad_flag = "oneway";
        else if (json_get_flag(m, "more", VARLINK_CALL_MORE, &flags) < 0)
                bad_flag = "more";
        else if (json_get_flag(m, "upgrade", VARLINK_CALL_UPGRADE, &flags) < 0)
                bad_flag = "upgrade";
        if (bad_flag)
                flags &= ~VARLINK_CALL_ONEWAY; /* whether to answer is unclear: answer */

        call = calloc(1, sizeof *call);
        if (call)
                call->method = strdup(method ?: "");
        if (!call || !call->method) {
                free(call);
                log_oom();
                connection_close(c);
                return -ENOMEM;
        }
        call->n_ref = 2; /* the handler side's, and the list's */
        call->connection = c;
        call->flags = flags;
        DL_APPEND(c->calls, call);
        c->n_calls++;

        varlink_call_ref(call); /* for the dispatch: replies may release the others */
        if (!method)
                r = varlink_call_reply_invalid_parameter(call, "method");
        else if (bad_flag)
                r = varlink_call_reply_invalid_parameter(call, bad_flag);
        else
                r = connection_dispatch_call(c, call, m);
        if (r < 0 && !call->answered) {
                /* A closing connection explains the failure (a reply that found it gone). */
                log_full_errno(c->closing ? LOG_DEBUG : LOG_WARNING, r,
                               "Method %s of a varlink client (uid %u, pid %d) failed, "
                               "answering %s: %m",
                               call->method, (unsigned) c->uid, (int) c->pid, VARLINK_ERROR_INTERNAL);
                (void) varlink_call_reply_error(call, VARLINK_ERROR_INTERNAL, NULL);
        }
        varlink_call_unref(call);
        return c->closing ? -ECONNRESET : 0;
}

/* Dispatches the complete messages in the input buffer, as far as backpressure allows and at
 * most one batch per pass. Returns false when it left a batch's worth for the next pass. */
static bool connection_process_input(VarlinkConnection *c) {
        bool more = false;
        unsigned n = 0;

        while (buffer_len(&c->in) > 0 && connection_can_dispatch(c)) {
                char *start = c->in.data + c->in.start, *nul;
                size_t len;

                if (n++ >= VARLINK_PENDING_CALLS_MAX) {
                        connection_mark_dirty(c); /* the rest in the next pass */
                        more = true;
                        break;
                }

                nul = memchr(start + c->in_scanned, 0, buffer_len(&c->in) - c->in_scanned);
                if (!nul) {
                        c->in_scanned = buffer_len(&c->in);
                        if (c->in_scanned >= VARLINK_MESSAGE_MAX) {
                                log_debug("Varlink client (uid %u, pid %d) sent a message of "
                                          "more than %u bytes, closing.",
                                          (unsigned) c->uid, (int) c->pid, VARLINK_MESSAGE_MAX);
                                connection_close_flushing(c);
                        }
                        break;
                }
                len = (size_t) (nul - start);
                c->in.start += len + 1;
                c->in_scanned = 0;
                /* start stays valid: nothing in a dispatch touches the input buffer. */
                if (connection_dispatch(c, start, len) < 0)
                        break;
        }

        if (buffer_len(&c->in) == 0)
                buffer_free(&c->in); /* an idle connection holds no buffer */
        return !more;
}

/* The peer closed the socket entirely (POLLHUP), rather than only shutting down its side. */
static bool connection_peer_gone(const VarlinkConnection *c) {
        struct pollfd p = { .fd = c->io.fd, .events = POLLOUT };

        return poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR));
}

static void connection_read(VarlinkConnection *c) {
        for (unsigned round = 0; round < VARLINK_READ_ROUNDS; round++) {
                size_t want, room;
                ssize_t n;
                int r;

                if (c->closing || c->read_eof || !connection_can_dispatch(c))
                        return;

                want = MIN((size_t) VARLINK_BUFFER_MIN, VARLINK_MESSAGE_MAX - buffer_len(&c->in));
                if (want == 0)
                        return; /* complete messages wait for the next pass */
                r = buffer_reserve(&c->in, want, VARLINK_MESSAGE_MAX);
                if (r < 0) {
                        log_oom();
                        connection_close(c);
                        return;
                }
                room = c->in.size - c->in.end;

                n = recv(c->io.fd, c->in.data + c->in.end, room, MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                return;
                        log_debug_errno(errno,
                                        "Varlink client (uid %u, pid %d): read failed, "
                                        "closing: %m",
                                        (unsigned) c->uid, (int) c->pid);
                        connection_close(c);
                        return;
                }
                if (n == 0) {
                        c->read_eof = true;
                        if (connection_peer_gone(c))
                                connection_close(c);
                        else if (!ev_is_active(&c->server->hangup_check))
                                /* half-closed: the calls read are still answered */
                                ev_timer_again(c->server->loop, &c->server->hangup_check);
                        return;
                }
                c->in.end += (size_t) n;
                if (!connection_process_input(c))
                        return; /* a batch dispatched: the rest waits, unread, for the next pass */
                if ((size_t) n < room)
                        return; /* the socket is most likely empty */
        }
}

static void hangup_check_cb(struct ev_loop *loop, ev_timer *w, int revents) {
        VarlinkServer *s = container_of(w, VarlinkServer, hangup_check);
        bool half_closed = false;

        for (VarlinkConnection *c = s->connections, *next; c; c = next) {
                next = c->next; /* closing moves c to the closing list */
                if (!c->read_eof)
                        continue;
                if (connection_peer_gone(c))
                        connection_close(c);
                else
                        half_closed = true;
        }
        if (!half_closed)
                ev_timer_stop(loop, w);
}

/* ---- writing and the deferred pass ------------------------------------------------------------ */

static void connection_write(VarlinkConnection *c) {
        while (!c->closing && buffer_len(&c->out) > 0) {
                ssize_t n = send(c->io.fd, c->out.data + c->out.start, buffer_len(&c->out),
                                 MSG_NOSIGNAL | MSG_DONTWAIT);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return;
                        log_debug_errno(errno,
                                        "Varlink client (uid %u, pid %d): write failed, "
                                        "closing: %m",
                                        (unsigned) c->uid, (int) c->pid);
                        connection_close(c);
                        return;
                }
                c->out.start += (size_t) n;
                c->queued -= (size_t) n;
        }
        if (buffer_len(&c->out) == 0)
                buffer_free(&c->out);
}

/* Writes, dispatches what was held back, finishes a half-closed connection, and watches what
 * is left to watch. */
static void connection_process(VarlinkConnection *c) {
        connection_write(c);
        if (c->closing)
                return;
        (void) connection_process_input(c);
        if (c->closing)
                return;
        connection_write(c);
        if (c->closing)
                return;
        if (c->read_eof && c->n_calls == 0 && c->queued == 0 && c->in_scanned == buffer_len(&c->in)) {
                /* Half-closed and all answered; a partial message can never complete. */
                connection_close(c);
                return;
        }
        connection_update_events(c);
}

static void connection_io_cb(struct ev_loop *loop, ev_io *w, int revents) {
        VarlinkConnection *c = container_of(w, VarlinkConnection, io);

        if (revents & EV_READ)
                connection_read(c);
        if (!c->closing)
                connection_process(c);
}

static void server_run_deferred(VarlinkServer *s) {
        unsigned pass = ++s->pass;
        VarlinkConnection *c;

        /* Each connection once per pass: what they leave for later (marking themselves dirty
         * again, in this pass) waits for the next loop iteration, so that one client cannot
         * hold the loop. One list, so that a connection closed meanwhile just leaves it. */
        while ((c = s->dirty) && c->dirty_pass != pass) {
                connection_unmark_dirty(c);
                connection_process(c);
        }
        while (s->closing)
                connection_reap(s->closing);

        if (s->dirty)
                ev_idle_start(s->loop, &s->kick); /* do not sleep before the next pass */
        else
                ev_prepare_stop(s->loop, &s->deferred);
}

static void deferred_cb(struct ev_loop *loop, ev_prepare *w, int revents) {
        server_run_deferred(container_of(w, VarlinkServer, deferred));
}

static void kick_cb(struct ev_loop *loop, ev_idle *w, int revents) {
        ev_idle_stop(loop, w);
}
