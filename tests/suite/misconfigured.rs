//! A store that is set up wrong, as an operator meets it: no credentials, credentials the
//! server refuses or that lack permission, a bucket that does not exist, an endpoint nothing
//! answers on. Each must end in one sentence on stderr that names what to change, a non-zero
//! exit, and the same sentence from `mltrack doctor`; never the SDK's multi-kilobyte warnings,
//! and never a secret. The metadata service is never asked (AWS_EC2_METADATA_DISABLED).

use crate::common;

use common::s3::{Fault, SECRET_KEY, Target};
use common::{Kind, TestStore};

/// Runs `args` with the store's environment changed by `setup`; returns (stderr, doctor's
/// stdout), asserting that both failed.
fn fails_with(
    t: &TestStore,
    setup: impl Fn(&mut std::process::Command),
    args: &[&str],
) -> (String, String) {
    let mut cmd = t.cmd();
    setup(&mut cmd);
    let out = cmd.args(args).output().expect("run mltrack");
    assert!(!out.status.success(), "mltrack {args:?} succeeded");
    let stderr = String::from_utf8(out.stderr).expect("utf-8 stderr");
    let mut cmd = t.cmd();
    setup(&mut cmd);
    let doctor = cmd.arg("doctor").output().expect("run mltrack doctor");
    assert!(!doctor.status.success(), "doctor passed");
    let doctor = String::from_utf8(doctor.stdout).expect("utf-8 stdout");
    for text in [&stderr, &doctor] {
        assert!(!text.contains(SECRET_KEY), "a secret in the output: {text}");
    }
    (stderr, doctor)
}

/// One line, the error, that contains every one of `words`.
fn one_sentence(stderr: &str, words: &[&str]) {
    let lines: Vec<&str> = stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "more than the error on stderr:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for w in words {
        assert!(lines[0].contains(w), "{w:?} missing from: {stderr}");
    }
}

fn doctor_names(doctor: &str, words: &[&str]) {
    let line = doctor
        .lines()
        .find(|l| l.starts_with("fail  store"))
        .unwrap_or_else(|| panic!("no failed store check:\n{doctor}"));
    for w in words {
        assert!(line.contains(w), "{w:?} missing from doctor's: {line}");
    }
}

#[test]
fn no_credentials_says_how_to_give_them() {
    let t = TestStore::new(Kind::S3);
    let (stderr, doctor) = fails_with(
        &t,
        |c| {
            c.env_remove("AWS_ACCESS_KEY_ID")
                .env_remove("AWS_SECRET_ACCESS_KEY")
                .env_remove("AWS_SESSION_TOKEN");
        },
        &["run", "list"],
    );
    let fix = [
        "no AWS credentials were found",
        "AWS_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "instance role",
    ];
    one_sentence(&stderr, &fix);
    doctor_names(&doctor, &fix);
}

#[test]
fn refused_credentials_name_the_variables() {
    let t = TestStore::new(Kind::S3);
    let (stderr, doctor) = fails_with(
        &t,
        |c| {
            c.env("AWS_SECRET_ACCESS_KEY", "not-the-secret");
        },
        &["run", "list"],
    );
    let fix = ["refused the credentials", "AWS_SECRET_ACCESS_KEY"];
    one_sentence(&stderr, &fix);
    doctor_names(&doctor, &fix);
    let (stderr, _) = fails_with(
        &t,
        |c| {
            c.env("AWS_ACCESS_KEY_ID", "nobody");
        },
        &["run", "list"],
    );
    one_sentence(&stderr, &["refused the credentials", "AWS_ACCESS_KEY_ID"]);
}

#[test]
fn access_denied_says_the_credentials_lack_permission() {
    let t = TestStore::new(Kind::S3);
    let f = t.file("x.bin", b"some data");
    t.server()
        .faults
        .inject(Target::Any, Fault::AccessDenied, 1);
    let stderr = t.fails(&["put", common::path_str(&f)]);
    one_sentence(&stderr, &["access denied", "permission", "AWS_PROFILE"]);
    t.server()
        .faults
        .inject(Target::Any, Fault::AccessDenied, 1);
    let doctor = String::from_utf8(t.run(&["doctor"]).stdout).expect("utf-8");
    doctor_names(&doctor, &["access denied"]);
}

#[test]
fn a_bucket_that_does_not_exist_is_named_as_such() {
    let t = TestStore::new(Kind::S3);
    let (stderr, doctor) = fails_with(
        &t,
        |c| {
            c.env("MLTRACK_STORE", "s3://no-such-bucket/ml");
        },
        &["run", "list"],
    );
    let fix = [
        "s3://no-such-bucket/ml",
        "the bucket does not exist",
        "MLTRACK_STORE",
    ];
    one_sentence(&stderr, &fix);
    doctor_names(&doctor, &fix);
}

#[test]
fn an_endpoint_nothing_answers_on_names_aws_endpoint_url() {
    let t = TestStore::new(Kind::S3);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let endpoint = format!("http://127.0.0.1:{closed}");
    let (stderr, doctor) = fails_with(
        &t,
        |c| {
            c.env("AWS_ENDPOINT_URL", &endpoint);
        },
        &["run", "list"],
    );
    let fix = [
        "cannot connect to the S3 endpoint",
        endpoint.as_str(),
        "connection refused",
        "AWS_ENDPOINT_URL",
    ];
    one_sentence(&stderr, &fix);
    doctor_names(&doctor, &fix);
}
