//! `weft-check history.jsonl [--json]`: checks a history; exits 1 when it
//! breaks a rule, 2 when it cannot be read.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use weft_checker::{check, History};

#[derive(Parser)]
#[command(name = "weft-check", about = "Check a replicated-log history (JSON lines) for lost, phantom, duplicated, diverging or reordered records")]
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
}

fn main() -> ExitCode {
    let args = Args::parse();
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
            s.events, s.invoked, s.acked, s.failed, s.info, s.info_seen, s.reads, s.final_reads, s.complete_final_reads
        );
        for (rule, n) in report.counts() {
            println!("VIOLATION {rule}: {n}");
            for v in report.violations.iter().filter(|v| v.rule == rule).take(args.show) {
                println!("  {}", v.message);
                for e in &v.evidence {
                    println!("    line {}: {}", e.line, serde_json::to_string(&e.event).unwrap_or_default());
                }
            }
        }
    }
    let enough = report.stats.acked >= args.min_acked;
    if !enough {
        eprintln!("weft-check: only {} produces acknowledged, fewer than --min-acked {}", report.stats.acked, args.min_acked);
    }
    if !args.json {
        println!("{}", if report.ok() && enough { "OK: no violations" } else { "FAIL" });
    }
    if report.ok() && enough { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
