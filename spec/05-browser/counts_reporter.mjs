// counts_reporter.mjs: a node --test reporter that writes "passed failed" (one
// line, the format of build/test-results/*.counts) so `make test` can add the
// browser tests to its final "N passed, N failed" line. Test code only.
//
//   node --test --test-reporter=spec --test-reporter-destination=stdout \
//        --test-reporter=./counts_reporter.mjs --test-reporter-destination=OUT.counts
//
// Tests are counted, suites are not; a file that fails to load (a missing
// browser, a syntax error) counts as one failure, never as zero tests.
export default async function* countsReporter(source) {
  let passed = 0;
  let failed = 0;
  for await (const event of source) {
    if (event.type !== "test:pass" && event.type !== "test:fail") continue;
    const d = event.data;
    if (d.details && d.details.type === "suite") continue;
    if (d.skip || d.todo) continue;
    if (event.type === "test:pass") passed++;
    else failed++;
  }
  yield `${passed} ${failed}\n`;
}
