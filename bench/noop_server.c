/* The IPC benchmark's ceiling: a newline-delimited JSON-RPC "server" that does no
 * work per call. One epoll loop; every complete line is answered with
 * {"jsonrpc":"2.0","result":{"pong":true},"id":N}, N copied from the request
 * without parsing it as JSON. Whatever a client measures against it is the most
 * that client can measure: the client's own cost, the kernel and the scheduler.
 *
 * Built and started by bench/rpc_rounds.py:  cc -O2 -o noop_server noop_server.c
 * Usage: noop_server SOCKET_PATH   (SIGTERM removes the socket and exits)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_FDS 4096
#define LINE_MAX_BYTES 65536
#define ID_MAX_BYTES 64  /* a longer id is answered as null: a measuring stick, not a server */
#define REPLY_MAX_BYTES (64 + ID_MAX_BYTES)

static const char *socket_path;
static char *pending[MAX_FDS];  /* an unfinished line per connection, or NULL */
static size_t pending_len[MAX_FDS];

static void on_term(int sig) {
    (void)sig;
    unlink(socket_path);
    _exit(0);
}

/* Append the reply to one line (its "id" value copied verbatim) to out. */
static size_t answer(const char *line, size_t len, char *out) {
    const char *id = "null";
    size_t id_len = 4;
    const char *key = memmem(line, len, "\"id\":", 5);
    if (key != NULL) {
        const char *start = key + 5, *end = line + len;
        while (start < end && *start == ' ') start++;
        const char *stop = start;
        while (stop < end && *stop != ',' && *stop != '}') stop++;
        if (stop > start && (size_t)(stop - start) <= ID_MAX_BYTES) {
            id = start;
            id_len = (size_t)(stop - start);
        }
    }
    static const char head[] = "{\"jsonrpc\":\"2.0\",\"result\":{\"pong\":true},\"id\":";
    memcpy(out, head, sizeof head - 1);
    memcpy(out + sizeof head - 1, id, id_len);
    memcpy(out + sizeof head - 1 + id_len, "}\n", 2);
    return sizeof head - 1 + id_len + 2;
}

static void drop(int epoll_fd, int fd) {
    epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    free(pending[fd]);
    pending[fd] = NULL;
    pending_len[fd] = 0;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s SOCKET_PATH\n", argv[0]);
        return 2;
    }
    socket_path = argv[1];
    signal(SIGTERM, on_term);
    signal(SIGPIPE, SIG_IGN);
    unlink(socket_path);
    int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (strlen(socket_path) >= sizeof address.sun_path) {
        fprintf(stderr, "socket path too long\n");
        return 2;
    }
    strcpy(address.sun_path, socket_path);
    if (bind(listener, (struct sockaddr *)&address, sizeof address) || listen(listener, 1024)) {
        perror(socket_path);
        return 1;
    }
    int epoll_fd = epoll_create1(0);
    struct epoll_event event = {.events = EPOLLIN, .data.fd = listener};
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listener, &event);
    static char in[LINE_MAX_BYTES * 2], out[LINE_MAX_BYTES * 2];
    struct epoll_event ready[256];
    for (;;) {
        int count = epoll_wait(epoll_fd, ready, 256, -1);
        for (int i = 0; i < count; i++) {
            int fd = ready[i].data.fd;
            if (fd == listener) {
                int client;
                while ((client = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (client >= MAX_FDS) {
                        close(client);
                        continue;
                    }
                    struct epoll_event add = {.events = EPOLLIN, .data.fd = client};
                    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, client, &add);
                }
                continue;
            }
            size_t have = pending_len[fd];
            if (have) memcpy(in, pending[fd], have);
            ssize_t got = recv(fd, in + have, LINE_MAX_BYTES, 0);
            if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (got <= 0) {
                drop(epoll_fd, fd);
                continue;
            }
            size_t total = have + (size_t)got, start = 0, written = 0;
            for (size_t k = 0; k < total; k++) {
                if (in[k] != '\n') continue;
                if (written + REPLY_MAX_BYTES > sizeof out) {  /* flush before out can overflow */
                    send(fd, out, written, MSG_NOSIGNAL);
                    written = 0;
                }
                if (k > start) written += answer(in + start, k - start, out + written);
                start = k + 1;
            }
            if (written) send(fd, out, written, MSG_NOSIGNAL);  /* a measuring stick, not a
                server: what a full socket does not take is dropped */
            size_t rest = total - start;
            if (rest > LINE_MAX_BYTES) {  /* a line this long is not a ping */
                drop(epoll_fd, fd);
                continue;
            }
            char *kept = realloc(pending[fd], rest ? rest : 1);
            if (kept == NULL) {
                drop(epoll_fd, fd);
                continue;
            }
            pending[fd] = kept;
            memcpy(pending[fd], in + start, rest);
            pending_len[fd] = rest;
        }
    }
}
