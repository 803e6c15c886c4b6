//! The binary's interface: `--help` explains, bad values are named, secrets are not printed.

use std::process::{Command, Output};

fn generator(args: &[&str]) -> Output {
    generator_with_env(args, &[])
}

fn generator_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leadstream-generator"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("run the generator")
}

#[test]
fn help_explains_modes_seed_and_truth() {
    let out = generator(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--seed",
        "--leads",
        "--continuous",
        "--truth",
        "--dry-run",
        "byte-identical",
        "LEADSTREAM_",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}:\n{text}");
    }
}

#[test]
fn invalid_values_are_named() {
    let out = generator(&["--rate", "0", "--print-config"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("traffic.rate"), "{err}");
    let out = generator(&["--start", "last tuesday", "--print-config"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("traffic.start"));
    let out = generator(&["--config", "does/not/exist.yaml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn print_config_redacts_the_sasl_password() {
    let out = generator_with_env(
        &["--print-config"],
        &[("LEADSTREAM_KAFKA__SASL_PASSWORD", "hunter2-secret")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("hunter2-secret"), "{text}");
    assert!(text.contains("sasl_password"), "{text}");
}
