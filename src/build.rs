// `sqlx::migrate!` embeds migrations/ at compile time, but cargo does not know it reads that
// directory: without this, a new migration file is left out of an incremental build (seen: the
// PostgreSQL 0008 trigger missing from a release binary built after it was added).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
