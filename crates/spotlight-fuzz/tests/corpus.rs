//! Every fuzz target on the committed corpus and regressions, then about four seconds of seeded
//! mutations each (about 25 s in all): no panic, no allocation over the cap, no hang.
//! `scripts/fuzz.sh` runs the same loop for longer.

use spotlight_fuzz::{run, CappedAlloc, Options, TARGETS};

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

#[test]
fn every_target_survives_its_corpus_and_mutations() {
    let mut report = Vec::new();
    let mut failed = Vec::new();
    for (i, t) in TARGETS.iter().enumerate() {
        let stats = run(t, &Options::committed(4.0, 1000 + i as u64));
        assert!(stats.seeds > 0, "{}: no seed corpus", t.name);
        report.push(format!(
            "{}: {} execs, {} answers, {} crashes",
            t.name, stats.execs, stats.answers, stats.crashes
        ));
        failed.extend(stats.crash_files);
    }
    eprintln!("{}", report.join("\n"));
    assert!(failed.is_empty(), "crashes:\n{}", failed.join("\n"));
}
