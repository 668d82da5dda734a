/* data-check: validate a CSV file in the task folder.
 * usage: data-check FILE.csv
 * Rules: a header line; every row has as many fields as the header; no empty field;
 * a column whose header ends in "_num" holds a number. Prints one line per error (at most 20)
 * and finally a JSON summary line {"rows":N,"errors":E}. Exit 0 when E == 0, else 2. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "chimera.h"

#define MAXF 64
#define MAXLINE 65536

static int split(char *line, char **fields) {
    int n = 0;
    char *p = line;
    fields[n++] = p;
    for (; *p; p++) {
        if (*p == ',') { *p = 0; if (n < MAXF) fields[n++] = p + 1; else return -1; }
        else if (*p == '\n' || *p == '\r') { *p = 0; break; }
    }
    return n;
}

static int is_number(const char *s) {
    char *end;
    if (!*s) return 0;
    strtod(s, &end);
    return *end == 0;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: data-check FILE.csv\n"); return 64; }
    FILE *f = fopen(argv[1], "r");
    if (!f) { perror(argv[1]); return 66; }
    fseek(f, 0, SEEK_END); long size = ftell(f); fseek(f, 0, SEEK_SET);
    static char line[MAXLINE];
    char *fields[MAXF];
    int numeric[MAXF] = {0};
    if (!fgets(line, sizeof line, f)) { printf("{\"rows\":0,\"errors\":1,\"detail\":\"empty file\"}\n"); return 2; }
    int ncols = split(line, fields);
    for (int i = 0; i < ncols; i++) {
        size_t L = strlen(fields[i]);
        numeric[i] = L > 4 && strcmp(fields[i] + L - 4, "_num") == 0;
    }
    long rows = 0, errors = 0; int last_pct = 0;
    while (fgets(line, sizeof line, f)) {
        rows++;
        int n = split(line, fields);
        const char *why = NULL; int col = 0;
        if (n != ncols) why = "wrong number of fields";
        else for (col = 0; col < n && !why; col++) {
            if (!*fields[col]) why = "empty field";
            else if (numeric[col] && !is_number(fields[col])) why = "not a number";
        }
        if (why) { if (++errors <= 20) printf("row %ld: %s (column %d)\n", rows, why, col); }
        if (size > 0) {
            int pct = (int)(ftell(f) * 100 / size);
            if (pct >= last_pct + 25) { last_pct = pct; chimera_progress(pct); }
        }
    }
    fclose(f);
    printf("{\"rows\":%ld,\"errors\":%ld}\n", rows, errors);
    return errors ? 2 : 0;
}
