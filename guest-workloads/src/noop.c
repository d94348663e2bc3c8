/* noop: an empty trial; the harness's own cost per trial (process start, SSH, parsing). */
#include "common.h"

#include <stdio.h>

int main(int argc, char **argv)
{
	struct common_opts common;
	struct usage_snap before, after;
	struct jbuf j;
	prog = "noop";
	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_args(argc, argv, NULL, 0, &common, "");
	for (long t = 0; t < common.warmup + common.trials; t++) {
		usage_take(&before);
		double t0 = now_us();
		double t1 = now_us();
		usage_take(&after);
		trial_header(&j, t, t < common.warmup);
		j_json(&j, "params", "{}");
		j_open(&j, "metrics");
		j_metric(&j, "noop_ns", (t1 - t0) * 1e3, "ns");
		j_close(&j);
		j_rusage(&j, &before, &after);
		j_json(&j, "info", "{}");
		j_end(&j);
	}
	return 0;
}
