/* compute: CPU-heavy work for benchmarks: counts the primes below N with a sieve, ROUNDS times.
 * usage: compute N [ROUNDS]    prints {"n":N,"primes":P,"rounds":R} */
#include <stdio.h>
#include <stdlib.h>
#include "chimera.h"

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    int rounds = argc > 2 ? atoi(argv[2]) : 1;
    if (n < 2 || rounds < 1) { fprintf(stderr, "bad arguments\n"); return 64; }
    unsigned char *composite = malloc(n);
    if (!composite) { fprintf(stderr, "no memory for %ld bytes\n", n); return 70; }
    long primes = 0;
    for (int r = 0; r < rounds; r++) {
        for (long i = 0; i < n; i++) composite[i] = 0;
        primes = 0;
        for (long i = 2; i < n; i++) {
            if (composite[i]) continue;
            primes++;
            for (long j = i * i; j < n && i < 46341; j += i) composite[j] = 1;
        }
        chimera_progress((r + 1) * 100 / rounds);
    }
    free(composite);
    printf("{\"n\":%ld,\"primes\":%ld,\"rounds\":%d}\n", n, primes, rounds);
    return 0;
}
