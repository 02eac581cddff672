//! `spotlight-fuzz TARGET SECONDS [SEED]`: fuzzes one target (or `all`, each for SECONDS) on the
//! committed corpus and prints one JSON line per target (executions, crashes, where the crashing
//! inputs went). Exit status 1 if anything crashed.

use spotlight_fuzz::{run, CappedAlloc, Options, TARGETS};

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

fn usage() -> ! {
    let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
    eprintln!(
        "usage: spotlight-fuzz TARGET SECONDS [SEED]   (TARGET: all, {})",
        names.join(", ")
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(name), Some(seconds)) = (args.first(), args.get(1)) else {
        usage()
    };
    let Ok(seconds) = seconds.parse::<f64>() else {
        usage()
    };
    let seed = match args.get(2).map(|s| s.parse::<u64>()) {
        None => 0,
        Some(Ok(s)) => s,
        Some(Err(_)) => usage(),
    };
    let targets: Vec<_> = if name == "all" {
        TARGETS.iter().collect()
    } else {
        match spotlight_fuzz::targets::target(name) {
            Some(t) => vec![t],
            None => usage(),
        }
    };
    let mut crashed = false;
    for t in targets {
        let mut opts = Options::committed(seconds, seed);
        if let Ok(dir) = std::env::var("SPOTLIGHT_FUZZ_CRASHES") {
            opts.crashes = dir.into();
        }
        let stats = run(t, &opts);
        crashed |= stats.crashes > 0;
        println!(
            "{}",
            serde_json::to_string(&stats).expect("stats serialise")
        );
    }
    std::process::exit(i32::from(crashed))
}
