/*
 * A libqb server speaking the test protocol (ringlink_tests::ipc), for
 * ringlink's client to call: qb_server NAME shm|socket [ENFORCE]. It
 * reports "ready pid=N" on the socket named by RING_PEER_SOCK_FD and
 * takes commands there, one per line, each answered "ok ...":
 *
 *   rate fast|normal|slow|off|off2   qb_ipcs_request_rate_limit
 *   stats                            ok conns=N msgs=N
 *   exit                             qb_ipcs_destroy, then exit 0
 *   crash                            _exit(1) at once (no cleanup)
 *
 * Requests, by id (ringlink_tests::ipc::id):
 *   1 ECHO        a response of the same id and payload
 *   2 EVENT_ONLY  no response; the payload as an event of id 2
 *   3 BURST       {count, big_every} (u64 each): an empty response, then
 *                 `count` events of id 101: event i is the connection's
 *                 maximum payload if big_every divides i + 1, else
 *                 8 + (i * 37) % 2041 bytes; it starts with i (u64 LE),
 *                 then byte k is (i * 31 + k * 7) & 0xff. When the
 *                 client's ring is full the rest follow on a timer.
 *   5 DISCONNECT  no response: qb_ipcs_disconnect
 *   9 MULTI       three responses (ids 91, 92, 93)
 *   other         a response with error -ENOSYS
 */
#include <errno.h>
#include <stdarg.h>
#include <sys/uio.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <qb/qbdefs.h>
#include <qb/qbipcs.h>
#include <qb/qbloop.h>

static qb_loop_t *loop;
static qb_ipcs_service_t *svc;
static int sock = -1;
static long conns, msgs;
static char line[4096];
static size_t line_len;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	char out[512];
	va_list ap;
	int n;
	va_start(ap, fmt);
	n = vsnprintf(out, sizeof out - 1, fmt, ap);
	va_end(ap);
	if (n < 0) return;
	if (n > (int)sizeof out - 2) n = sizeof out - 2;
	out[n++] = '\n';
	if (write(sock, out, n) != n) _exit(3);
}

static int32_t accept_fn(qb_ipcs_connection_t *c, uid_t uid, gid_t gid)
{
	(void)c; (void)uid; (void)gid;
	return 0;
}

static void created_fn(qb_ipcs_connection_t *c) { (void)c; conns++; }
static int32_t closed_fn(qb_ipcs_connection_t *c) { (void)c; conns--; return 0; }

static ssize_t respond(qb_ipcs_connection_t *c, int32_t id, int32_t error, const void *p, size_t n)
{
	struct qb_ipc_response_header h = { .id = id, .size = (int32_t)(sizeof h + n), .error = error };
	struct iovec iov[2] = { { &h, sizeof h }, { (void *)p, n } };
	return qb_ipcs_response_sendv(c, iov, n ? 2 : 1);
}

static ssize_t event(qb_ipcs_connection_t *c, int32_t id, const void *p, size_t n)
{
	struct qb_ipc_response_header h = { .id = id, .size = (int32_t)(sizeof h + n), .error = 0 };
	struct iovec iov[2] = { { &h, sizeof h }, { (void *)p, n } };
	return qb_ipcs_event_sendv(c, iov, n ? 2 : 1);
}

/* A burst of events in progress. */
struct burst {
	qb_ipcs_connection_t *c;
	uint64_t count, big_every, i;
};

static char ev_buf[1 << 21];

static void burst_step(void *data)
{
	struct burst *b = data;
	size_t max = qb_ipcs_connection_get_buffer_size(b->c) - sizeof(struct qb_ipc_response_header);
	while (b->i < b->count) {
		uint64_t i = b->i;
		size_t len, k;
		ssize_t r;
		if (b->big_every && (i + 1) % b->big_every == 0) len = max;
		else len = 8 + (size_t)((i * 37) % 2041);
		if (len > max) len = max;
		for (k = 0; k < len; k++) ev_buf[k] = (char)((i * 31 + k * 7) & 0xff);
		memcpy(ev_buf, &i, 8);
		r = event(b->c, 101, ev_buf, len);
		if (r == -EAGAIN) {
			qb_loop_timer_handle th;
			qb_loop_timer_add(loop, QB_LOOP_MED, 1000000, b, burst_step, &th);
			return;
		}
		if (r < 0) break;
		b->i++;
	}
	qb_ipcs_connection_unref(b->c);
	free(b);
}

static int32_t msg_fn(qb_ipcs_connection_t *c, void *data, size_t size)
{
	struct qb_ipc_request_header *h = data;
	const char *p = (const char *)data + sizeof *h;
	size_t n = size > sizeof *h ? size - sizeof *h : 0;
	msgs++;
	switch (h->id) {
	case 1:
		respond(c, 1, 0, p, n);
		break;
	case 2:
		event(c, 2, p, n);
		break;
	case 3: {
		struct burst *b = calloc(1, sizeof *b);
		if (!b) { respond(c, 3, -ENOMEM, NULL, 0); break; }
		if (n >= 16) { memcpy(&b->count, p, 8); memcpy(&b->big_every, p + 8, 8); }
		b->c = c;
		qb_ipcs_connection_ref(c);
		respond(c, 3, 0, NULL, 0);
		burst_step(b);
		break;
	}
	case 5:
		qb_ipcs_disconnect(c);
		break;
	case 9: {
		int k;
		for (k = 1; k <= 3; k++) respond(c, 90 + k, 0, p, n);
		break;
	}
	default:
		respond(c, h->id, -ENOSYS, NULL, 0);
	}
	return 0;
}

static int32_t job_add(enum qb_loop_priority p, void *d, qb_loop_job_dispatch_fn fn)
{ return qb_loop_job_add(loop, p, d, fn); }
static int32_t d_add(enum qb_loop_priority p, int32_t fd, int32_t e, void *d, qb_ipcs_dispatch_fn_t fn)
{ return qb_loop_poll_add(loop, p, fd, e, d, fn); }
static int32_t d_mod(enum qb_loop_priority p, int32_t fd, int32_t e, void *d, qb_ipcs_dispatch_fn_t fn)
{ return qb_loop_poll_mod(loop, p, fd, e, d, fn); }
static int32_t d_del(int32_t fd) { return qb_loop_poll_del(loop, fd); }

static void command(const char *cmd)
{
	if (!strncmp(cmd, "rate ", 5)) {
		const char *r = cmd + 5;
		enum qb_ipcs_rate_limit rl = QB_IPCS_RATE_NORMAL;
		if (!strcmp(r, "fast")) rl = QB_IPCS_RATE_FAST;
		else if (!strcmp(r, "slow")) rl = QB_IPCS_RATE_SLOW;
		else if (!strcmp(r, "off")) rl = QB_IPCS_RATE_OFF;
		else if (!strcmp(r, "off2")) rl = QB_IPCS_RATE_OFF_2;
		qb_ipcs_request_rate_limit(svc, rl);
		say("ok");
	} else if (!strcmp(cmd, "stats")) {
		say("ok conns=%ld msgs=%ld", conns, msgs);
	} else if (!strcmp(cmd, "exit")) {
		qb_ipcs_destroy(svc);
		say("ok");
		_exit(0);
	} else if (!strcmp(cmd, "crash")) {
		_exit(1);
	} else {
		say("err unknown command %s", cmd);
	}
}

static int32_t on_sock(int32_t fd, int32_t revents, void *d)
{
	char b[512];
	ssize_t r;
	(void)d;
	if (!(revents & POLLIN)) _exit(0);
	r = read(fd, b, sizeof b);
	if (r <= 0) _exit(0); /* the test is gone */
	for (ssize_t k = 0; k < r; k++) {
		if (b[k] == '\n') {
			line[line_len] = 0;
			command(line);
			line_len = 0;
		} else if (line_len + 1 < sizeof line) {
			line[line_len++] = b[k];
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct qb_ipcs_service_handlers sh = {
		.connection_accept = accept_fn, .connection_created = created_fn,
		.msg_process = msg_fn, .connection_closed = closed_fn,
	};
	struct qb_ipcs_poll_handlers ph = { job_add, d_add, d_mod, d_del };
	const char *env = getenv("RING_PEER_SOCK_FD");
	enum qb_ipc_type t;
	if (argc < 3 || !env) return 2;
	sock = atoi(env);
	t = strcmp(argv[2], "socket") ? QB_IPC_SHM : QB_IPC_SOCKET;
	signal(SIGPIPE, SIG_IGN);
	svc = qb_ipcs_create(argv[1], 0, t, &sh);
	if (!svc) return 1;
	if (argc > 3) qb_ipcs_enforce_buffer_size(svc, atoi(argv[3]));
	loop = qb_loop_create();
	qb_ipcs_poll_handlers_set(svc, &ph);
	if (qb_ipcs_run(svc)) return 1;
	qb_loop_poll_add(loop, QB_LOOP_HIGH, sock, POLLIN, NULL, on_sock);
	say("ready pid=%d", (int)getpid());
	qb_loop_run(loop);
	return 0;
}
