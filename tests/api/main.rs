//! Integration tests: the real application on a random port, real git repositories served by
//! `git daemon`, the real promtool.

mod helpers;

mod clone;
mod collection;
mod lifecycle;
mod ops;
mod postgres;
mod stream;
mod validation;
