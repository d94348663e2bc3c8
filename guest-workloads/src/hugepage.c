/* hugepage: a region of S bytes backed by hugetlbfs pages (2 MiB / 1 GiB), THP or small pages;
 * time populate, fork with the region mapped, and munmap. A missing pool is a skip (exit 3). */
#include "common.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif

struct backing {
	const char *name;
	long page_bytes; /* the unit the region must be a multiple of */
	int hugetlb;
};

static const struct backing BACKINGS[] = {
	{"hugetlb-2m", 2L << 20, 1}, {"hugetlb-1g", 1L << 30, 1},
	{"thp", 2L << 20, 0}, {"small", (long)PAGE, 0},
};

static void pool_state(const struct backing *b, long *nr, long *free_pages)
{
	char path[128];
	snprintf(path, sizeof(path), "/sys/kernel/mm/hugepages/hugepages-%ldkB/nr_hugepages",
		 b->page_bytes >> 10);
	*nr = read_long_file(path, -1);
	snprintf(path, sizeof(path), "/sys/kernel/mm/hugepages/hugepages-%ldkB/free_hugepages",
		 b->page_bytes >> 10);
	*free_pages = read_long_file(path, -1);
}

static long anon_huge_kb(void)
{
	FILE *f = fopen("/proc/self/smaps_rollup", "r");
	char line[256];
	long kb = -1;
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static char *map_region(const struct backing *b, long size)
{
	if (b->hugetlb) {
		int shift = b->page_bytes == (1L << 30) ? 30 : 21;
		void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | (shift << MAP_HUGE_SHIFT),
			       -1, 0);
		return p == MAP_FAILED ? NULL : p;
	}
	char *p = map_anon((size_t)size, 2UL << 20);
	if (p)
		madvise(p, (size_t)size, strcmp(b->name, "thp") == 0 ? MADV_HUGEPAGE
								   : MADV_NOHUGEPAGE);
	return p;
}

static int one_trial(const struct backing *b, long size, long t, int warmup, const char *params)
{
	struct usage_snap before, after;
	struct jbuf j;
	long nr, free_pages;
	char info[256];
	usage_take(&before);
	double t0 = now_us();
	char *p = map_region(b, size);
	if (!p) {
		pool_state(b, &nr, &free_pages);
		emit_note("skip", "cannot map %ld bytes of %s (%s); pool: %ld pages, %ld free",
			  size, b->name, strerror(errno), nr, free_pages);
		return EXIT_SKIP;
	}
	for (long off = 0; off < size; off += (long)PAGE)
		p[off] = 1;
	double t1 = now_us();
	/* outside every window: walking smaps costs differently per backing, the compared variable */
	long huge_kb = anon_huge_kb();
	double t_fork = now_us();
	pid_t pid = fork();
	double t2 = now_us();
	if (pid == 0)
		_exit(0);
	if (pid < 0) {
		emit_note("error", "fork failed: %s", strerror(errno));
		return EXIT_FAILED;
	}
	int status;
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		emit_note("error", "the forked child did not exit cleanly");
		return EXIT_FAILED;
	}
	double t3 = now_us();
	if (munmap(p, (size_t)size) != 0) {
		emit_note("error", "munmap failed: %s", strerror(errno));
		return EXIT_FAILED;
	}
	double t4 = now_us();
	usage_take(&after);
	pool_state(b, &nr, &free_pages);
	snprintf(info, sizeof(info),
		 "{\"pool_pages\":%ld,\"pool_free\":%ld,\"anon_huge_kb\":%ld}", nr, free_pages,
		 huge_kb);
	trial_header(&j, t, warmup);
	j_json(&j, "params", params);
	j_open(&j, "metrics");
	j_metric(&j, "populate_us", t1 - t0, "us");
	j_metric(&j, "fork_us", t2 - t_fork, "us");
	j_metric(&j, "fork_wait_us", t3 - t_fork, "us");
	j_metric(&j, "munmap_us", t4 - t3, "us");
	j_close(&j);
	j_rusage(&j, &before, &after);
	j_json(&j, "info", info);
	j_end(&j);
	return 0;
}

int main(int argc, char **argv)
{
	struct common_opts common;
	long size = 0;
	const char *name = "hugetlb-2m";
	const struct backing *b = NULL;
	struct opt opts[] = {
		{"size", OPT_SIZE, &size, 1, 0},
		{"backing", OPT_STRING, &name, 0, 0},
	};
	prog = "hugepage";
	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_args(argc, argv, opts, 2, &common,
		   "--size BYTES (e.g. 64M, 1G) [--backing hugetlb-2m|hugetlb-1g|thp|small]");
	for (size_t i = 0; i < sizeof(BACKINGS) / sizeof(BACKINGS[0]); i++)
		if (strcmp(BACKINGS[i].name, name) == 0)
			b = &BACKINGS[i];
	if (!b)
		usage_error("--backing must be hugetlb-2m, hugetlb-1g, thp or small, got '%s'", name);
	if (size <= 0 || size % b->page_bytes)
		usage_error("--size must be a positive multiple of %ld bytes for %s", b->page_bytes,
			    b->name);
	long nr, free_pages;
	pool_state(b, &nr, &free_pages);
	if (b->hugetlb && free_pages < size / b->page_bytes) {
		emit_note("skip", "%s needs %ld free huge pages, the pool has %ld of %ld free",
			  b->name, size / b->page_bytes, free_pages < 0 ? 0 : free_pages,
			  nr < 0 ? 0 : nr);
		return EXIT_SKIP;
	}
	char params[128];
	snprintf(params, sizeof(params), "{\"size\":%ld,\"backing\":\"%s\"}", size, b->name);
	for (long t = 0; t < common.warmup + common.trials; t++) {
		int rc = one_trial(b, size, t, t < common.warmup, params);
		if (rc)
			return rc;
	}
	return 0;
}
