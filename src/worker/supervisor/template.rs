//! What the supervisor installs for each worker: a template each process of it runs, a value
//! copied into the process or a factory called there.

use std::marker::PhantomData;

use crate::worker::job::{Job, Spawn};
use crate::worker::{Worker, child};

/// An installed worker, whatever its type: what each fork runs.
pub(crate) trait Template: 'static {
    /// In the forked child: becomes the worker and exits with its code.
    fn run(&mut self, job: Job) -> i32;
}

/// A worker installed as a value: each process runs its own copy of it.
pub(super) struct Value<W>(pub(super) Option<W>);

impl<W: Worker> Template for Value<W> {
    fn run(&mut self, job: Job) -> i32 {
        match self.0.take() {
            Some(worker) => child::serve(|_| worker, job),
            None => child::exit::SETUP,
        }
    }
}

/// A worker built by a factory in each new process.
pub(super) struct Factory<F, W>(pub(super) F, pub(super) PhantomData<fn() -> W>);

impl<W: Worker, F: FnMut(&Spawn) -> W + 'static> Template for Factory<F, W> {
    fn run(&mut self, job: Job) -> i32 {
        child::serve(&mut self.0, job)
    }
}

/// What stays in a forked child's copy of the supervisor where its template was taken out.
pub(super) struct Gone;

impl Template for Gone {
    fn run(&mut self, _: Job) -> i32 {
        child::exit::SETUP
    }
}
