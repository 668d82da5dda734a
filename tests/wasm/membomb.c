/* A memory bomb: allocates and touches 1 MiB blocks (chained, so nothing is optimised away)
 * until malloc fails, then aborts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
void *volatile head;
int main(void) {
    for (long n = 0;; n++) {
        void **p = malloc(1 << 20);
        if (!p) { fprintf(stderr, "malloc failed after %ld MiB\n", n); abort(); }
        memset(p, 1, 1 << 20);
        *p = head;
        head = p;
    }
}
