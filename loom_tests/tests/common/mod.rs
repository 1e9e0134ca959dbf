//! The model runner every loom test uses.

/// Runs `f` under loom with a preemption bound of 2 unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise: bound 2 finds the known classes of
/// ordering bugs in these queues (Lê et al. 2013 found theirs at 2) while
/// keeping each model inside CI's time.
pub fn model<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    builder.check(f);
}
