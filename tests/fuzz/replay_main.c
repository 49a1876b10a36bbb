/*
 * replay_main.c - runs a libFuzzer target over every file of a corpus
 * directory, so fuzz corpora replay as ordinary tests (and under the
 * sanitizers in CI). Build the same target with clang -fsanitize=fuzzer to
 * fuzz for real (see README, "Fuzzing").
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REPLAY_MAX_INPUT (1024 * 1024)

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    DIR *d = opendir(argv[1]);
    if (d == NULL) {
        fprintf(stderr, "cannot open %s\n", argv[1]);
        return 1;
    }
    uint8_t *buf = malloc(REPLAY_MAX_INPUT);
    if (buf == NULL)
        return 1;
    size_t count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", argv[1], e->d_name);
        FILE *f = fopen(path, "rb");
        if (f == NULL)
            continue;
        size_t n = fread(buf, 1, REPLAY_MAX_INPUT, f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, n);
        count++;
    }
    closedir(d);
    free(buf);
    printf("replayed %zu inputs from %s\n", count, argv[1]);
    return count > 0 ? 0 : 1;
}
