/* dirtier: writes W pages round-robin at a target rate (or flat out) for D seconds and
 * reports the achieved pages/s per interval: the guest load of dirty-logging experiments. */
#include "common.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static void sleep_until_us(double target)
{
	double now = now_us();
	if (target <= now)
		return;
	struct timespec ts = {(time_t)((target - now) / 1e6),
			      (long)((long)(target - now) % 1000000) * 1000};
	nanosleep(&ts, NULL);
}

/* wall_us (CLOCK_REALTIME) lets the host line intervals up with what it did meanwhile (dirty
 * logging on, a migration), after measuring the guest's clock offset. */
static void interval_line(double t_s, long pages, double seconds)
{
	struct jbuf j;
	struct timespec wall;
	clock_gettime(CLOCK_REALTIME, &wall);
	j_begin(&j, "interval");
	j_double(&j, "t_s", t_s);
	j_long(&j, "wall_us", (long)wall.tv_sec * 1000000L + wall.tv_nsec / 1000L);
	j_long(&j, "pages", pages);
	j_double(&j, "pages_per_s", (double)pages / seconds);
	j_end(&j);
}

/* One trial: returns pages written; rate 0 means flat out. */
static long dirty_for(char *region, long pages, long rate, double duration, double interval)
{
	double start = now_us(), next_report = start + interval * 1e6;
	double end = start + duration * 1e6, last = start;
	long written = 0, since = 0, batch = rate > 1000 ? rate / 1000 : 1;
	while (now_us() < end) {
		for (long b = 0; b < batch; b++, written++, since++)
			region[(written % pages) * (long)PAGE] = (char)written;
		if (rate > 0)
			sleep_until_us(start + (double)written * 1e6 / (double)rate);
		double now = now_us();
		if (now >= next_report) {
			interval_line((now - start) / 1e6, since, (now - last) / 1e6);
			since = 0, last = now, next_report += interval * 1e6;
		}
	}
	return written;
}

int main(int argc, char **argv)
{
	struct common_opts common;
	long pages = 0, rate = 0;
	double duration = 5, interval = 1;
	struct opt opts[] = {
		{"pages", OPT_LONG, &pages, 1, 0}, {"rate", OPT_LONG, &rate, 0, 0},
		{"duration", OPT_DOUBLE, &duration, 0, 0}, {"interval", OPT_DOUBLE, &interval, 0, 0},
	};
	prog = "dirtier";
	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_args(argc, argv, opts, 4, &common,
		   "--pages W [--rate PAGES_PER_S (0 = flat out)] [--duration S] [--interval S]");
	require_range("pages", pages, 1, 1L << 26);
	require_range("rate", rate, 0, 1L << 40);
	if (!(duration > 0 && duration < 86400) || !(interval > 0 && interval <= duration))
		usage_error("need 0 < --interval <= --duration < 86400 seconds");
	char *region = map_anon((size_t)pages * PAGE, PAGE);
	if (!region) {
		emit_note("error", "cannot map %ld pages", pages);
		return EXIT_FAILED;
	}
	memset(region, 0, (size_t)pages * PAGE);
	char params[200];
	snprintf(params, sizeof(params),
		 "{\"pages\":%ld,\"rate\":%ld,\"duration\":%g,\"interval\":%g}", pages, rate,
		 duration, interval);
	for (long t = 0; t < common.warmup + common.trials; t++) {
		struct usage_snap before, after;
		struct jbuf j;
		usage_take(&before);
		double t0 = now_us();
		long written = dirty_for(region, pages, rate, duration, interval);
		double seconds = (now_us() - t0) / 1e6;
		usage_take(&after);
		trial_header(&j, t, t < common.warmup);
		j_json(&j, "params", params);
		j_open(&j, "metrics");
		j_metric(&j, "pages_per_s", (double)written / seconds, "pages/s");
		j_metric(&j, "pages_written", (double)written, "count");
		j_metric(&j, "duration_s", seconds, "s");
		j_close(&j);
		j_rusage(&j, &before, &after);
		j_json(&j, "info", "{}");
		j_end(&j);
	}
	return 0;
}
