//! End-to-end tests: the real `node` binary, started as a process on an
//! ephemeral loopback port, driven over real HTTP and websockets.
//!
//! One test binary (modules below) so the dependencies link once.

mod access;
mod bad_input;
mod cql;
mod crash;
mod dashboard;
mod failover;
mod flow;
mod fly;
mod keepalive;
mod mesh;
mod openapi;
mod overload;
mod rating_crash;
mod regions;
mod restart;
mod support;
