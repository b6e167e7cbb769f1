//! `weft-check history.jsonl [--json]`: checks a history; exits 1 when it
//! breaks a rule, 2 when it cannot be read. `--kv`: the history is a table's
//! get/put/CAS history (weft-kv-history), checked for linearizability.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use weft_checker::{History, check};

#[derive(Parser)]
#[command(
    name = "weft-check",
    about = "Check a replicated-log history (JSON lines) for lost, phantom, duplicated, diverging or reordered records"
)]
struct Args {
    history: PathBuf,
    /// Print the whole report as JSON.
    #[arg(long)]
    json: bool,
    /// Violations printed per rule (text output).
    #[arg(long, default_value_t = 10)]
    show: usize,
    /// Also fail unless at least this many produces were acknowledged: a
    /// history where nothing succeeded passes every rule and proves nothing.
    #[arg(long, default_value_t = 0)]
    min_acked: usize,
    /// The history is a key-value one (weft-kv-history): check it for
    /// linearizability; --min-acked then counts acknowledged writes.
    #[arg(long)]
    kv: bool,
    /// Search steps per key before a key is called too big (--kv; never a pass).
    #[arg(long, default_value_t = 5_000_000)]
    max_steps: u64,
}

fn check_kv(args: &Args) -> ExitCode {
    use weft_checker::register::{KvHistory, Limits, Verdict, check_kv_with};
    let h = match KvHistory::load(&args.history) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("weft-check: {}: {e}", args.history.display());
            return ExitCode::from(2);
        }
    };
    let r = check_kv_with(
        &h,
        Limits {
            max_steps: args.max_steps,
        },
    );
    let enough = r.stats.writes_ok >= args.min_acked;
    if args.json {
        match serde_json::to_string_pretty(&r) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("weft-check: {e}"),
        }
    } else {
        let s = &r.stats;
        println!(
            "{} operations on {} keys: {} ok ({} reads, {} writes), {} compares failed, {} refused, {} unknown",
            s.ops, s.keys, s.ok, s.gets, s.writes_ok, s.failed, s.refused, s.unknown
        );
        for m in r.malformed.iter().take(args.show) {
            println!("MALFORMED {m}");
        }
        for v in r.revisions.iter().take(args.show) {
            println!("VIOLATION {}: {} (lines {:?})", v.rule, v.message, v.lines);
        }
        for k in &r.keys {
            match &k.verdict {
                Verdict::Linearizable => println!(
                    "key {:?}: linearizable ({} operations, {} steps)",
                    k.key, k.ops, k.steps
                ),
                Verdict::TooBig { steps } => println!(
                    "key {:?}: TOO BIG to decide in {steps} steps ({} operations)",
                    k.key, k.ops
                ),
                Verdict::NotLinearizable {
                    linearized,
                    state,
                    stuck,
                } => {
                    println!(
                        "VIOLATION key {:?}: not linearizable ({} operations)",
                        k.key, k.ops
                    );
                    let tail = &linearized[linearized.len().saturating_sub(args.show)..];
                    println!(
                        "  longest linearizable prefix: {} operations, ending with lines {tail:?}; then the state is {state}",
                        linearized.len()
                    );
                    for l in stuck.iter().take(args.show) {
                        println!(
                            "    line {l}: {}",
                            serde_json::to_string(&h.events[l - 1]).unwrap_or_default()
                        );
                    }
                }
            }
        }
    }
    if !enough {
        eprintln!(
            "weft-check: only {} writes acknowledged, fewer than --min-acked {}",
            r.stats.writes_ok, args.min_acked
        );
    }
    if !args.json {
        println!(
            "{}",
            if r.ok() && enough {
                "OK: linearizable"
            } else {
                "FAIL"
            }
        );
    }
    if r.ok() && enough {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.kv {
        return check_kv(&args);
    }
    let history = match History::load(&args.history) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("weft-check: {}: {e}", args.history.display());
            return ExitCode::from(2);
        }
    };
    let report = check(&history);
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("weft-check: {e}"),
        }
    } else {
        let s = &report.stats;
        println!(
            "{} events: {} produces ({} ok, {} failed, {} unknown of which {} read back), {} reads ({} final, {} complete partition reads)",
            s.events,
            s.invoked,
            s.acked,
            s.failed,
            s.info,
            s.info_seen,
            s.reads,
            s.final_reads,
            s.complete_final_reads
        );
        for (rule, n) in report.counts() {
            println!("VIOLATION {rule}: {n}");
            for v in report
                .violations
                .iter()
                .filter(|v| v.rule == rule)
                .take(args.show)
            {
                println!("  {}", v.message);
                for e in &v.evidence {
                    println!(
                        "    line {}: {}",
                        e.line,
                        serde_json::to_string(&e.event).unwrap_or_default()
                    );
                }
            }
        }
    }
    let enough = report.stats.acked >= args.min_acked;
    if !enough {
        eprintln!(
            "weft-check: only {} produces acknowledged, fewer than --min-acked {}",
            report.stats.acked, args.min_acked
        );
    }
    if !args.json {
        println!(
            "{}",
            if report.ok() && enough {
                "OK: no violations"
            } else {
                "FAIL"
            }
        );
    }
    if report.ok() && enough {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
