//! Compiles the PostgreSQL run of the API tests (`tests/api_postgres.rs`) only when a test
//! database is configured.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(sessiond_test_postgres)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=SESSIOND_TEST_DATABASE_URL");
    if std::env::var("SESSIOND_TEST_DATABASE_URL").is_ok_and(|u| !u.trim().is_empty()) {
        println!("cargo::rustc-cfg=sessiond_test_postgres");
    }
}
