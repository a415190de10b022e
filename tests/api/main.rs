//! Integration tests: the real application on a random port, real git repositories served by
//! `git daemon`, the real promtool.

mod helpers;

mod clone;
mod lifecycle;
mod ops;
mod stream;
mod upload;
mod upload_helpers;
mod validation;
