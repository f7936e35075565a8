/* A small blocking varlink client (see varlink-client.h) */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "time-util.h"
#include "varlink-client.h"

/* What one recv() asks for at most. */
#define READ_CHUNK (64U * 1024)

struct VarlinkClient {
        int fd;
        char *buf; /* bytes read and not yet taken as messages */
        size_t len, allocated;
        size_t scanned; /* buf[0..scanned) holds no NUL */
        bool eof;
};

void varlink_reply_done(VarlinkReply *r) {
        json_object_put(r->message);
        *r = (VarlinkReply){};
}

int varlink_client_connect(VarlinkClient **ret, const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        /* Bounds connect(), which waits while the server's backlog is full. */
        struct timeval tv = { .tv_sec = VARLINK_CLIENT_TIMEOUT_USEC / USEC_PER_SEC };
        _cleanup_close_ int fd = -EBADF;
        VarlinkClient *c;
        int flags;

        if (strlen(path) >= sizeof sa.sun_path)
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, path, strlen(path));
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *) &sa, sizeof sa) < 0)
                return errno == EINPROGRESS || errno == EAGAIN ? -ETIMEDOUT : -errno;
        /* From here on every wait is a poll() with its own deadline. */
        flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                return -errno;

        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->fd = TAKE_FD(fd);
        *ret = c;
        return 0;
}

VarlinkClient *varlink_client_free(VarlinkClient *c) {
        if (!c)
                return NULL;
        safe_close(c->fd);
        free(c->buf);
        free(c);
        return NULL;
}

int varlink_client_fd(const VarlinkClient *c) {
        return c->fd;
}

/* Waits until fd has events, or the deadline: -ETIMEDOUT then. */
static int wait_fd(int fd, short events, uint64_t deadline) {
        for (;;) {
                struct pollfd p = { .fd = fd, .events = events };
                int timeout_ms = poll_timeout_ms(deadline), r;

                if (timeout_ms == 0)
                        return -ETIMEDOUT;
                r = poll(&p, 1, timeout_ms);
                if (r < 0 && errno != EINTR)
                        return -errno;
                if (r > 0)
                        return 0; /* POLLHUP and POLLERR too: the next read or write says what */
        }
}

int varlink_client_send(VarlinkClient *c, const char *method, json_object *parameters, bool more,
                        uint64_t deadline) {
        json_object *m = json_object_new_object();
        const char *text;
        size_t len, done = 0;
        int r = 0;

        if (!m || json_add(m, "method", json_object_new_string(method)) < 0 ||
            json_add(m, "parameters",
                     parameters ? json_object_get(parameters) : json_object_new_object()) < 0 ||
            (more && json_add(m, "more", json_object_new_boolean(true)) < 0)) {
                json_object_put(m);
                return -ENOMEM;
        }
        text = json_object_to_json_string_ext(m, JSON_C_TO_STRING_PLAIN |
                                                         JSON_C_TO_STRING_NOSLASHESCAPE);
        if (!text) {
                json_object_put(m);
                return -ENOMEM;
        }
        len = strlen(text) + 1; /* the NUL ends the message */
        if (len > VARLINK_CLIENT_MESSAGE_MAX) {
                json_object_put(m);
                return -EMSGSIZE;
        }
        while (done < len) {
                ssize_t n = send(c->fd, text + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT);

                if (n >= 0) {
                        done += (size_t) n;
                        continue;
                }
                if (errno == EINTR)
                        continue;
                if (errno != EAGAIN) {
                        r = -errno;
                        break;
                }
                r = wait_fd(c->fd, POLLOUT, deadline);
                if (r < 0)
                        break;
        }
        json_object_put(m);
        return r;
}

/* Parses buf[0..len) (the NUL at buf[len]) as one message and takes it off the buffer. */
static int take_message(VarlinkClient *c, size_t len, VarlinkReply *ret) {
        json_tokener *tok = json_tokener_new();
        VarlinkReply reply = {};
        json_object *m, *v;
        int r = 0;

        if (!tok)
                return -ENOMEM;
        m = json_tokener_parse_ex(tok, c->buf, (int) len);
        if (!m || json_tokener_get_error(tok) != json_tokener_success ||
            json_tokener_get_parse_end(tok) != len || !json_object_is_type(m, json_type_object))
                r = -EBADMSG;
        json_tokener_free(tok);

        /* The rest stays for the next message. */
        memmove(c->buf, c->buf + len + 1, c->len - len - 1);
        c->len -= len + 1;
        c->scanned = 0;

        if (r < 0) {
                json_object_put(m);
                return r;
        }
        reply.message = m;
        if (json_object_object_get_ex(m, "error", &v)) {
                if (!json_object_is_type(v, json_type_string))
                        r = -EBADMSG;
                else
                        reply.error = json_object_get_string(v);
        }
        if (json_object_object_get_ex(m, "continues", &v) && v) {
                if (!json_object_is_type(v, json_type_boolean))
                        r = -EBADMSG;
                else
                        reply.continues = json_object_get_boolean(v);
        }
        if (r == 0 && (!json_object_object_get_ex(m, "parameters", &v) || !v)) {
                /* Absent or null: an empty object, owned by the message like the rest. */
                v = json_object_new_object();
                if (!v || json_object_object_add(m, "parameters", v) < 0) {
                        json_object_put(v);
                        r = -ENOMEM;
                }
        } else if (r == 0 && !json_object_is_type(v, json_type_object))
                r = -EBADMSG;
        if (r < 0) {
                varlink_reply_done(&reply);
                return r;
        }
        reply.parameters = v;
        *ret = reply;
        return 1;
}

int varlink_client_read(VarlinkClient *c, uint64_t deadline, VarlinkReply *ret) {
        int r;

        for (;;) {
                const char *nul = c->scanned < c->len
                                          ? memchr(c->buf + c->scanned, 0, c->len - c->scanned)
                                          : NULL;
                size_t want;
                ssize_t n;

                if (nul)
                        return take_message(c, (size_t) (nul - c->buf), ret);
                c->scanned = c->len;
                if (c->eof)
                        return -ECONNRESET;
                if (c->len >= VARLINK_CLIENT_MESSAGE_MAX)
                        return -EMSGSIZE;

                want = MIN((size_t) READ_CHUNK, VARLINK_CLIENT_MESSAGE_MAX - c->len);
                if (c->allocated - c->len < want) {
                        size_t size = MIN(MAX(c->allocated * 2, c->len + want),
                                          (size_t) VARLINK_CLIENT_MESSAGE_MAX);
                        char *b = realloc(c->buf, size);

                        if (!b)
                                return -ENOMEM;
                        c->buf = b;
                        c->allocated = size;
                }
                n = recv(c->fd, c->buf + c->len, want, MSG_DONTWAIT);
                if (n > 0) {
                        c->len += (size_t) n;
                        continue;
                }
                if (n == 0) {
                        c->eof = true;
                        return -ECONNRESET;
                }
                if (errno == EINTR)
                        continue;
                if (errno != EAGAIN)
                        return -errno;
                if (deadline == VARLINK_CLIENT_NO_WAIT)
                        return 0;
                r = wait_fd(c->fd, POLLIN, deadline);
                if (r < 0)
                        return r;
        }
}

int varlink_client_call(VarlinkClient *c, const char *method, json_object *parameters,
                        VarlinkReply *ret) {
        uint64_t deadline = monotonic_usec() + VARLINK_CLIENT_TIMEOUT_USEC;
        int r;

        r = varlink_client_send(c, method, parameters, false, deadline);
        if (r < 0)
                return r;
        r = varlink_client_read(c, deadline, ret);
        if (r < 0)
                return r;
        if (ret->continues) {
                varlink_reply_done(ret);
                return -EBADMSG;
        }
        return 0;
}
