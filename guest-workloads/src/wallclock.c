/* wallclock: prints CLOCK_REALTIME in microseconds. The host brackets it with its own clock
 * to learn the guest's clock offset (busybox date has no sub-second format). */
#include "common.h"

#include <stdio.h>
#include <time.h>

int main(void)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	printf("%ld\n", (long)now.tv_sec * 1000000L + now.tv_nsec / 1000L);
	return 0;
}
