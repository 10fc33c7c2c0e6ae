//! The integration tests: one crate, one binary, one harness (`support`),
//! one module per area. They run the tool for real: the xtask binary as a
//! user runs it, or the pipeline's entry point in process, against real
//! virtualenvs, ELF files built with gcc, Nix's hasher and HTTP over
//! loopback.
//!
//! `confinement` re-runs its cases inside `../shared/tools/sandbox` (a
//! throwaway root on tmpfs): were the code wrong, they could touch files
//! outside their folder.

mod support;

mod assemble;
mod cache;
mod cli;
mod concurrency;
mod confinement;
mod deploy;
mod docs;
mod elf;
mod fetch;
mod image;
mod incremental;
mod links;
mod nar;
mod network;
mod planning;
mod reconcile;
mod share;
mod state;
mod unpack;
mod update;
mod watch;
