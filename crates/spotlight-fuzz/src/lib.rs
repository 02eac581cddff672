//! Fuzzing the loaders of untrusted files on stable Rust: [`targets`] (one function per loader,
//! shared with the cargo-fuzz project in `fuzz/`), a seeded [`mutate`] mutator, and a [`run`]
//! loop over a corpus with the invariants of the loaders:
//!
//! - any input gives `Ok` or a typed error: a panic is a crash;
//! - no single allocation beyond [`ALLOC_CAP`] ([`CappedAlloc`], installed by the binary and the
//!   test): the process aborts, the input saved first;
//! - no hang: an input running longer than [`HANG`] is saved and the process aborts (a watchdog
//!   thread); one slower than [`SLOW`] counts as a failure.
//!
//! No coverage instrumentation on stable: an input is kept in the corpus when it makes a target
//! answer something it has not answered before (a new error message, with numbers blanked) —
//! a coarse stand-in for new code reached. `fuzz/` runs the same targets under libFuzzer.

pub mod alloc;
pub mod mutate;
pub mod run;
pub mod targets;

pub use alloc::{CappedAlloc, ALLOC_CAP};
pub use run::{run, Options, Stats, HANG, SLOW};
pub use targets::{Target, TARGETS};
