//! `fuzz [INPUTS] [SEED]`: runs the structured mutation fuzzer of `leadstream_tests::fuzz` over
//! the normalizer and the aggregator's decoder (default 10 000 000 inputs, seed 1) and prints
//! the figures; exits 1 when an input panicked or broke the contract between the two.
#![allow(missing_docs)]

fn main() {
    let mut args = std::env::args().skip(1);
    let inputs: u64 = args
        .next()
        .map(|a| a.parse().expect("INPUTS must be a number"))
        .unwrap_or(10_000_000);
    let seed: u64 = args
        .next()
        .map(|a| a.parse().expect("SEED must be a number"))
        .unwrap_or(1);
    let r = leadstream_tests::fuzz::run(inputs, seed);
    let secs = r.elapsed.as_secs_f64();
    println!(
        "fuzz: {} inputs from {} seeds in {secs:.1} s ({:.0}/s): normalizer accepted {} and rejected {}; the aggregator decoded {} into its engine; {} failures",
        r.inputs,
        r.seeds,
        r.inputs as f64 / secs.max(1e-9),
        r.accepted,
        r.rejected,
        r.decoded,
        r.failures.len()
    );
    for f in &r.failures {
        println!("  {f}");
    }
    if !r.failures.is_empty() {
        std::process::exit(1);
    }
}
