/* fork-dirty: fork() latency of a process with N dirty anonymous 4 KiB pages, spread so that
 * exactly K PTEs are populated in each page-table page (each 2 MiB-aligned span of 512 pages
 * gets K dirty pages), i.e. N/K page-table pages. The layout is checked against VmPTE. */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define SPAN_PAGES 512L
#define SPAN_BYTES (SPAN_PAGES * (long)PAGE)

struct layout {
	long pages, per_table, spans;
	char *base;
};

static char *page_at(const struct layout *l, long i)
{
	long span = i / l->per_table, slot = i % l->per_table;
	long stride = SPAN_PAGES / l->per_table; /* spread the K pages over the span */
	return l->base + span * SPAN_BYTES + slot * stride * (long)PAGE;
}

static void dirty_all(const struct layout *l, char value)
{
	for (long i = 0; i < l->pages; i++)
		*(volatile char *)page_at(l, i) = value;
}

static double child_cow_us(const struct layout *l)
{
	double t0 = now_us();
	dirty_all(l, 7);
	return now_us() - t0;
}

static int one_trial(const struct layout *l, long trial, int warmup, int cow,
		     const char *params, const char *info)
{
	int fds[2];
	double cow_us = 0;
	struct usage_snap before, after;
	struct jbuf j;

	dirty_all(l, (char)trial);
	if (cow && pipe(fds) != 0) {
		emit_note("error", "pipe failed");
		return EXIT_FAILED;
	}
	usage_take(&before);
	double t0 = now_us();
	pid_t pid = fork();
	double t1 = now_us();
	if (pid < 0) {
		emit_note("error", "fork failed");
		return EXIT_FAILED;
	}
	if (pid == 0) {
		if (cow) {
			double us = child_cow_us(l);
			if (write(fds[1], &us, sizeof(us)) != sizeof(us))
				_exit(1);
		}
		_exit(0);
	}
	int status;
	if (waitpid(pid, &status, 0) != pid) {
		emit_note("error", "waitpid failed");
		return EXIT_FAILED;
	}
	double t2 = now_us();
	usage_take(&after);
	if (cow) {
		if (read(fds[0], &cow_us, sizeof(cow_us)) != sizeof(cow_us))
			cow_us = -1;
		close(fds[0]);
		close(fds[1]);
	}
	trial_header(&j, trial, warmup);
	j_json(&j, "params", params);
	j_open(&j, "metrics");
	j_metric(&j, "fork_us", t1 - t0, "us");
	j_metric(&j, "fork_wait_us", t2 - t0, "us");
	if (cow)
		j_metric(&j, "cow_us", cow_us, "us");
	j_close(&j);
	j_rusage(&j, &before, &after);
	j_json(&j, "info", info);
	j_end(&j);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : EXIT_FAILED;
}

int main(int argc, char **argv)
{
	struct common_opts common;
	long pages = 0, per_table = 512;
	int cow = 0;
	struct opt opts[] = {
		{"pages", OPT_LONG, &pages, 1, 0},
		{"ptes-per-table", OPT_LONG, &per_table, 0, 0},
		{"cow", OPT_FLAG, &cow, 0, 0},
	};
	prog = "fork-dirty";
	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_args(argc, argv, opts, 3, &common,
		   "--pages N [--ptes-per-table K (1..512)] [--cow]");
	require_range("pages", pages, 1, 1L << 26);
	require_range("ptes-per-table", per_table, 1, 512);

	struct layout l = {pages, per_table, (pages + per_table - 1) / per_table, NULL};
	long pte_before = vm_pte_kb();
	l.base = map_anon((size_t)(l.spans * SPAN_BYTES), (size_t)SPAN_BYTES);
	if (!l.base) {
		emit_note("error", "cannot map %ld bytes", l.spans * SPAN_BYTES);
		return EXIT_FAILED;
	}
	/* 4 KiB PTEs are the point: a THP would hide the page-table pages we count. */
	madvise(l.base, (size_t)(l.spans * SPAN_BYTES), MADV_NOHUGEPAGE);
	dirty_all(&l, 1);
	long pte_after = vm_pte_kb();
	long measured = (pte_after - pte_before) / 4;
	long slack = l.spans / 20 > 4 ? l.spans / 20 : 4;
	int layout_ok = pte_before >= 0 && labs(measured - l.spans) <= slack;

	char params[256], info[512];
	snprintf(params, sizeof(params),
		 "{\"pages\":%ld,\"ptes_per_table\":%ld,\"cow\":%s}", pages, per_table,
		 cow ? "true" : "false");
	snprintf(info, sizeof(info),
		 "{\"pt_pages_expected\":%ld,\"vmpte_kb_before\":%ld,\"vmpte_kb_after\":%ld,"
		 "\"pt_pages_measured\":%ld,\"layout_ok\":%s,\"region_bytes\":%ld}",
		 l.spans, pte_before, pte_after, measured, layout_ok ? "true" : "false",
		 l.spans * SPAN_BYTES);
	if (!layout_ok) {
		emit_note("error", "layout check failed: %ld page-table pages measured, %ld expected",
			  measured, l.spans);
		return EXIT_FAILED;
	}
	int rc = 0;
	for (long t = 0; t < common.warmup + common.trials && rc == 0; t++)
		rc = one_trial(&l, t, t < common.warmup, cow, params, info);
	return rc;
}
