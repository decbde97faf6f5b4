/*
 * check.h: the smallest test harness that reports like the rest of `make
 * test`: one line per check, and "passed failed" counts into the file named
 * by argv[1], which the Makefile sums into the final line.
 */
#ifndef TIDE_CHECK_H
#define TIDE_CHECK_H
#include <stdio.h>
#include <string.h>

/* A case passes when every CHECK in it holds; cases are what we count. */
static int check_passed, check_failed, case_open, case_failed;
static const char *check_case = "";

static void check_close_case(void) {
    if (!case_open) return;
    if (case_failed) check_failed++;
    else {
        check_passed++;
        printf("ok - %s\n", check_case);
    }
    fflush(stdout); /* a crash later must not lose the lines before it */
    case_open = case_failed = 0;
}

#define CASE(name) (check_close_case(), check_case = (name), case_open = 1)
#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            case_failed = 1;                                                     \
            printf("FAIL - %s: %s (%s:%d)\n", check_case, #cond, __FILE__, __LINE__); \
        }                                                                        \
    } while (0)

static int check_report(const char *counts_path) {
    check_close_case();
    printf("%s: %d cases passed, %d failed\n", __BASE_FILE__, check_passed, check_failed);
    if (counts_path) {
        FILE *f = fopen(counts_path, "w");
        if (f) {
            fprintf(f, "%d %d\n", check_passed, check_failed);
            fclose(f);
        }
    }
    return check_failed ? 1 : 0;
}

#endif
