//! Integration tests: the real application on a random port, real git repositories served by
//! `git daemon`, the real promtool.

mod helpers;

mod cli;
mod clone;
mod corpus;
mod lifecycle;
mod ops;
mod scanning;
mod stream;
mod validation;
