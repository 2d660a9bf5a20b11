/*
 * A libqb client driven by a test, one command per line on the socket
 * named by RING_PEER_SOCK_FD (tests/src/qbc.rs builds it against the
 * system's libqb). Each command is answered by one line: "ok ..." or
 * "err <negative errno> <what>".
 *
 *   connect NAME MAX            qb_ipcc_connect      -> ok buffer=N
 *   connect_async NAME MAX      qb_ipcc_connect_async + poll + _continue
 *   echo ID SIZE TIMEOUT        a request of SIZE payload bytes (pattern
 *                               below) and its response, checked; TIMEOUT
 *                               < 0: qb_ipcc_send + qb_ipcc_recv(-1),
 *                               else qb_ipcc_sendv_recv(TIMEOUT)
 *   send ID SIZE                qb_ipcc_send          -> ok N
 *   lie ID SIZE CLAIM           a request whose header claims CLAIM bytes
 *   recv TIMEOUT                qb_ipcc_recv          -> ok LEN ID ERROR
 *   sendv_recv ID SIZE TIMEOUT  qb_ipcc_sendv_recv    -> ok LEN ID
 *   event TIMEOUT               qb_ipcc_event_recv    -> ok LEN ID PAYLOAD-HEX(<=32)
 *   events N TIMEOUT            N events -> ok N HASH (FNV-1a 64 of each
 *                               event's id, 4 bytes LE, then payload)
 *   burst COUNT BIG SEED        the test protocol's BURST request (three
 *                               u64: count, big_every, seed), its empty
 *                               response awaited
 *   fc_max N                    qb_ipcc_fc_enable_max_set
 *   is_connected                -> ok 0|1
 *   auth                        qb_ipcc_auth_get      -> ok PID UID GID
 *   disconnect                  qb_ipcc_disconnect
 *   fds                         -> ok N (open fds)
 *   cycles NAME N               N connect + disconnect
 *   setid UID GID               setgid + setuid (to connect as another user)
 *   truncate WHICH SIZE         truncate this connection's ring file
 *                               WHICH (request-header, response-data, ...)
 *                               found through /proc/self/maps
 *   quit
 */
#include <errno.h>
#include <stdarg.h>
#include <sys/uio.h>
#include <fcntl.h>
#include <dirent.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include <qb/qbipcc.h>

static int sock = -1;
static qb_ipcc_connection_t *conn;
static char *buf;
static size_t buf_len = 8 << 20;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	char line[4096];
	va_list ap;
	int n;
	va_start(ap, fmt);
	n = vsnprintf(line, sizeof line - 1, fmt, ap);
	va_end(ap);
	if (n < 0) return;
	if (n > (int)sizeof line - 2) n = sizeof line - 2;
	line[n++] = '\n';
	if (write(sock, line, n) != n) exit(3);
}

static int read_line(char *line, size_t len)
{
	size_t n = 0;
	while (n + 1 < len) {
		char c;
		ssize_t r = read(sock, &c, 1);
		if (r <= 0) return -1;
		if (c == '\n') break;
		line[n++] = c;
	}
	line[n] = 0;
	return 0;
}

static void fill(char *p, size_t size)
{
	size_t k;
	for (k = 0; k < size; k++) p[k] = (char)((k * 7 + size) & 0xff);
}

static int check(const char *p, size_t size)
{
	size_t k;
	for (k = 0; k < size; k++)
		if (p[k] != (char)((k * 7 + size) & 0xff)) return -1;
	return 0;
}

static int connect_to(const char *name, size_t max, int async)
{
	if (async) {
		int fd;
		struct pollfd p;
		conn = qb_ipcc_connect_async(name, max, &fd);
		if (!conn) return -errno;
		p.fd = fd; p.events = POLLIN; p.revents = 0;
		if (poll(&p, 1, 10000) != 1) return -ETIMEDOUT;
		if (qb_ipcc_connect_continue(conn) != 0) { conn = NULL; return -errno; }
		return 0;
	}
	conn = qb_ipcc_connect(name, max);
	return conn ? 0 : -errno;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	size_t k;
	for (k = 0; k < n; k++) { h ^= b[k]; h *= 0x100000001b3ULL; }
	return h;
}

static int count_fds(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	if (!d) return -1;
	while ((e = readdir(d))) if (e->d_name[0] != '.') n++;
	closedir(d);
	return n - 1; /* the directory's own fd */
}

/* The path of this connection's mapped ring file `which`: "RING-PART",
 * e.g. "response-data", is the file ".../qb-RING-<service>-PART". */
static int find_ring(const char *which, char *out, size_t len)
{
	char ring[64], part[64], mid[80], end[80];
	const char *dash = strrchr(which, '-');
	FILE *f;
	char line[8192];
	if (!dash || dash - which >= (long)sizeof ring) return -1;
	snprintf(ring, sizeof ring, "%.*s", (int)(dash - which), which);
	snprintf(part, sizeof part, "%s", dash + 1);
	snprintf(mid, sizeof mid, "/qb-%s-", ring);
	snprintf(end, sizeof end, "-%s", part);
	f = fopen("/proc/self/maps", "r");
	if (!f) return -1;
	while (fgets(line, sizeof line, f)) {
		char *p = strchr(line, '/');
		size_t pl, el = strlen(end);
		if (!p) continue;
		pl = strcspn(p, "\n");
		p[pl] = 0;
		if (pl > el && !strcmp(p + pl - el, end) && strstr(p, mid)) {
			snprintf(out, len, "%s", p);
			fclose(f);
			return 0;
		}
	}
	fclose(f);
	return -1;
}

int main(void)
{
	const char *env = getenv("RING_PEER_SOCK_FD");
	char line[4096];
	if (!env) return 2;
	sock = atoi(env);
	buf = malloc(buf_len);
	if (!buf) return 2;
	say("ready pid=%d", (int)getpid());
	while (read_line(line, sizeof line) == 0) {
		char cmd[64] = "", a[512] = "";
		long x = 0, y = 0, z = 0;
		int n = sscanf(line, "%63s %511s %ld %ld", cmd, a, &y, &z);
		(void)n;
		x = atol(a);
		if (!strcmp(cmd, "connect") || !strcmp(cmd, "connect_async")) {
			int r = connect_to(a, (size_t)y, !strcmp(cmd, "connect_async"));
			if (r) say("err %d connect", r);
			else say("ok buffer=%d", qb_ipcc_get_buffer_size(conn));
		} else if (!strcmp(cmd, "echo")) {
			int id = (int)x;
			long size = 0, timeout = 0;
			struct qb_ipc_request_header *h = (void *)buf;
			struct qb_ipc_response_header *rh;
			char *resp = buf + (buf_len / 2);
			ssize_t r;
			sscanf(line, "%*s %*s %ld %ld", &size, &timeout);
			h->id = id;
			h->size = sizeof(*h) + size;
			fill(buf + sizeof(*h), size);
			if (timeout < 0) {
				r = qb_ipcc_send(conn, buf, h->size);
				if (r != h->size) { say("err %zd send", r); continue; }
				r = qb_ipcc_recv(conn, resp, buf_len / 2, -1);
			} else {
				struct iovec iov = { buf, h->size };
				r = qb_ipcc_sendv_recv(conn, &iov, 1, resp, buf_len / 2, (int32_t)timeout);
			}
			if (r < 0) { say("err %zd recv", r); continue; }
			rh = (void *)resp;
			if (r != (ssize_t)(sizeof(*rh) + size) || rh->size != r || rh->id != id
			    || check(resp + sizeof(*rh), size)) {
				say("err 0 mismatch len=%zd size=%d id=%d", r, rh->size, rh->id);
				continue;
			}
			say("ok");
		} else if (!strcmp(cmd, "send") || !strcmp(cmd, "lie")) {
			struct qb_ipc_request_header *h = (void *)buf;
			ssize_t r;
			long size = y;
			h->id = (int)x;
			h->size = !strcmp(cmd, "lie") ? (int32_t)z : (int32_t)(sizeof(*h) + size);
			fill(buf + sizeof(*h), size);
			r = qb_ipcc_send(conn, buf, sizeof(*h) + size);
			if (r < 0) say("err %zd send", r);
			else say("ok %zd", r);
		} else if (!strcmp(cmd, "recv")) {
			ssize_t r = qb_ipcc_recv(conn, buf, buf_len, (int32_t)x);
			struct qb_ipc_response_header *rh = (void *)buf;
			if (r < 0) say("err %zd recv", r);
			else say("ok %zd %d %d", r, rh->id, rh->error);
		} else if (!strcmp(cmd, "sendv_recv")) {
			struct qb_ipc_request_header *h = (void *)buf;
			struct qb_ipc_response_header *rh;
			char *resp = buf + (buf_len / 2);
			struct iovec iov;
			ssize_t r;
			h->id = (int)x;
			h->size = sizeof(*h) + y;
			fill(buf + sizeof(*h), y);
			iov.iov_base = buf; iov.iov_len = h->size;
			r = qb_ipcc_sendv_recv(conn, &iov, 1, resp, buf_len / 2, (int32_t)z);
			rh = (void *)resp;
			if (r < 0) say("err %zd sendv_recv", r);
			else say("ok %zd %d", r, rh->id);
		} else if (!strcmp(cmd, "event")) {
			ssize_t r = qb_ipcc_event_recv(conn, buf, buf_len, (int32_t)x);
			struct qb_ipc_response_header *rh = (void *)buf;
			if (r < 0) say("err %zd event", r);
			else {
				char hex[80] = "";
				long k, pl = r - (long)sizeof(*rh);
				for (k = 0; k < pl && k < 32; k++)
					sprintf(hex + 2 * k, "%02x", (unsigned char)buf[sizeof(*rh) + k]);
				say("ok %zd %d %s", r, rh->id, hex);
			}
		} else if (!strcmp(cmd, "events")) {
			uint64_t h = 0xcbf29ce484222325ULL;
			long k, got = 0;
			ssize_t r = 0;
			for (k = 0; k < x; k++) {
				struct qb_ipc_response_header *rh = (void *)buf;
				int32_t id;
				r = qb_ipcc_event_recv(conn, buf, buf_len, (int32_t)y);
				if (r < 0) break;
				id = rh->id;
				h = fnv(h, &id, 4);
				h = fnv(h, buf + sizeof(*rh), r - sizeof(*rh));
				got++;
			}
			if (r < 0) say("err %zd events after %ld", r, got);
			else say("ok %ld %016llx", got, (unsigned long long)h);
		} else if (!strcmp(cmd, "burst")) {
			struct qb_ipc_request_header *h = (void *)buf;
			uint64_t p[3] = { (uint64_t)x, (uint64_t)y, (uint64_t)z };
			struct iovec iov;
			ssize_t r;
			h->id = 3;
			h->size = sizeof(*h) + sizeof p;
			memcpy(buf + sizeof(*h), p, sizeof p);
			iov.iov_base = buf; iov.iov_len = h->size;
			r = qb_ipcc_sendv_recv(conn, &iov, 1, buf + buf_len / 2, buf_len / 2, 10000);
			if (r < 0) say("err %zd burst", r);
			else say("ok");
		} else if (!strcmp(cmd, "fc_max")) {
			qb_ipcc_fc_enable_max_set(conn, (uint32_t)x);
			say("ok");
		} else if (!strcmp(cmd, "is_connected")) {
			say("ok %d", qb_ipcc_is_connected(conn));
		} else if (!strcmp(cmd, "auth")) {
			pid_t p; uid_t u; gid_t g;
			int r = qb_ipcc_auth_get(conn, &p, &u, &g);
			if (r) say("err %d auth", r);
			else say("ok %d %d %d", (int)p, (int)u, (int)g);
		} else if (!strcmp(cmd, "disconnect")) {
			qb_ipcc_disconnect(conn);
			conn = NULL;
			say("ok");
		} else if (!strcmp(cmd, "fds")) {
			say("ok %d", count_fds());
		} else if (!strcmp(cmd, "cycles")) {
			long k;
			int r = 0;
			for (k = 0; k < y; k++) {
				r = connect_to(a, 0, 0);
				if (r) break;
				qb_ipcc_disconnect(conn);
				conn = NULL;
			}
			if (r) say("err %d cycle %ld", r, k);
			else say("ok %ld", k);
		} else if (!strcmp(cmd, "setid")) {
			if (setgid((gid_t)y) || setuid((uid_t)x)) say("err %d setid", -errno);
			else say("ok");
		} else if (!strcmp(cmd, "truncate")) {
			char path[4096];
			if (find_ring(a, path, sizeof path)) { say("err -2 no ring %s", a); continue; }
			if (truncate(path, y)) say("err %d truncate %s", -errno, path);
			else say("ok %s", path);
		} else if (!strcmp(cmd, "quit")) {
			say("ok");
			break;
		} else {
			say("err -22 unknown command %s", cmd);
		}
	}
	return 0;
}
