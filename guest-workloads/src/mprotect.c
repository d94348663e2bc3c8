/* mprotect: cost of mprotect() RW->RO->RW over the first R pages of a populated region, and
 * the protection-fault round trip (write to a read-only page, SIGSEGV, restore, resume). */
#include "common.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

static char *fault_page;

static void on_segv(int sig, siginfo_t *info, void *ctx)
{
	(void)sig;
	(void)ctx;
	char *addr = (char *)((uintptr_t)info->si_addr & ~(uintptr_t)(PAGE - 1));
	if (addr != fault_page || mprotect(addr, PAGE, PROT_READ | PROT_WRITE) != 0)
		_exit(EXIT_FAILED); /* a real crash, not our fault: never loop */
}

static double prot_fault_ns(char *region, long iterations)
{
	double total = 0;
	for (long i = 0; i < iterations; i++) {
		fault_page = region;
		if (mprotect(region, PAGE, PROT_READ) != 0)
			return -1;
		double t0 = now_us();
		*(volatile char *)region = (char)i; /* faults, the handler restores RW */
		total += now_us() - t0;
	}
	return total * 1e3 / (double)iterations;
}

int main(int argc, char **argv)
{
	struct common_opts common;
	long pages = 0, range = 0, iterations = 100;
	struct opt opts[] = {
		{"pages", OPT_LONG, &pages, 1, 0},
		{"range-pages", OPT_LONG, &range, 0, 0},
		{"iterations", OPT_LONG, &iterations, 0, 0},
	};
	prog = "mprotect";
	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_args(argc, argv, opts, 3, &common,
		   "--pages N [--range-pages R (0 = whole region)] [--iterations I]");
	require_range("pages", pages, 1, 1L << 26);
	require_range("range-pages", range, 0, pages);
	require_range("iterations", iterations, 1, 10000000);
	long span = range ? range : pages;
	char *region = map_anon((size_t)pages * PAGE, PAGE);
	if (!region) {
		emit_note("error", "cannot map %ld pages", pages);
		return EXIT_FAILED;
	}
	/* 4 KiB PTEs, as the other workloads: the host's THP setting must not pick what is timed */
	madvise(region, (size_t)pages * PAGE, MADV_NOHUGEPAGE);
	memset(region, 1, (size_t)pages * PAGE);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_segv;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGSEGV, &sa, NULL);

	char params[160];
	snprintf(params, sizeof(params), "{\"pages\":%ld,\"range_pages\":%ld,\"iterations\":%ld}",
		 pages, range, iterations);
	for (long t = 0; t < common.warmup + common.trials; t++) {
		struct usage_snap before, after;
		struct jbuf j;
		double ro = 0, rw = 0;
		usage_take(&before);
		for (long i = 0; i < iterations; i++) {
			double t0 = now_us();
			int ro_rc = mprotect(region, (size_t)span * PAGE, PROT_READ);
			double t1 = now_us();
			int rw_rc = mprotect(region, (size_t)span * PAGE, PROT_READ | PROT_WRITE);
			rw += now_us() - t1;
			ro += t1 - t0;
			if (ro_rc || rw_rc) { /* a failed call is fast and would pass for a result */
				emit_note("error", "mprotect of %ld pages failed: %s", span,
					  strerror(errno));
				return EXIT_FAILED;
			}
		}
		double fault = prot_fault_ns(region, iterations);
		if (fault < 0) {
			emit_note("error", "mprotect before the fault failed: %s", strerror(errno));
			return EXIT_FAILED;
		}
		usage_take(&after);
		trial_header(&j, t, t < common.warmup);
		j_json(&j, "params", params);
		j_open(&j, "metrics");
		j_metric(&j, "mprotect_ro_ns", ro * 1e3 / (double)iterations, "ns");
		j_metric(&j, "mprotect_rw_ns", rw * 1e3 / (double)iterations, "ns");
		j_metric(&j, "prot_fault_ns", fault, "ns");
		j_close(&j);
		j_rusage(&j, &before, &after);
		j_json(&j, "info", "{}");
		j_end(&j);
	}
	return 0;
}
