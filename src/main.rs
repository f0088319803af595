//! The `nnp` command line.

fn main() {
    println!("nnp {}", env!("CARGO_PKG_VERSION"));
}
