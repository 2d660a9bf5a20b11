/*
 * libqb's side of qb-bench (benches/src/bin/qb-bench.rs), linked with
 * the system's libqb:
 *
 *   qb_bench server NAME shm|socket
 *       a libqb server: id 1 answered with its own payload, id 2 not
 *       answered, id 3 answered with an empty payload (the one-way
 *       acknowledgement). Prints "ready" on stdout, serves until killed.
 *   qb_bench rtt NAME SIZE COUNT
 *       COUNT round trips (qb_ipcc_sendv_recv) of SIZE payload bytes
 *       after COUNT/10 unmeasured ones; prints "rtt P50_NS P99_NS".
 *   qb_bench oneway NAME SIZE COUNT
 *       COUNT requests of id 2 (qb_ipcc_send, retried while the ring is
 *       full), an acknowledged id 3 every 256; prints "oneway MSGS_PER_S".
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <qb/qbdefs.h>
#include <qb/qbipcc.h>
#include <qb/qbipcs.h>
#include <qb/qbloop.h>

static qb_loop_t *loop;

static int32_t accept_fn(qb_ipcs_connection_t *c, uid_t u, gid_t g)
{
	(void)c; (void)u; (void)g;
	return 0;
}

static int32_t msg_fn(qb_ipcs_connection_t *c, void *data, size_t size)
{
	struct qb_ipc_request_header *h = data;
	struct qb_ipc_response_header r = { .id = h->id, .size = sizeof r, .error = 0 };
	size_t n = size > sizeof *h ? size - sizeof *h : 0;
	struct iovec iov[2] = { { &r, sizeof r }, { (char *)data + sizeof *h, n } };
	if (h->id == 1) {
		r.size = sizeof r + n;
		while (qb_ipcs_response_sendv(c, iov, 2) == -EAGAIN) usleep(10);
	} else if (h->id == 3) {
		while (qb_ipcs_response_sendv(c, iov, 1) == -EAGAIN) usleep(10);
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

static int serve(const char *name, const char *t)
{
	struct qb_ipcs_service_handlers sh = { .connection_accept = accept_fn, .msg_process = msg_fn };
	struct qb_ipcs_poll_handlers ph = { job_add, d_add, d_mod, d_del };
	qb_ipcs_service_t *s = qb_ipcs_create(name, 0, strcmp(t, "socket") ? QB_IPC_SHM : QB_IPC_SOCKET, &sh);
	if (!s) return 1;
	qb_ipcs_enforce_buffer_size(s, 65536 + 64);
	loop = qb_loop_create();
	qb_ipcs_poll_handlers_set(s, &ph);
	if (qb_ipcs_run(s)) return 1;
	printf("ready\n");
	fflush(stdout);
	qb_loop_run(loop);
	return 0;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static qb_ipcc_connection_t *dial(const char *name)
{
	int tries;
	for (tries = 0; tries < 500; tries++) {
		qb_ipcc_connection_t *c = qb_ipcc_connect(name, 65536 + 64);
		if (c) return c;
		usleep(10000);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	qb_ipcc_connection_t *c;
	static char req[1 << 17], resp[1 << 17];
	struct qb_ipc_request_header *h = (void *)req;
	size_t size;
	long count, i;
	if (argc >= 4 && !strcmp(argv[1], "server")) return serve(argv[2], argv[3]);
	if (argc < 5) return 2;
	size = strtoul(argv[3], NULL, 0);
	count = strtol(argv[4], NULL, 0);
	if (size > sizeof req - sizeof *h) return 2;
	c = dial(argv[2]);
	if (!c) { perror("qb_ipcc_connect"); return 1; }
	memset(req, 0x5a, sizeof req);
	if (!strcmp(argv[1], "rtt")) {
		uint64_t *t = calloc(count, sizeof *t);
		long warm = count / 10 + 1;
		struct iovec iov = { req, sizeof *h + size };
		h->id = 1;
		h->size = sizeof *h + size;
		for (i = -warm; i < count; i++) {
			uint64_t t0 = now_ns();
			ssize_t r;
			/* EAGAIN: the ring still holds the last request (a libqb
			 * server reclaims it after answering); nothing was sent. */
			while ((r = qb_ipcc_sendv_recv(c, &iov, 1, resp, sizeof resp, 10000)) == -EAGAIN) {}
			if (r != (ssize_t)(sizeof(struct qb_ipc_response_header) + size)) {
				fprintf(stderr, "round trip %ld: %zd\n", i, r);
				return 1;
			}
			if (i >= 0) t[i] = now_ns() - t0;
		}
		qsort(t, count, sizeof *t, cmp);
		printf("rtt %llu %llu\n", (unsigned long long)t[count / 2],
		       (unsigned long long)t[count * 99 / 100]);
	} else {
		struct qb_ipc_request_header ack = { .id = 3, .size = sizeof ack };
		struct iovec aiov = { &ack, sizeof ack };
		uint64_t t0 = 0;
		long warm = count / 10 + 1;
		h->id = 2;
		h->size = sizeof *h + size;
		for (i = -warm; i < count; i++) {
			ssize_t r;
			if (i == 0) t0 = now_ns();
			while ((r = qb_ipcc_send(c, req, h->size)) == -EAGAIN) {}
			if (r < 0) { fprintf(stderr, "send %ld: %zd\n", i, r); return 1; }
			if ((i + warm) % 256 == 255) {
				while ((r = qb_ipcc_sendv_recv(c, &aiov, 1, resp, sizeof resp, 10000)) == -EAGAIN) {}
				if (r < 0) { fprintf(stderr, "ack %ld: %zd\n", i, r); return 1; }
			}
		}
		{
			ssize_t r;
			while ((r = qb_ipcc_sendv_recv(c, &aiov, 1, resp, sizeof resp, 10000)) == -EAGAIN) {}
			double s = (now_ns() - t0) / 1e9;
			if (r < 0) return 1;
			printf("oneway %.0f\n", count / s);
		}
	}
	qb_ipcc_disconnect(c);
	return 0;
}
