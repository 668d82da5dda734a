/* Tries to read files outside its task folder. Prints OPENED <path> and the first line for
 * any it could open (the sandbox must make that impossible), DENIED <path> otherwise.
 * Exit 0 when everything was denied, 9 when anything outside could be read. */
#include <stdio.h>
int main(int argc, char **argv) {
    const char *paths[] = {"/etc/passwd", "../secret.txt", "/task/../secret.txt", "/secret.txt", "/proc/self/environ", argc > 1 ? argv[1] : "/tmp"};
    int leaked = 0;
    for (unsigned i = 0; i < sizeof paths / sizeof *paths; i++) {
        FILE *f = fopen(paths[i], "r");
        if (f) {
            char line[256] = {0};
            fgets(line, sizeof line, f);
            printf("OPENED %s %s\n", paths[i], line);
            fclose(f); leaked++;
        } else printf("DENIED %s\n", paths[i]);
    }
    return leaked ? 9 : 0;
}
