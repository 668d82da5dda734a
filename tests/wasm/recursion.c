/* A recursion bomb: unbounded recursion with a frame on the (shadow) stack. */
#include <stdio.h>
static int depth(volatile int n) {
    volatile char frame[512];
    frame[n % 512] = (char)n;
    return depth(n + 1) + frame[0];
}
int main(void) { printf("%d\n", depth(0)); return 0; }
