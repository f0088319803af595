//! Building blocks of the `nnp` command line that are worth testing on their own.

pub mod inspect;
