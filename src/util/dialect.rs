//! [`Dialect`]: which systemd release a run's messages and progress reports follow. The
//! seed personality speaks v219's, the `systemd-pull` personality v252's; the importers
//! and their jobs are given it and pick their log lines by it.

/// A systemd release whose worker messages we reproduce.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Dialect {
    #[default]
    V219,
    V252,
}

impl Dialect {
    /// Whether `X_IMPORT_PROGRESS=` carries a `%`: v219's importd takes a bare `NN`,
    /// v240 and later only `NN%` (so a v252 worker sends `NN%`, see modern-systemd.md
    /// §2.3: systemd's own v252 worker sent `NN` and was ignored).
    pub fn progress_percent_sign(self) -> bool {
        self == Dialect::V252
    }
}
