//! Building blocks of the `nnp` command line that are worth testing on their own.

pub mod demo;
pub mod inspect;
