//! Integration tests: the real application on a random port, real git repositories served by
//! `git daemon`, the real promtool.

mod helpers;
mod monitoring;

mod alerts;
mod clone;
mod dashboards;
mod lifecycle;
mod ops;
mod prometheus;
mod stream;
mod traces;
mod validation;
