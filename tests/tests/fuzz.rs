//! The short run of the fuzzer in the test command (the 10M-input run is `scripts/bench.sh`'s):
//! no input panics the normalizer, the aggregator's decoder or its engine, and whatever the
//! collector accepts the aggregator reads.
#![allow(missing_docs)]

#[test]
fn mutated_inputs_never_panic_and_both_ends_agree() {
    let r = leadstream_tests::fuzz::run(60_000, 20261201);
    assert_eq!(r.inputs, 60_000);
    assert!(r.failures.is_empty(), "{:#?}", r.failures);
    // The mutations reach both verdicts and the engine, or the run tests little.
    assert!(
        r.accepted > 1000 && r.rejected > 1000 && r.decoded > 1000,
        "{r:?}"
    );
}
