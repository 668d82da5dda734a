/* test-run: run assertions and report pass/fail counts.
 * usage: test-run CASES
 * Each line of CASES: "OP A B EXPECTED" with OP one of add, mul, fib (B ignored), gcd, pow.
 * Prints each failure and finally {"passed":P,"failed":F}. Exit 0 when F == 0, else 1. */
#include <stdio.h>
#include <string.h>
#include "chimera.h"

static long long fib(long long n) { long long a = 0, b = 1; while (n-- > 0) { long long t = a + b; a = b; b = t; } return a; }
static long long gcd(long long a, long long b) { while (b) { long long t = a % b; a = b; b = t; } return a < 0 ? -a : a; }
static long long ipow(long long a, long long b) { long long r = 1; while (b-- > 0) r *= a; return r; }

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: test-run CASES\n"); return 64; }
    FILE *f = fopen(argv[1], "r");
    if (!f) { perror(argv[1]); return 66; }
    char op[16]; long long a, b, want; int passed = 0, failed = 0, line = 0;
    char buf[256];
    while (fgets(buf, sizeof buf, f)) {
        line++;
        if (buf[0] == '#' || buf[0] == '\n') continue;
        if (sscanf(buf, "%15s %lld %lld %lld", op, &a, &b, &want) != 4) { printf("line %d: malformed\n", line); failed++; continue; }
        long long got;
        if (!strcmp(op, "add")) got = a + b;
        else if (!strcmp(op, "mul")) got = a * b;
        else if (!strcmp(op, "fib")) got = fib(a);
        else if (!strcmp(op, "gcd")) got = gcd(a, b);
        else if (!strcmp(op, "pow")) got = ipow(a, b);
        else { printf("line %d: unknown op %s\n", line, op); failed++; continue; }
        if (got == want) passed++;
        else { failed++; printf("line %d: %s %lld %lld: expected %lld, got %lld\n", line, op, a, b, want, got); }
    }
    fclose(f);
    chimera_progress(100);
    printf("{\"passed\":%d,\"failed\":%d}\n", passed, failed);
    return failed ? 1 : 0;
}
