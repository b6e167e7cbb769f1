//! A dice roller: `roll {sides}`, `roll_times {sides, how_many}` and
//! `guess {sides, guess}`, with validation errors for bad input. The service
//! itself is in `common/dice_service.rs`.
//!
//! ```text
//! cargo run -p weft-service --example dice_server -- [ADDR...]
//! cargo run -p weft-service --example dice_server -- tcp://127.0.0.1:7410 udp://127.0.0.1:7410 unix:///tmp/dice.sock
//! ```
//!
//! Set DICE_SEED=N for reproducible rolls.

#[path = "common/dice_service.rs"]
mod dice_service;
#[path = "common/serve.rs"]
mod serve;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addrs = serve::addresses_from_args()?;
    let seed = match std::env::var("DICE_SEED") {
        Ok(s) => Some(s.parse::<u64>().map_err(|e| format!("DICE_SEED={s:?}: {e}"))?),
        Err(_) => None,
    };
    serve::serve(dice_service::dice_service(seed)?, &addrs).await
}
