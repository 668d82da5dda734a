/* Writes 10 MB to stdout (and a little to stderr). */
#include <stdio.h>
#include <string.h>
int main(void) {
    static char line[1024];
    memset(line, 'x', sizeof line - 1);
    line[sizeof line - 2] = '\n';
    fprintf(stderr, "spewing\n");
    for (int i = 0; i < 10 * 1024; i++) fputs(line, stdout);
    return 0;
}
