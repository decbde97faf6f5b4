/*
 * gen: the benchmark's record generator. Writes COUNT lines of LENGTH random
 * lowercase letters to stdout, for `tide produce` to load. With 100 letters
 * about 98% of the lines contain an 'a' ((25/26)^100 is 2%), so the text
 * transformer keeps most of them.
 *
 * Given SEP, each line starts with a distinct key (the line number) and SEP,
 * for `tide produce --key-separator SEP`. Keys are what spread the records
 * evenly over the partitions: null-key records go through the sticky
 * partitioner, which fills some partitions two or three times more than
 * others, and the mock broker silently drops the oldest records of a
 * partition past 5 MiB.
 *
 * The seed is fixed: two runs of the bench load the same bytes. It must never
 * read input or write anything but the lines; it is a data source, not a test.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* xorshift64*: tiny, fast, and plenty random for filler text. */
static uint64_t gen_state = 0x9e3779b97f4a7c15ULL;

static uint32_t gen_next(void)
{
    gen_state ^= gen_state >> 12;
    gen_state ^= gen_state << 25;
    gen_state ^= gen_state >> 27;
    return (uint32_t)((gen_state * 0x2545f4914f6cdd1dULL) >> 32);
}

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: gen COUNT LENGTH [SEP]\n");
        return 2;
    }
    long count = atol(argv[1]);
    long length = atol(argv[2]);
    const char *sep = argc == 4 ? argv[3] : NULL;
    if (count < 0 || length < 1 || length > 1 << 20) {
        fprintf(stderr, "gen: bad COUNT or LENGTH\n");
        return 2;
    }

    char *line = malloc((size_t)length + 1);
    static char out[1 << 16];
    if (!line || setvbuf(stdout, out, _IOFBF, sizeof out) != 0) {
        fprintf(stderr, "gen: out of memory\n");
        return 1;
    }
    line[length] = '\n';
    for (long i = 0; i < count; i++) {
        /* Multiply-shift maps 32 random bits onto 0..25 without a division. */
        for (long j = 0; j < length; j++)
            line[j] = (char)('a' + (((uint64_t)gen_next() * 26) >> 32));
        if (sep && printf("%ld%s", i, sep) < 0) {
            perror("gen: write");
            return 1;
        }
        if (fwrite(line, 1, (size_t)length + 1, stdout) != (size_t)length + 1) {
            perror("gen: write");
            return 1;
        }
    }
    if (fflush(stdout) != 0) {
        perror("gen: write");
        return 1;
    }
    free(line);
    return 0;
}
