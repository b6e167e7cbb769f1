//! A client for `dice_server`.
//!
//! ```text
//! cargo run -p weft-service --example dice_client -- [ADDR] [COMMAND]
//!   COMMAND: roll SIDES | roll_times SIDES HOW_MANY | guess SIDES GUESS
//! ```
//!
//! Without a command it plays a short demo, including two requests the
//! server refuses, to show how a typed validation error reaches the client.

#[path = "common/dice_service.rs"]
mod dice_service;

use dice_service::{Guess, GuessResult, Roll, RollTimes};
use weft_net::{Client, ClientConfig, ClientError, Endpoint};
use weft_wire::ErrorCode;

enum Command {
    Roll(u32),
    RollTimes(u32, u32),
    Guess(u32, u32),
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let addr: Endpoint = if args.first().is_some_and(|a| a.contains("://")) {
        args.remove(0).parse()?
    } else {
        "tcp://127.0.0.1:7410".parse()?
    };
    let num = |i: usize| -> Result<u32, Box<dyn std::error::Error>> {
        let s = args.get(i).ok_or("missing argument: roll SIDES | roll_times SIDES HOW_MANY | guess SIDES GUESS")?;
        Ok(s.parse::<u32>().map_err(|e| format!("{s:?}: {e}"))?)
    };
    // Parse the command before connecting, so a typo costs no round trip.
    let command = match args.first().map(String::as_str) {
        Some("roll") => Some(Command::Roll(num(1)?)),
        Some("roll_times") => Some(Command::RollTimes(num(1)?, num(2)?)),
        Some("guess") => Some(Command::Guess(num(1)?, num(2)?)),
        Some(other) => return Err(format!("unknown command {other:?}: roll, roll_times or guess").into()),
        None => None,
    };

    let config = ClientConfig { client_name: "dice_client".into(), ..ClientConfig::default() };
    let client = Client::connect(addr.clone(), config).await?;
    println!("connected to {addr}");
    match command {
        Some(Command::Roll(sides)) => roll(&client, sides).await?,
        Some(Command::RollTimes(sides, how_many)) => roll_times(&client, sides, how_many).await?,
        Some(Command::Guess(sides, g)) => guess(&client, sides, g).await?,
        None => {
            roll(&client, 6).await?;
            roll(&client, 20).await?;
            roll_times(&client, 6, 10).await?;
            guess(&client, 6, 3).await?;
            // Two requests the server refuses with a validation error.
            roll(&client, 0).await?;
            roll_times(&client, 6, dice_service::MAX_ROLLS + 1).await?;
        }
    }
    client.close();
    Ok(())
}

/// Print a server-side refusal and carry on; anything else is fatal.
fn report(what: &str, e: ClientError) -> Result<(), ClientError> {
    match e {
        ClientError::Remote(body) if body.code == ErrorCode::Validation => {
            let details = body.details.map(|d| d.to_string()).unwrap_or_default();
            println!("{what} -> refused ({}): {} {details}", body.code, body.message);
            Ok(())
        }
        e => Err(e),
    }
}

async fn roll(client: &Client, sides: u32) -> Result<(), ClientError> {
    let what = format!("roll {{sides: {sides}}}");
    match client.call::<_, u32>("roll", &Roll { sides }).await {
        Ok(n) => {
            println!("{what} -> {n}");
            Ok(())
        }
        Err(e) => report(&what, e),
    }
}

async fn roll_times(client: &Client, sides: u32, how_many: u32) -> Result<(), ClientError> {
    let what = format!("roll_times {{sides: {sides}, how_many: {how_many}}}");
    match client.call::<_, Vec<u32>>("roll_times", &RollTimes { sides, how_many }).await {
        Ok(v) => {
            println!("{what} -> {v:?} (sum {})", v.iter().map(|&n| u64::from(n)).sum::<u64>());
            Ok(())
        }
        Err(e) => report(&what, e),
    }
}

async fn guess(client: &Client, sides: u32, guess: u32) -> Result<(), ClientError> {
    let what = format!("guess {{sides: {sides}, guess: {guess}}}");
    match client.call::<_, GuessResult>("guess", &Guess { sides, guess }).await {
        Ok(r) => {
            println!("{what} -> rolled {}, {}", r.rolled, if r.correct { "correct!" } else { "wrong" });
            Ok(())
        }
        Err(e) => report(&what, e),
    }
}
