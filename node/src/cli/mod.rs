//! The binary's subcommands for scripts: they answer from the same code the
//! node runs, so that no script keeps a second copy of the domain (region
//! files, the CQL protocol). Part of the `node` binary, not of the library.

pub mod cql;
pub mod regions;
