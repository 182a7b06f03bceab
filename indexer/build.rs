//! `sqlx::migrate!` embeds `migrations/` at compile time but does not tell
//! cargo so: without this, a new migration is left out until some source
//! file of this crate changes.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
