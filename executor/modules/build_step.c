/* build-step: produce an artefact from input files.
 * usage: build-step OUT INPUT...
 * Writes OUT: a small archive (for each input: "== name size fnv1a\n" then its bytes), and
 * prints {"artefact":"OUT","inputs":N,"bytes":B,"fnv1a":"..."} with the hash over all inputs. */
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include "chimera.h"

static uint32_t fnv(uint32_t h, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 16777619u; }
    return h;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: build-step OUT INPUT...\n"); return 64; }
    FILE *out = fopen(argv[1], "wb");
    if (!out) { perror(argv[1]); return 73; }
    uint32_t total = 2166136261u; long bytes = 0;
    static unsigned char buf[1 << 16];
    for (int i = 2; i < argc; i++) {
        FILE *in = fopen(argv[i], "rb");
        if (!in) { perror(argv[i]); fclose(out); return 66; }
        fseek(in, 0, SEEK_END); long n = ftell(in); fseek(in, 0, SEEK_SET);
        unsigned char *data = malloc(n ? n : 1);
        if (!data || fread(data, 1, n, in) != (size_t)n) { fprintf(stderr, "read %s failed\n", argv[i]); return 74; }
        fclose(in);
        uint32_t h = fnv(2166136261u, data, n);
        fprintf(out, "== %s %ld %08x\n", argv[i], n, h);
        fwrite(data, 1, n, out);
        total = fnv(total, data, n); bytes += n;
        free(data);
        chimera_progress((i - 1) * 100 / (argc - 2));
    }
    if (fclose(out) != 0) { perror("close"); return 74; }
    printf("{\"artefact\":\"%s\",\"inputs\":%d,\"bytes\":%ld,\"fnv1a\":\"%08x\"}\n", argv[1], argc - 2, bytes, total);
    return 0;
}
